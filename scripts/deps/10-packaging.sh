# Sourced by scripts/test. tests/package.rs runs `procfwk package`, which cross-builds with cargo-zigbuild
# (zig from PyPI's `ziglang`) for the Functions host's glibc baseline and checks the result with binutils'
# objdump. Installs what is missing; does nothing when all three are there.

procfwk_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "scripts/deps/10-packaging.sh: need root to run: $*" >&2
    return 1
  fi
}

if ! command -v objdump >/dev/null 2>&1; then
  echo "installing binutils (objdump)"
  procfwk_as_root apt-get update -qq
  procfwk_as_root apt-get install -y -qq binutils >/dev/null
fi

if ! command -v zig >/dev/null 2>&1 && ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "installing zig (PyPI ziglang 0.17.1)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    procfwk_as_root apt-get update -qq
    procfwk_as_root apt-get install -y -qq python3-pip >/dev/null
  fi
  # A distribution's own Python refuses `pip install` outside a virtualenv (PEP 668); ziglang only adds
  # its own module, so it is installed there anyway.
  python3 -m pip install --quiet "ziglang==0.17.1" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "ziglang==0.17.1"
fi

if ! command -v cargo-zigbuild >/dev/null 2>&1; then
  echo "installing cargo-zigbuild 0.24.1"
  cargo install cargo-zigbuild --version 0.24.1 --locked
fi

echo "objdump: $(objdump --version | head -1)"
echo "zig: $(command -v zig >/dev/null 2>&1 && zig version || python3 -m ziglang version)"
echo "cargo-zigbuild: $(cargo-zigbuild --version)"
unset -f procfwk_as_root
