/**
 * The allowlist of the unpickler (`pickle.ts`): which Python globals a pickle may name, what calling
 * one gives (a side-effect-free builtin such as OrderedDict or bytes, a plain object of an allowed
 * class, or an inert {@link PyObject} record for the numpy and torch readers to interpret), and what
 * BUILD does to the result. Nothing here executes anything a pickle names.
 *
 * @module
 */

import { FormatError } from "./format_error.ts";
import {
  encodeString,
  iterableOf,
  PyGlobal,
  PyObject,
  sizeOf,
  toBytes,
  toMap,
} from "./pickle_values.ts";

/** Globals whose call is recorded as a PyObject for a consumer to interpret. */
const RECORDED_GLOBALS = new Set([
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2",
  "torch.Tensor",
  "torch.nn.parameter.Parameter",
  ...[
    "Float",
    "Half",
    "BFloat16",
    "Double",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
  ].map((t) => `torch.${t}Storage`),
  "numpy.ndarray",
  "numpy.dtype",
  "numpy.core.multiarray._reconstruct",
  "numpy._core.multiarray._reconstruct",
  "numpy.core.multiarray.scalar",
  "numpy._core.multiarray.scalar",
  "numpy.core.numeric._frombuffer",
  "numpy._core.numeric._frombuffer",
]);

/** Globals with a built-in, side-effect-free meaning. */
const BUILTIN_GLOBALS: Record<string, (args: readonly unknown[], at: string) => unknown> = {
  "collections.OrderedDict": (args, at) => toMap(args[0], at),
  "builtins.dict": (args, at) => toMap(args[0], at),
  "builtins.set": (args, at) => new Set(args.length ? iterableOf(args[0], at) : []),
  "builtins.frozenset": (args, at) => new Set(args.length ? iterableOf(args[0], at) : []),
  "builtins.bytes": (args, at) => toBytes(args, at),
  "builtins.bytearray": (args, at) => toBytes(args, at),
  "_codecs.encode": (args, at) => encodeString(args[0], args[1] ?? "utf-8", at),
  "builtins.object": (_args, at) => {
    throw new FormatError(
      `${at}: builtins.object may only appear as copyreg._reconstructor's base`,
    );
  },
};

/** Python 2 module names that protocol 0-2 pickles use (pickle's fix_imports). */
const PY2_MODULES: Record<string, string> = { "__builtin__": "builtins", "copy_reg": "copyreg" };

/** What an allowlisted call needs from the unpickler running it. */
export interface CallSite {
  /** Class names that may be instantiated as plain {@link PyObject}s (`UnpickleOptions`). */
  readonly allowClasses: readonly string[] | undefined;
  /** `source: byte N` of the opcode being run, for error messages. */
  at(): string;
  /** Throws a {@link FormatError} at the opcode being run. */
  fail(msg: string): never;
  /** Charges `n` copied elements to the work budget; a stream that copies more is refused. */
  spend(n: number, what: string): void;
}

function classAllowed(
  allowClasses: readonly string[] | undefined,
  full: string,
  name: string,
): boolean {
  const allow = allowClasses ?? [];
  return allow.includes(full) || allow.includes(name);
}

/** The global `module.name` (Python 2 module names mapped) when allowed, else undefined. */
export function resolveGlobal(
  module: string,
  name: string,
  allowClasses: readonly string[] | undefined,
): PyGlobal | undefined {
  const mod = PY2_MODULES[module] ?? module;
  const full = `${mod}.${name}`;
  if (
    RECORDED_GLOBALS.has(full) || Object.hasOwn(BUILTIN_GLOBALS, full) ||
    full === "copyreg._reconstructor" || classAllowed(allowClasses, full, name)
  ) {
    return new PyGlobal(mod, name);
  }
  return undefined;
}

/** Calls `fn` (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ): a builtin's value or an inert record. */
export function callGlobal(
  fn: unknown,
  args: readonly unknown[],
  kwargs: Map<unknown, unknown>,
  op: string,
  site: CallSite,
): unknown {
  if (!(fn instanceof PyGlobal)) site.fail(`${op} of something that is not an allowed global`);
  const full = fn.fullName;
  const builtin = BUILTIN_GLOBALS[full];
  if (builtin !== undefined && Object.hasOwn(BUILTIN_GLOBALS, full)) {
    site.spend(args.reduce<number>((s, a) => s + sizeOf(a), 0), full);
    return builtin(args, `${site.at()}: ${full}`);
  }
  if (full === "copyreg._reconstructor") {
    // copyreg._reconstructor(cls, object, None): a plain instance of cls, filled by BUILD.
    const [cls, base, baseState] = args;
    if (
      !(cls instanceof PyGlobal) || !classAllowed(site.allowClasses, cls.fullName, cls.name) ||
      !(base instanceof PyGlobal) || base.fullName !== "builtins.object" || baseState !== null
    ) {
      site.fail("copyreg._reconstructor only builds plain objects of allowed classes");
    }
    return new PyObject(cls.fullName, []);
  }
  return new PyObject(full, args, kwargs);
}

const MAP_ATTRIBUTES = new WeakMap<Map<unknown, unknown>, unknown>();

/** BUILD: gives `target` its state; false when `target` is not an object or a dict. */
export function buildObject(target: unknown, state: unknown): boolean {
  if (target instanceof PyObject) {
    target.state = state;
  } else if (target instanceof Map) {
    // An OrderedDict's instance attributes (torch keeps `_metadata` there): kept aside.
    MAP_ATTRIBUTES.set(target, state);
  } else {
    return false;
  }
  return true;
}

/** Instance attributes a pickle set on a dict (e.g. a torch state dict's `_metadata`). */
export function pickledAttributes(dict: Map<unknown, unknown>): unknown {
  return MAP_ATTRIBUTES.get(dict);
}
