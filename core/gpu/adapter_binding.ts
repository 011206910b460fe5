/**
 * One worker per GPU adapter. Deno's `navigator.gpu.requestAdapter()` cannot choose among several
 * GPUs, so each worker process is confined to one adapter through its environment, which Mesa's
 * Vulkan device-select layer reads (`VK_LAYER_MESA_device_select`, shipped in mesa-vulkan-drivers;
 * an implicit layer the Vulkan loader puts in front of every driver, NVIDIA's included):
 *
 * - `MESA_VK_DEVICE_SELECT=vid:did` (hex) makes the device with those PCI ids the first one;
 * - `DRI_PRIME=pci-dddd_bb_dd_f` does the same by PCI address (for two GPUs with the same ids);
 * - `MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1` hides every other device from the process.
 *
 * The layer silently falls back to its default device when nothing matches, so every worker
 * checks the adapter it got against the one it was bound to ({@link checkBoundAdapter}) and
 * logs it. Adapters are listed with `MESA_VK_DEVICE_SELECT=list`, which makes the layer print the
 * devices and exit the process: {@link listAdapters} runs that in a short child process.
 *
 * A `devices` entry names an adapter of that list: its index (`0`), its PCI bus id
 * (`0000:01:00.0`, `01:00.0` or `pci-0000_01_00_0`) or its `vendor:device` ids (`10de:2684`).
 * Index k is the k-th adapter by PCI bus id, software (CPU) adapters last — the order of
 * `nvidia-smi` and of CUDA with `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
 *
 * Run `deno run -A core/gpu/adapter_binding.ts` to print the list.
 *
 * @example
 * ```ts
 * const listing = await listAdapters();
 * const opts = { shareAdapter: true, what: "--devices" };
 * const plan = planBindings(["0", "0"], listing.adapters, opts);
 * // start worker k with env: plan[k].env; in the worker, after Gpu.open():
 * // console.log(checkBoundAdapter(gpu.info));
 * ```
 *
 * @module
 */

/** One adapter as the device-select layer lists it. */
export interface AdapterEntry {
  /** Position in {@link sortAdapters}' order: what a numeric `devices` entry means. */
  index: number;
  vendorId: number;
  deviceId: number;
  name: string;
  /** "discrete GPU", "integrated GPU", "virtual GPU", "CPU" or "other". */
  type: string;
  /** "dddd:bb:dd.f", or null where the layer reports none (CPU adapters, no pci_bus_info). */
  pciBusId: string | null;
}

/** A `devices` entry, parsed. */
export type DeviceSpec =
  | { kind: "index"; index: number }
  | { kind: "pci"; busId: string }
  | { kind: "ids"; vendorId: number; deviceId: number };

/** What a worker's process is bound to: the adapter and the environment that selects it. */
export interface WorkerBinding {
  worker: number;
  /** null: no binding, the default adapter (only where adapters cannot be listed). */
  adapter: AdapterEntry | null;
  /** Variables to set in the worker's environment. */
  env: Record<string, string>;
  /** How it was selected, for logs ("MESA_VK_DEVICE_SELECT=10005:0", "default adapter"). */
  how: string;
}

/** The variable through which a bound worker learns which adapter it must have got. */
export const EXPECTED_ADAPTER_ENV = "REFLOW_ADAPTER";

const hex = (n: number) => n.toString(16);

/** "dddd:bb:dd.f" in lower case, from any of the accepted bus-id spellings; null if not one. */
export function normalizePciBusId(text: string): string | null {
  const t = text.trim().toLowerCase();
  const tag = /^pci-([0-9a-f]{4})_([0-9a-f]{2})_([0-9a-f]{2})_([0-7])$/.exec(t);
  if (tag) return `${tag[1]}:${tag[2]}:${tag[3]}.${tag[4]}`;
  const m = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/.exec(t);
  if (!m) return null;
  const dom = parseInt(m[1] ?? "0", 16).toString(16).padStart(4, "0");
  const pad2 = (s: string) => parseInt(s, 16).toString(16).padStart(2, "0");
  return `${dom}:${pad2(m[2])}:${pad2(m[3])}.${m[4]}`;
}

/** The DRI_PRIME tag of a bus id ("0000:01:00.0" -> "pci-0000_01_00_0"). */
export function driPrimeTag(busId: string): string {
  return "pci-" + busId.replace(/[:.]/g, "_");
}

