/**
 * One worker per adapter: parsing the device-select layer's list, `devices` entries, the binding
 * plan on fake machines (several GPUs, identical GPUs, no layer), and one real worker bound to
 * this machine's adapter (and one bound to an adapter that is not there, which must fail).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  bindingEnv,
  checkBoundAdapter,
  defaultDevices,
  listAdapters,
  normalizePciBusId,
  parseDeviceSelectList,
  parseDeviceSpec,
  planBindings,
  splitDevicesFlag,
} from "../../core/gpu/adapter_binding.ts";

// What Mesa 22.3's layer prints (format "  GPU %d: %x:%x \"%s\" %s[ %04x:%02x:%02x.%x]").
const TWO_SAME_PLUS_CPU = `selectable devices:
  GPU 0: 10de:2684 "NVIDIA GeForce RTX 4090" discrete GPU 0000:41:00.0
  GPU 1: 10de:2684 "NVIDIA GeForce RTX 4090" discrete GPU 0000:01:00.0
  GPU 2: 10005:0 "llvmpipe (LLVM 15.0.6, 256 bits)" CPU 0000:00:00.0
`;
const MIXED = `some loader noise
selectable devices:
  GPU 0: 1002:744c "AMD Radeon RX 7900 XTX (RADV NAVI31)" discrete GPU 0000:03:00.0
  GPU 1: 10de:2335 "NVIDIA H200" discrete GPU 0000:1b:00.0
  GPU 2: 8086:a780 "Intel(R) Graphics (RPL-S)" integrated GPU 0000:00:02.0
`;
const LAVAPIPE_ONLY = `selectable devices:
  GPU 0: 10005:0 "llvmpipe (LLVM 15.0.6, 256 bits)" CPU
`;

Deno.test("adapter list: parsed from the layer's output, sorted by PCI bus id, CPU last", () => {
  const a = parseDeviceSelectList(TWO_SAME_PLUS_CPU)!;
  assert.deepEqual(a.map((x) => [x.index, x.pciBusId, x.type]), [
    [0, "0000:01:00.0", "discrete GPU"],
    [1, "0000:41:00.0", "discrete GPU"],
    [2, null, "CPU"],
  ]);
  assert.equal(a[2].vendorId, 0x10005);
  assert.equal(a[0].name, "NVIDIA GeForce RTX 4090");
  const m = parseDeviceSelectList(MIXED)!;
  assert.deepEqual(m.map((x) => x.name.split(" ")[0]), ["Intel(R)", "AMD", "NVIDIA"]);
  assert.equal(m[2].deviceId, 0x2335);
  assert.deepEqual(parseDeviceSelectList(LAVAPIPE_ONLY)!.map((x) => x.pciBusId), [null]);
  assert.equal(parseDeviceSelectList("no layer here\n"), null);
});

Deno.test("devices entries: index, PCI bus id in three spellings, vendor:device", () => {
  assert.deepEqual(parseDeviceSpec(2, "d"), { kind: "index", index: 2 });
  assert.deepEqual(parseDeviceSpec("3", "d"), { kind: "index", index: 3 });
  for (const s of ["0000:1b:00.0", "1b:00.0", "pci-0000_1b_00_0", "0000:1B:00.0"]) {
    assert.deepEqual(parseDeviceSpec(s, "d"), { kind: "pci", busId: "0000:1b:00.0" }, s);
  }
  assert.deepEqual(parseDeviceSpec("10de:2335", "d"), {
    kind: "ids",
    vendorId: 0x10de,
    deviceId: 0x2335,
  });
  assert.equal(normalizePciBusId("10de:2335"), null);
  assert.throws(() => parseDeviceSpec("gpu1", "--devices[1]"), /--devices\[1\] = "gpu1"/);
  assert.throws(() => parseDeviceSpec(-1, "config.devices[0]"), /config\.devices\[0\] = -1/);
  assert.deepEqual(splitDevicesFlag("0, 1,"), ["0", "1"]);
  assert.throws(() => splitDevicesFlag(" , "), /lists no adapter/);
});

Deno.test("binding plan: distinct GPUs by vendor:device, identical ones by PCI address", () => {
  const mixed = parseDeviceSelectList(MIXED)!;
  const plan = planBindings(["0000:1b:00.0", "1002:744c", 0], mixed, {
    shareAdapter: false,
    what: "--devices",
  });
  assert.deepEqual(plan.map((b) => b.env.MESA_VK_DEVICE_SELECT), [
    "10de:2335",
    "1002:744c",
    "8086:a780",
  ]);
  for (const b of plan) {
    assert.equal(b.env.MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE, "1");
    assert.equal(b.env.DRI_PRIME, "0", "an inherited DRI_PRIME=1 must not override the choice");
    assert.equal(JSON.parse(b.env.REFLOW_ADAPTER).deviceId, b.adapter!.deviceId);
  }
  const same = parseDeviceSelectList(TWO_SAME_PLUS_CPU)!;
  const p2 = planBindings(["1", "0"], same, { shareAdapter: false, what: "--devices" });
  assert.deepEqual(p2.map((b) => [b.env.DRI_PRIME, b.env.MESA_VK_DEVICE_SELECT]), [
    ["pci-0000_41_00_0", ""],
    ["pci-0000_01_00_0", ""],
  ]);
  assert.equal(p2[0].how, "DRI_PRIME=pci-0000_41_00_0");
  // Their shared ids cannot name one of them.
  assert.throws(
    () => planBindings(["10de:2684"], same, { shareAdapter: false, what: "--devices" }),
    /2 adapters have vendor:device 10de:2684; name them by PCI bus id/,
  );
  assert.equal(bindingEnv(same[2], same).env.MESA_VK_DEVICE_SELECT, "10005:0");
});

Deno.test("binding plan: two workers on one adapter only when asked", () => {
  const same = parseDeviceSelectList(TWO_SAME_PLUS_CPU)!;
  assert.throws(
    () => planBindings([0, "0000:01:00.0"], same, { shareAdapter: false, what: "config.devices" }),
    /config\.devices: workers 0 and 1 would both run on adapter 0 .*--share_adapter/,
  );
  const shared = planBindings([0, 0], same, { shareAdapter: true, what: "config.devices" });
  assert.deepEqual(shared.map((b) => b.adapter!.index), [0, 0]);
  assert.throws(
    () => planBindings([3], same, { shareAdapter: false, what: "--devices" }),
    /--devices\[0\]: no adapter with adapter index 3 on this machine. Adapters:\n {2}0: NVIDIA/,
  );
  // Default devices: one adapter each, wrapping around only when sharing is allowed.
  assert.deepEqual(defaultDevices(3, same, false), [0, 1, 2]);
  assert.deepEqual(defaultDevices(5, same, true), [0, 1, 2, 0, 1]);
  assert.throws(
    () => defaultDevices(4, same, false),
    /4 workers, but this machine has 3 adapter\(s\) \(0: NVIDIA .*--share_adapter/,
  );
});

Deno.test("binding plan without a listing: the default adapter, shared only when asked", () => {
  const one = planBindings([0], null, { shareAdapter: false, what: "config.devices" }, "no layer");
  assert.deepEqual(one, [{ worker: 0, adapter: null, env: {}, how: "default adapter" }]);
  assert.throws(
    () => planBindings([0, 0], null, { shareAdapter: false, what: "config.devices" }, "no layer"),
    /2 workers would share the default adapter \(no layer\)/,
  );
  assert.equal(planBindings([0, 0], null, { shareAdapter: true, what: "d" }).length, 2);
  assert.throws(
    () => planBindings([0, 1], null, { shareAdapter: true, what: "config.devices" }, "no layer"),
    /names adapters, but no layer/,
  );
});

Deno.test("checkBoundAdapter: names the adapter, refuses another one", () => {
  const expected = {
    vendorId: 0x10de,
    deviceId: 0x2335,
    name: "NVIDIA H200",
    pciBusId: null,
    index: 1,
  };
  const ok = checkBoundAdapter(
    { vendor: "4318", device: "9013", description: "NVIDIA H200" },
    expected,
  );
  assert.match(ok, /^NVIDIA H200 \(vendor 0x10de, device 0x2335\), bound to adapter 1/);
  assert.throws(
    () => checkBoundAdapter({ vendor: "65541", device: "0", description: "llvmpipe" }, expected),
    /bound to adapter 1 NVIDIA H200 \[10de:2335\] but WebGPU opened llvmpipe \(vendor 0x10005/,
  );
  assert.match(
    checkBoundAdapter({ vendor: "65541", device: "0", description: "llvmpipe" }, null),
    /not bound \(default adapter\)/,
  );
});

const WORKER = fileURLToPath(new URL("./_bound_worker.ts", import.meta.url));

async function runBound(env: Record<string, string>): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", WORKER],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

Deno.test({
  name: "a worker bound to this machine's adapter opens it and says so; a wrong binding fails",
  sanitizeResources: false,
  async fn() {
    const listing = await listAdapters();
    assert.ok(listing.adapters, `the device-select layer is needed here: ${listing.reason}`);
    const [b] = planBindings([0], listing.adapters, { shareAdapter: false, what: "test" });
    const r = await runBound(b.env);
    assert.equal(r.code, 0, r.out);
    const a = listing.adapters[0];
    assert.match(r.out, new RegExp(`adapter: .*vendor 0x${a.vendorId.toString(16)}, device 0x`));
    assert.ok(r.out.includes(a.name), r.out);
    assert.ok(r.out.includes(`bound to adapter 0 by ${b.how}`), r.out);

    // Bound to a GPU this machine does not have: the layer falls back, and the worker refuses.
    const fake = parseDeviceSelectList(MIXED)!;
    const [nv] = planBindings(["10de:2335"], fake, { shareAdapter: false, what: "test" });
    const bad = await runBound(nv.env);
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /adapter binding failed: bound to adapter 2 NVIDIA H200/);
  },
});
