# shellcheck shell=bash
# Python tools the tests drive: schemathesis (the OpenAPI conformance check, scripts/openapi-check and
# tests/openapi.rs). Sourced by scripts/test; idempotent. The tools live in their own virtual environment
# (Debian's system Python refuses pip installs); exports PROCFWK_SCHEMATHESIS and
# PROCFWK_REQUIRE_SCHEMATHESIS=1 (the conformance test then fails rather than skips without it).
PROCFWK_PY_VENV="${PROCFWK_PY_VENV:-${HOME:-/root}/.cache/procfwk-python-tools}"
SCHEMATHESIS_VERSION="4.32.5"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null
    fi
fi
if [ ! -x "$PROCFWK_PY_VENV/bin/schemathesis" ] \
    || ! "$PROCFWK_PY_VENV/bin/python" -m pip show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION"; then
    python3 -m venv "$PROCFWK_PY_VENV"
    "$PROCFWK_PY_VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [ -x "$PROCFWK_PY_VENV/bin/schemathesis" ]; then
    export PROCFWK_SCHEMATHESIS="$PROCFWK_PY_VENV/bin/schemathesis"
    export PROCFWK_REQUIRE_SCHEMATHESIS=1
fi