/** Parses one `devices` entry; `where` names it in errors (e.g. "--devices[1]"). */
export function parseDeviceSpec(entry: string | number, where: string): DeviceSpec {
  if (typeof entry === "number") {
    if (!Number.isInteger(entry) || entry < 0) {
      throw new Error(`${where} = ${entry}: an adapter index must be an integer >= 0`);
    }
    return { kind: "index", index: entry };
  }
  const t = String(entry).trim();
  if (/^\d+$/.test(t)) return { kind: "index", index: Number(t) };
  const bus = normalizePciBusId(t);
  if (bus) return { kind: "pci", busId: bus };
  const ids = /^(?:0x)?([0-9a-f]{1,8}):(?:0x)?([0-9a-f]{1,8})$/i.exec(t);
  if (ids) return { kind: "ids", vendorId: parseInt(ids[1], 16), deviceId: parseInt(ids[2], 16) };
  throw new Error(
    `${where} = ${JSON.stringify(entry)}: not an adapter index (0), a PCI bus id (0000:01:00.0) ` +
      `or vendor:device ids in hex (10de:2684)`,
  );
}

/** Splits a `--devices` flag value ("0,1" or "0000:01:00.0,0000:02:00.0") into entries. */
export function splitDevicesFlag(value: string): string[] {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length === 0) throw new Error(`--devices "${value}" lists no adapter`);
  return items;
}

/** Adapters in index order: PCI devices by bus id, then those without one, CPU adapters last. */
export function sortAdapters(list: Omit<AdapterEntry, "index">[]): AdapterEntry[] {
  const rank = (a: Omit<AdapterEntry, "index">) => (a.type === "CPU" ? 2 : a.pciBusId ? 0 : 1);
  return list
    .map((a, i) => ({ a, i }))
    .sort((x, y) =>
      rank(x.a) - rank(y.a) ||
      (x.a.pciBusId && y.a.pciBusId ? (x.a.pciBusId < y.a.pciBusId ? -1 : 1) : 0) ||
      x.i - y.i
    )
    .map(({ a }, index) => ({ ...a, index }));
}

/**
 * Parses what `MESA_VK_DEVICE_SELECT=list` prints (`selectable devices:` then one
 * `  GPU n: vid:did "name" type [dddd:bb:dd.f]` line per device); null when the header is missing
 * (the layer is not active).
 */
export function parseDeviceSelectList(text: string): AdapterEntry[] | null {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.trim() === "selectable devices:");
  if (start < 0) return null;
  const found: Omit<AdapterEntry, "index">[] = [];
  const re =
    /^\s*GPU (\d+): ([0-9a-f]+):([0-9a-f]+) "(.*)" (discrete GPU|integrated GPU|virtual GPU|CPU|other)(?: ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]))?\s*$/i;
  for (const line of lines.slice(start + 1)) {
    const m = re.exec(line);
    if (!m) continue;
    const type = m[5];
    found.push({
      vendorId: parseInt(m[2], 16),
      deviceId: parseInt(m[3], 16),
      name: m[4],
      type,
      // A CPU adapter reports a zero address when other devices make the layer print one.
      pciBusId: type === "CPU" || !m[6] ? null : m[6].toLowerCase(),
    });
  }
  return sortAdapters(found);
}

/** The adapters of this machine, or why they cannot be listed. */
export interface AdapterListing {
  adapters: AdapterEntry[] | null;
  /** Why `adapters` is null (the layer missing or disabled...). */
  reason: string;
}

let cached: Promise<AdapterListing> | null = null;

/**
 * Lists the adapters through the device-select layer, in a child process (the layer exits the
 * process it lists in). The result is cached for the process.
 */
export function listAdapters(): Promise<AdapterListing> {
  cached ??= runListing();
  return cached;
}

async function runListing(): Promise<AdapterListing> {
  if (Deno.env.get("NODEVICE_SELECT")) {
    return {
      adapters: null,
      reason: "NODEVICE_SELECT is set, which disables Mesa's device-select layer",
    };
  }
  const env = Deno.env.toObject();
  for (
    const k of ["DRI_PRIME", "MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE", EXPECTED_ADAPTER_ENV]
  ) {
    delete env[k];
  }
  env.MESA_VK_DEVICE_SELECT = "list";
  // Exit code 7 means requestAdapter returned: no layer intercepted device enumeration.
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", "await navigator.gpu?.requestAdapter(); Deno.exit(7);"],
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  let out: Deno.CommandOutput;
  try {
    out = await cmd.output();
  } catch (e) {
    return { adapters: null, reason: `cannot start ${Deno.execPath()}: ${(e as Error).message}` };
  }
  const text = new TextDecoder().decode(out.stderr);
  const adapters = parseDeviceSelectList(text);
  if (!adapters) {
    return {
      adapters: null,
      reason: "Mesa's Vulkan device-select layer is not active (install mesa-vulkan-drivers, " +
        "which ships it; it is what confines a worker to one GPU)",
    };
  }
  if (adapters.length === 0) return { adapters: null, reason: "the layer lists no Vulkan device" };
  return { adapters, reason: "" };
}

