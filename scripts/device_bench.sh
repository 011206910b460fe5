#!/usr/bin/env bash
# Issue 13's GPU figures in one call of the device tool (an H200 with NVIDIA's Vulkan driver).
#
# Here, once, from the repository root (needs deno on PATH and Debian's apt; about a minute):
#   bash scripts/device_bench.sh --prepare
# It runs ../shared/tools/device/prepare.sh (Deno and the Vulkan loader into .device/, ignored by
# git) and adds the GL-vendor-neutral libraries NVIDIA's Vulkan driver loads (libglvnd etc., the
# device README's list) to .device/, where .device/enter.sh unpacks every .deb.
# To have the diffusers comparison run, put diffusers' wheel (and importlib_metadata's, which the
# machine lacks) in .whl/ as the device README says; without them that step reports diffusers
# missing and the rest still runs.
#
# Then one device call. The machine reaches no registry: the npm packages travel in node_modules
# (deno.json sets nodeModulesDir "auto"; `deno install` fills it here) and the jobs run with
# `--cached-only`, which resolves them from there through deno.lock (checked here with an empty
# DENO_DIR; .device ~30 MB + node_modules ~25 MB stay under the 64 MiB carry limit):
#   run(command="bash scripts/device_bench.sh", carry=[".device", ".whl", "node_modules"], timeout_s=590)
# What comes back under $OUT (7 files): env.txt (GPU, driver, adapter), tests.txt (the tiled
# kernels' float64-reference tests and the dispatch-count test on the GPU), sd15.json and
# others.json (bench --sd rows of SD-1.5, then SD-2.1 and AltDiffusion), bench.log,
# compare.json and compare.log (diffusers' UNet on the same GPU: ratio and max difference).
# Every step has its own time limit, and the JSON records are rewritten row by row, so a step cut
# short still returns what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  set -e
  shared=../shared/tools/device/prepare.sh
  [ -f "$shared" ] || shared=/work/shared/tools/device/prepare.sh
  # prepare.sh appends to .git/info/exclude, which a fresh clone may lack the folder of.
  mkdir -p "$(git rev-parse --git-dir)/info"
  nice -n 10 bash "$shared"
  mkdir -p /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  (cd .device && apt-get $o download libglvnd0 libegl1 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
  du -sh .device
  ls .device
  exit 0
fi

OUT=${OUT:-out/device}
mkdir -p "$OUT"
# A dry run of this script's logic on a CPU: DEVICE_BENCH_SCALE=small DEVICE_BENCH_ENTER=<a file
# that puts deno on PATH> (the real enter.sh unpacks packages into /, for the device machine only).
SCALE=${DEVICE_BENCH_SCALE:-full}
ENTER=${DEVICE_BENCH_ENTER:-.device/enter.sh}
[ -f "$ENTER" ] || { echo "no $ENTER: run 'bash scripts/device_bench.sh --prepare' here first and carry .device"; exit 2; }
# shellcheck disable=SC1090
source "$ENTER"
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
DENO="deno run --cached-only -A"
T0=$(date +%s)
left() { echo $((T0 + $1 - $(date +%s))); }

{
  echo "== date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  echo "== vulkan loader: $(ldconfig -p | grep -c libvulkan) entries; VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"
  ls /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
  echo "== deno: $(deno --version | head -1)"
  echo "== adapter"
  timeout 60 $DENO scripts/check_adapter.ts 2>&1
  timeout 60 deno eval --no-config 'const a = await navigator.gpu.requestAdapter({powerPreference: "high-performance"});
    console.log(JSON.stringify({info: a?.info, fallback: a?.info?.isFallbackAdapter, features: [...(a?.features ?? [])].sort(),
      limits: a ? {storage: a.limits.maxStorageBufferBindingSize, buffer: a.limits.maxBufferSize,
      wgMem: a.limits.maxComputeWorkgroupStorageSize, inv: a.limits.maxComputeInvocationsPerWorkgroup} : null}))' 2>&1
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# The tiled (GPU-shaped) kernels against their float64 references, on this GPU; the pinned
# dispatch counts. ~1 minute budget.
timeout 100 deno test --no-config --no-lock --no-check -A tests/kernels/matmul_tiled_test.ts \
  tests/kernels/conv2d_tiled_test.ts tests/kernels/attention_tiled_test.ts \
  tests/bench/dispatch_count_test.ts >"$OUT/tests.txt" 2>&1
echo "== tests (exit $?):"; tail -4 "$OUT/tests.txt"

# SD-1.5: every row, and the comparison folder. The biggest step.
CMP=/tmp/reflow_compare
rm -rf "$CMP"
timeout $(($(left 400) > 60 ? $(left 400) : 60)) $DENO scripts/bench.ts --sd --scale "$SCALE" \
  --models sd15 --reps 3 --json "$OUT/sd15.json" --compare-dir "$CMP" 2>&1 | tee "$OUT/bench.log" \
  | cut -c1-400
echo "== sd15 bench exit ${PIPESTATUS[0]}"

# diffusers' UNet on the same GPU, same config, weights and inputs.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
PYTHONUNBUFFERED=1 timeout 90 python3 scripts/compare_diffusers.py --dir "$CMP" \
  --bench-json "$OUT/sd15.json" --json "$OUT/compare.json" >"$OUT/compare.log" 2>&1
echo "== compare exit $?:"; tail -6 "$OUT/compare.log"

# SD-2.1 and AltDiffusion: UNet forward and text encoder, with what time is left.
timeout $(($(left 560) > 20 ? $(left 560) : 20)) $DENO scripts/bench.ts --sd --scale "$SCALE" \
  --models sd21,alt --reps 3 --json "$OUT/others.json" 2>&1 | tee -a "$OUT/bench.log" | cut -c1-400
echo "== others exit ${PIPESTATUS[0]}; total $(($(date +%s) - T0)) s"
