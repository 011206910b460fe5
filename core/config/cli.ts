/**
 * The command line of every script in scripts/: `--name value`, `--name=value`, switches
 * (`--quick`, `--no-jobs`), repeatable options and `--help`, with errors that name the flag (exit
 * code 1). Jobs that read a config file (generate, train, sample) go through {@link parseJobArgs},
 * which adds `--config <file>`, `--comment <text>` and `--config.x.y=v` overrides (applied by
 * `loadJobConfig` of ./overrides.ts).
 *
 * Option keys follow commander's rule: dashes become camelCase (`--world-size` -> `worldSize`),
 * underscores stay (`--batch_size` -> `batch_size`), `--no-x` sets `x` to false. Values stay text;
 * {@link intArg} and {@link numberArg} check numbers with messages that name the flag.
 *
 * Built on commander (the npm stand-in for cliffy that the design card names): it parses, checks
 * required options, suggests near misses and formats `--help`; this module fixes one spec shape
 * for every script and turns commander's errors into {@link CliError}s that name the script.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const spec = {
 *   name: "demo",
 *   options: [
 *     { flags: "--steps <n>", description: "training steps", default: "100" },
 *     { flags: "--quick", description: "the CI size", default: false },
 *     { flags: "--prompt <text>", description: "a caption", repeatable: true },
 *   ],
 *   exitOnError: false,
 * };
 * const o = parseCommand(["--steps=4", "--quick", "--prompt", "a", "--prompt", "b"], spec);
 * assert.deepEqual(o, { steps: "4", quick: true, prompt: ["a", "b"] });
 * assert.equal(intArg(o.steps, "--steps", { min: 1 }), 4);
 * assert.throws(() => parseCommand(["--step", "4"], spec), /unknown option '--step'.*--steps/);
 * ```
 *
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import { type ConfigOverride, describeRange, inRange, type NumberRange } from "./overrides.ts";

/** One option of a command. */
export interface CliOption {
  /**
   * `"--name <value>"` for an option with a value, `"--name"` for a switch (true when given),
   * `"--no-name"` for a switch that sets `name` to false.
   */
  flags: string;
  description: string;
  /** The value when the option is absent. */
  default?: string | boolean;
  /** The command refuses to run without it. */
  required?: boolean;
  /** May be given several times; the value is the list of all (empty when absent). */
  repeatable?: boolean;
}

/** What a command line looks like. */
export interface CommandSpec {
  /** Program name in help and errors. */
  name: string;
  /** The usage line(s) of `--help`; default `<name> [options]`. */
  usage?: string;
  description?: string;
  options?: readonly CliOption[];
  /** Text printed after the options in `--help`. */
  helpAfter?: string;
  /** Exit the process on bad arguments (1) or `--help` (0) (default true); false throws instead. */
  exitOnError?: boolean;
}

/** A parsed option's value. */
export type CliValue = string | boolean | string[] | undefined;
/** Parsed options by key. */
export type CliValues = Record<string, CliValue>;

/** A bad command line (or, with `exitCode` 0, `--help`: the message is the help text). */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * Refuse a command line: with `exitOnError` (the default) print `<name>: <message>` and exit 1,
 * otherwise throw it as a {@link CliError}. For the checks a script makes after parsing.
 */
export function usageError(spec: CommandSpec, message: string): never {
  const text = `${spec.name}: ${message}`;
  if (spec.exitOnError ?? true) {
    console.error(`${text}; see --help`);
    Deno.exit(1);
  }
  throw new CliError(text, 1);
}

function showHelp(spec: CommandSpec, text: string): never {
  if (spec.exitOnError ?? true) {
    console.log(text);
    Deno.exit(0);
  }
  throw new CliError(text, 0);
}

/** The commander command of `spec`, writing its help and errors into `sink` instead of stdout. */
function commandOf(spec: CommandSpec, sink: { out: string }): Command {
  const cmd = new Command(spec.name)
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => (sink.out += text),
      writeErr: () => {}, // errors are reported once, by usageError
    })
    .configureHelp({ commandUsage: () => spec.usage ?? `${spec.name} [options]`, helpWidth: 100 });
  if (spec.description) cmd.description(spec.description);
  for (const o of spec.options ?? []) {
    const option = new Option(o.flags, o.description);
    if (o.repeatable) {
      option.argParser((v: string, prev: string[]) => [...prev, v]).default([]);
      option.description += " (repeatable)";
    } else if (o.default !== undefined && o.default !== "") option.default(o.default);
    if (o.default === "") option.default("");
    if (o.required) option.makeOptionMandatory();
    cmd.addOption(option);
  }
  if (spec.helpAfter) cmd.addHelpText("after", `\n${spec.helpAfter}`);
  return cmd;
}

/** The `--help` text of a command. */
export function formatHelp(spec: CommandSpec): string {
  return commandOf(spec, { out: "" }).helpInformation().trimEnd();
}