/** "llvmpipe (LLVM 15.0.6, 256 bits) [10005:0, CPU]" */
export function describeAdapter(a: AdapterEntry): string {
  return `${a.name} [${hex(a.vendorId)}:${hex(a.deviceId)}, ${a.type}` +
    (a.pciBusId ? `, ${a.pciBusId}` : "") + "]";
}

/** The adapter a spec names; errors name the entry and list the adapters. */
export function resolveDevice(
  spec: DeviceSpec,
  adapters: AdapterEntry[],
  where: string,
): AdapterEntry {
  const list = () => adapters.map((a) => `  ${a.index}: ${describeAdapter(a)}`).join("\n");
  let hits: AdapterEntry[];
  let what: string;
  if (spec.kind === "index") {
    hits = adapters.filter((a) => a.index === spec.index);
    what = `adapter index ${spec.index}`;
  } else if (spec.kind === "pci") {
    hits = adapters.filter((a) => a.pciBusId === spec.busId);
    what = `PCI bus id ${spec.busId}`;
  } else {
    hits = adapters.filter((a) => a.vendorId === spec.vendorId && a.deviceId === spec.deviceId);
    what = `vendor:device ${hex(spec.vendorId)}:${hex(spec.deviceId)}`;
    if (hits.length > 1) {
      throw new Error(
        `${where}: ${hits.length} adapters have ${what}; name them by PCI bus id or index:\n` +
          list(),
      );
    }
  }
  if (hits.length === 0) {
    throw new Error(`${where}: no adapter with ${what} on this machine. Adapters:\n${list()}`);
  }
  return hits[0];
}

/**
 * The environment that confines a process to `adapter` (see the module notes). The vendor:device
 * selection is used where those ids are unique on the machine; otherwise the PCI address.
 * `DRI_PRIME` is always set: an inherited `DRI_PRIME=1` would make the layer pick another GPU.
 */
export function bindingEnv(adapter: AdapterEntry, adapters: AdapterEntry[]): {
  env: Record<string, string>;
  how: string;
} {
  const twins = adapters.filter((a) =>
    a.vendorId === adapter.vendorId && a.deviceId === adapter.deviceId
  );
  const expected = JSON.stringify({
    vendorId: adapter.vendorId,
    deviceId: adapter.deviceId,
    name: adapter.name,
    pciBusId: adapter.pciBusId,
    index: adapter.index,
  });
  const base = {
    MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
    [EXPECTED_ADAPTER_ENV]: expected,
  };
  if (twins.length === 1) {
    const sel = `${hex(adapter.vendorId)}:${hex(adapter.deviceId)}`;
    return {
      env: { ...base, MESA_VK_DEVICE_SELECT: sel, DRI_PRIME: "0" },
      how: `MESA_VK_DEVICE_SELECT=${sel}`,
    };
  }
  if (!adapter.pciBusId) {
    throw new Error(
      `adapters ${twins.map((a) => a.index).join(", ")} share the ids ` +
        `${hex(adapter.vendorId)}:${hex(adapter.deviceId)} and the device-select layer reports ` +
        `no PCI address for them: they cannot be told apart`,
    );
  }
  const tag = driPrimeTag(adapter.pciBusId);
  // An empty selection matches nothing, so the layer goes on to DRI_PRIME.
  return { env: { ...base, MESA_VK_DEVICE_SELECT: "", DRI_PRIME: tag }, how: `DRI_PRIME=${tag}` };
}

/** Options of {@link planBindings}. */
export interface PlanOptions {
  /** Allow several workers on one adapter (each with its own device). */
  shareAdapter: boolean;
  /** What the entries came from, for errors ("config.devices", "--devices"). */
  what: string;
}

/**
 * One binding per worker: worker k gets `devices[k]`. Two workers on one adapter are refused
 * unless `shareAdapter`. Without an adapter list (`adapters` null: the layer is missing), only
 * workers that all ask for adapter 0 can run, unbound, on the default adapter — and more than
 * one of them only with `shareAdapter`.
 */
export function planBindings(
  devices: readonly (string | number)[],
  adapters: AdapterEntry[] | null,
  opts: PlanOptions,
  reason = "the adapters cannot be listed",
): WorkerBinding[] {
  if (devices.length === 0) throw new Error(`${opts.what} lists no adapter`);
  const specs = devices.map((d, k) => parseDeviceSpec(d, `${opts.what}[${k}]`));
  if (!adapters) {
    const allZero = specs.every((s) => s.kind === "index" && s.index === 0);
    if (!allZero) {
      throw new Error(
        `${opts.what} = ${JSON.stringify(devices)} names adapters, but ${reason}; ` +
          `without it every worker runs on the default adapter`,
      );
    }
    if (specs.length > 1 && !opts.shareAdapter) {
      throw new Error(
        `${opts.what}: ${specs.length} workers would share the default adapter (${reason}); ` +
          `pass --share_adapter to allow it`,
      );
    }
    return specs.map((_, worker) => ({ worker, adapter: null, env: {}, how: "default adapter" }));
  }
  const chosen = specs.map((s, k) => resolveDevice(s, adapters, `${opts.what}[${k}]`));
  if (!opts.shareAdapter) {
    const seen = new Map<number, number>();
    chosen.forEach((a, k) => {
      const first = seen.get(a.index);
      if (first !== undefined) {
        throw new Error(
          `${opts.what}: workers ${first} and ${k} would both run on adapter ${a.index} ` +
            `(${describeAdapter(a)}); give each worker its own adapter, or pass --share_adapter ` +
            `to let them share it`,
        );
      }
      seen.set(a.index, k);
    });
  }
  return chosen.map((a, worker) => ({ worker, adapter: a, ...bindingEnv(a, adapters) }));
}

