# shellcheck shell=bash
# Headless Chromium for the dashboard's real-browser test (tests/dashboard_browser.rs).
# Sourced by scripts/test; idempotent. Exports PROCFWK_CHROMIUM (the browser the test starts) and
# PROCFWK_REQUIRE_CHROMIUM=1 (the test then fails rather than skips when no browser is found).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    else
        echo "40-chromium: chromium is not installed and we are not root; install the Debian package 'chromium'" >&2
    fi
fi
if command -v chromium >/dev/null 2>&1; then
    export PROCFWK_CHROMIUM="$(command -v chromium)"
    export PROCFWK_REQUIRE_CHROMIUM=1
fi
