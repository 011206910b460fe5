#!/usr/bin/env bash
# One-step set-up for a fresh Linux machine, then a deno task:
#   bash scripts/setup.sh demo    the whole pipeline on the tiny model shipped in the repository
#   bash scripts/setup.sh test    the test suite
#   bash scripts/setup.sh test-mpi the MPI tests (installs Open MPI; REFLOW_WITH_MPI=1 does for any task)
# Installs Deno 2.9.6 from npm into .tools/ when the PATH has no Deno 2.9.6, and Mesa's lavapipe
# (apt-get install mesa-vulkan-drivers; needs root) when Deno finds no WebGPU adapter or only one
# that cannot run every kernel path (e.g. Mesa's OpenGL one).
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-test}"
shift || true
export DEBIAN_FRONTEND=noninteractive
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

if ! command -v deno >/dev/null || [[ "$(deno --version | head -1)" != "deno 2.9.6"* ]]; then
  if [ ! -x .tools/deno/bin/deno ]; then
    echo "installing Deno 2.9.6 from npm into .tools/deno"
    mkdir -p .tools/deno
    (cd .tools/deno && { [ -f package.json ] || npm init -y >/dev/null; } &&
      npm install --no-audit --no-fund deno@2.9.6 >/dev/null)
    mkdir -p .tools/deno/bin
    ln -sf "$(find "$PWD/.tools/deno/node_modules/@deno" -name deno -type f | head -1)" .tools/deno/bin/deno
  fi
  export PATH="$PWD/.tools/deno/bin:$PATH"
fi
deno --version | head -1

# The adapter is judged by what it can do (scripts/check_adapter.ts runs tiny kernels), not by its
# name: Mesa's OpenGL driver (libgl1-mesa-dri) also yields an adapter called "llvmpipe", but wgpu's
# GL backend cannot run the texture-operand kernels and has no shader-f16. Mesa's Vulkan driver
# (lavapipe) runs every path, so it is installed when the adapter found lacks one of them.
check_adapter() { deno run -A scripts/check_adapter.ts --require texture,f16 2>/dev/null; }
set +e
adapter="$(check_adapter)"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "$adapter"
  if dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
    echo "mesa-vulkan-drivers is installed already; not reinstalling"
  elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "to run every kernel path on the CPU, install Mesa's Vulkan driver as root:" \
      "apt-get install mesa-vulkan-drivers" >&2
  else
    echo "installing Mesa's software Vulkan driver (mesa-vulkan-drivers)"
    apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  fi
  set +e
  adapter="$(check_adapter)"
  status=$?
  set -e
fi
echo "$adapter"
# No adapter at all is fatal; a weaker one runs the storage kernels, unless the caller (CI) says
# which paths it requires: REFLOW_REQUIRE_PATHS=texture,f16.
if [ "$status" -eq 3 ]; then exit 1; fi
if [ -n "${REFLOW_REQUIRE_PATHS:-}" ] &&
  ! deno run -A scripts/check_adapter.ts --require "$REFLOW_REQUIRE_PATHS" 2>/dev/null >/dev/null; then
  echo "the adapter lacks a path in REFLOW_REQUIRE_PATHS=$REFLOW_REQUIRE_PATHS" >&2
  exit 1
fi
# numpy and lmdb for Python only serve interoperability tests, which skip without them.
if [ "$task" = test ] && ! /usr/bin/python3 -c "import numpy, lmdb" 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
  { apt-get install -y -qq python3-numpy python3-lmdb ||
    { apt-get update -qq && apt-get install -y -qq python3-numpy python3-lmdb; }; } >/dev/null 2>&1 ||
    echo "python3-numpy/python3-lmdb unavailable: interoperability tests will skip"
fi
# Headless Chromium runs the web page's browser test (tests/web/web_test.ts), which skips without it.
if [ "$task" = test ] && ! command -v chromium >/dev/null && [ "$(id -u)" -eq 0 ] &&
  command -v apt-get >/dev/null; then
  { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } \
    >/dev/null 2>&1 || echo "chromium unavailable: the web page's browser test will skip"
fi
# Open MPI only when asked (REFLOW_WITH_MPI=1, or the task test-mpi): training, generation and
# sampling across machines with mpirun/srun. Without it the MPI tests skip, saying why.
if [ "${REFLOW_WITH_MPI:-0}" = 1 ] || [ "$task" = test-mpi ]; then
  if ! command -v mpirun >/dev/null || ! ldconfig -p | grep 'libmpi\.so\.40' >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      echo "installing Open MPI (openmpi-bin, libopenmpi-dev)"
      { apt-get install -y -qq openmpi-bin libopenmpi-dev ||
        { apt-get update -qq && apt-get install -y -qq openmpi-bin libopenmpi-dev; }; } >/dev/null
    else
      echo "to run over MPI, install Open MPI as root: apt-get install openmpi-bin libopenmpi-dev" >&2
    fi
  fi
fi
deno install --frozen >/dev/null 2>&1 || deno install
exec deno task "$task" "$@"