/** {@link planBindings} over this machine's adapters ({@link listAdapters}). */
export async function planWorkerBindings(
  devices: readonly (string | number)[],
  opts: PlanOptions,
): Promise<WorkerBinding[]> {
  const l = await listAdapters();
  return planBindings(devices, l.adapters, opts, l.reason);
}

/**
 * The default `devices` for n workers: adapter k for worker k, or (with `shareAdapter` and fewer
 * adapters than workers) adapter k mod count; adapter 0 for all without a listing. More workers
 * than adapters without `shareAdapter` is an error that says so.
 */
export function defaultDevices(
  n: number,
  adapters: AdapterEntry[] | null,
  shareAdapter: boolean,
): number[] {
  // Without a listing there is only the default adapter (sharing it: see planBindings).
  if (!adapters) return Array.from({ length: n }, () => 0);
  if (n > adapters.length && !shareAdapter) {
    throw new Error(
      `${n} workers, but this machine has ${adapters.length} adapter(s) (` +
        adapters.map((a) => `${a.index}: ${describeAdapter(a)}`).join("; ") +
        `); use at most ${adapters.length} workers, or pass --share_adapter to let them share`,
    );
  }
  return Array.from({ length: n }, (_, k) => (shareAdapter ? k % adapters.length : k));
}

/** Sets a binding in this process's own environment (before the first `Gpu.open()`). */
export function bindThisProcess(b: WorkerBinding): void {
  for (const [k, v] of Object.entries(b.env)) Deno.env.set(k, v);
}

/** The adapter the environment says this process was bound to, if any. */
export function expectedAdapter(): Omit<AdapterEntry, "type"> | null {
  const text = Deno.env.get(EXPECTED_ADAPTER_ENV);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${EXPECTED_ADAPTER_ENV} is not valid JSON: ${text}`);
  }
}

/** What a WebGPU adapter says about itself (GPUAdapterInfo's fields used here). */
export interface AdapterInfoLike {
  vendor: string;
  device: string;
  description: string;
}

/**
 * Checks the adapter a process opened against its binding and returns a log line naming it
 * (description, vendor and device ids, how it was bound). Throws when the ids differ: the layer
 * then fell back to another device.
 */
export function checkBoundAdapter(
  info: AdapterInfoLike,
  expected: Omit<AdapterEntry, "type"> | null = expectedAdapter(),
): string {
  const vendor = Number(info.vendor);
  const device = Number(info.device);
  const ids = Number.isInteger(vendor) && Number.isInteger(device)
    ? `vendor 0x${hex(vendor)}, device 0x${hex(device)}`
    : `vendor ${info.vendor || "?"}, device ${info.device || "?"}`;
  const got = `${info.description || "unknown adapter"} (${ids})`;
  if (!expected) return `${got}, not bound (default adapter)`;
  if (vendor !== expected.vendorId || device !== expected.deviceId) {
    throw new Error(
      `adapter binding failed: bound to adapter ${expected.index} ${expected.name} ` +
        `[${hex(expected.vendorId)}:${hex(expected.deviceId)}] but WebGPU opened ${got}. ` +
        `Is Mesa's Vulkan device-select layer active (mesa-vulkan-drivers installed, ` +
        `NODEVICE_SELECT unset)?`,
    );
  }
  const sel = Deno.env.get("MESA_VK_DEVICE_SELECT");
  const how = sel ? `MESA_VK_DEVICE_SELECT=${sel}` : `DRI_PRIME=${Deno.env.get("DRI_PRIME")}`;
  return `${got}, bound to adapter ${expected.index}` +
    (expected.pciBusId ? ` at ${expected.pciBusId}` : "") + ` by ${how}`;
}

if (import.meta.main) {
  const l = await listAdapters();
  if (!l.adapters) {
    console.error(`adapters cannot be listed: ${l.reason}`);
    Deno.exit(1);
  }
  for (const a of l.adapters) console.log(`${a.index}: ${describeAdapter(a)}`);
}
