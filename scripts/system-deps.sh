#!/usr/bin/env bash
# System packages some tests need, installed only when missing and only as root (CI is
# root; elsewhere the tests fall back or say what to install):
#   redis-server  Debian's 7.0, built with TLS: TLS, ACL, Sentinel and Cluster tests
#   chromium, chromium-driver  the demo's browser test
#   wrk           the load generator of the outage tests (make test-outages) and of
#                 bench/telemetry_outage.py
# The package's service is not started: tests start their own servers on free ports.
set -euo pipefail
wanted=()
command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
command -v chromium >/dev/null 2>&1 || wanted+=(chromium)
command -v chromedriver >/dev/null 2>&1 || wanted+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || wanted+=(wrk)
[ ${#wanted[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not root or no apt-get; missing: ${wanted[*]} (tests that need them fall back or fail with a hint)" >&2
    exit 0
fi
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${wanted[@]}" >/dev/null
echo "system-deps: installed ${wanted[*]}"
