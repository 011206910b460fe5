#!/usr/bin/env bash
# One-step set-up for a fresh Linux machine, then a deno task:
#   bash scripts/setup.sh demo    the whole pipeline on the tiny model shipped in the repository
#   bash scripts/setup.sh test    the test suite
# Installs Deno 2.9.6 from npm into .tools/ when the PATH has no Deno 2.9.6, and Mesa's lavapipe
# (apt-get install mesa-vulkan-drivers; needs root) when Deno finds no WebGPU adapter.
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

probe='const a = await navigator.gpu?.requestAdapter(); console.log(a ? "WebGPU adapter: " + a.info.description : "none");'
if ! deno eval "$probe" 2>/dev/null | grep -q '^WebGPU adapter:'; then
  echo "no WebGPU adapter: installing Mesa's software Vulkan driver (mesa-vulkan-drivers)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root for apt-get; run: sudo apt-get install mesa-vulkan-drivers" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
deno eval "$probe" 2>/dev/null
# numpy and lmdb for Python only serve interoperability tests, which skip without them.
if [ "$task" = test ] && ! /usr/bin/python3 -c "import numpy, lmdb" 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
  apt-get install -y -qq python3-numpy python3-lmdb >/dev/null 2>&1 ||
    echo "python3-numpy/python3-lmdb unavailable: interoperability tests will skip"
fi
deno install --frozen >/dev/null 2>&1 || deno install
exec deno task "$task" "$@"