/** commander's error as one line, a missing value said the way the scripts' own checks say it. */
function commanderMessage(message: string): string {
  const text = message.replace(/^error: /, "").replace(/\s*\n\s*/g, " ");
  const missing = /^option '((--[\w-]+)[^']*)' argument missing$/.exec(text);
  return missing ? `${missing[2]} needs a value (${missing[1]})` : text;
}

/**
 * Parse a script's command line (`Deno.args`). Unknown options (with near misses suggested),
 * missing values, arguments that are no option and missing required options are errors that name
 * the flag (see {@link usageError}); `--help` / `-h` prints {@link formatHelp}'s text.
 */
export function parseCommand<T extends object = CliValues>(
  argv: readonly string[],
  spec: CommandSpec,
): T {
  const sink = { out: "" };
  const cmd = commandOf(spec, sink);
  try {
    cmd.parse([...argv], { from: "user" });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    if (e.exitCode === 0) showHelp(spec, sink.out.trimEnd());
    usageError(spec, commanderMessage(e.message));
  }
  return cmd.opts() as T;
}

/** `value` as an integer in `range`, or an error naming `flag`: "--steps must be an integer >= 1". */
export function intArg(value: unknown, flag: string, range: NumberRange = {}): number {
  const n = Number(value);
  if (value === "" || !Number.isInteger(n) || !inRange(n, range)) {
    const where = range.min === undefined && range.max === undefined
      ? ""
      : ` ${describeRange(range)}`;
    throw new Error(`${flag} must be an integer${where}, got ${JSON.stringify(String(value))}`);
  }
  return n;
}

/** `value` as a number in `range`, or an error naming `flag`: "--lr must be a number > 0". */
export function numberArg(value: unknown, flag: string, range: NumberRange = {}): number {
  const n = Number(value);
  if (value === "" || !inRange(n, range)) {
    const where = range.min === undefined && range.max === undefined
      ? "a finite number"
      : `a number ${describeRange(range)}`;
    throw new Error(`${flag} must be ${where}, got ${JSON.stringify(String(value))}`);
  }
  return n;
}

/** What a config job's command line looks like. */
export interface JobSpec {
  /** Program name in help and errors. */
  name: string;
  description?: string;
  /** The usage line of `--help`; default `deno task <name> [options] [--config.<key>=<value> ...]`. */
  usage?: string;
  /** Config file used when `--config` is absent; without it `--config` is required. */
  defaultConfig?: string;
  /** Options beyond `--config` and `--comment`. */
  options?: readonly CliOption[];
  /** Exit the process on bad arguments or `--help` (default true); false throws instead. */
  exitOnError?: boolean;
}

/** A parsed job command line. */
export interface JobArgs {
  /** The config file. */
  config: string;
  /** A note on the run (`--comment`). */
  comment?: string;
  /** The job's other options by key (`eval_folder`, `workdir`, `worldSize`, ...). */
  options: CliValues;
  /** `--config.x.y=v` overrides in command-line order. */
  overrides: ConfigOverride[];
}

/** Pull `--config.key=value` and `--config.key value` out of argv; the rest is for the options. */
export function splitConfigOverrides(
  argv: readonly string[],
): { rest: string[]; overrides: ConfigOverride[] } {
  const rest: string[] = [];
  const overrides: ConfigOverride[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (!a.startsWith("--config.")) {
      rest.push(a);
      continue;
    }
    const body = a.slice("--config.".length);
    const eq = body.indexOf("=");
    if (eq >= 0) {
      overrides.push({ key: body.slice(0, eq), value: body.slice(eq + 1) });
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
      overrides.push({ key: body, value: argv[++i] });
    } else {
      // A bare `--config.flag` switches a boolean on, as absl's boolean flags do; for any other
      // setting applyOverrides reports the missing value.
      overrides.push({ key: body, value: "", bare: true });
    }
  }
  return { rest, overrides };
}

const CONFIG_HELP =
  "Config overrides:\n  --config.<group>.<key>=<value>  set one setting of the config file";

/**
 * Parse a config job's command line: `--config <file>`, `--comment <text>`, the job's own options,
 * and `--config.x.y=v` overrides (applied later by `loadJobConfig`).
 */
export function parseJobArgs(argv: readonly string[], spec: JobSpec): JobArgs {
  const { rest, overrides } = splitConfigOverrides(argv);
  const config: CliOption = {
    flags: "--config <file>",
    description: "config file exporting getConfig()",
  };
  if (spec.defaultConfig) config.default = spec.defaultConfig;
  else config.required = true;
  const values = parseCommand(rest, {
    name: spec.name,
    usage: spec.usage ?? `deno task ${spec.name} [options] [--config.<key>=<value> ...]`,
    description: spec.description,
    options: [
      config,
      { flags: "--comment <text>", description: "a note on this run, written to the log" },
      ...spec.options ?? [],
    ],
    helpAfter: CONFIG_HELP,
    exitOnError: spec.exitOnError,
  });
  const { config: file, comment, ...options } = values;
  return { config: file as string, comment: comment as string | undefined, options, overrides };
}
