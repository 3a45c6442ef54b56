#!/usr/bin/env bash
# Prepare the real components that the containment tests drive:
#   - Debian packages: nftables, Open vSwitch, ping, ethtool, Mosquitto
#     (with its dynamic security plugin and mosquitto_ctrl);
#   - a virtual environment with the os-ken OpenFlow controller.
# os-ken 1.4.1 is the last release that ships os_ken.app.ofctl_rest and
# simple_switch_13; on Python 3.11 it runs with eventlet 0.33.3 and
# dnspython 2.6.1 (newer eventlet lacks eventlet.wsgi.ALREADY_HANDLED, which
# the tests' launcher defines). Idempotent and quiet: prints only on failure.
# Without root the Debian step is skipped (the root-only tests skip too).
set -euo pipefail

OSKEN_VENV="${IOTWARDEN_OSKEN_VENV:-/opt/iotwarden-osken}"
PACKAGES=(nftables openvswitch-switch iputils-ping ethtool mosquitto mosquitto-clients)
LOG="$(mktemp -t containment-setup.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

fail() {
    echo "containment-setup: $1 (log follows)" >&2
    cat "$LOG" >&2
    exit 1
}

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1 \
            || fail "apt-get install ${missing[*]} failed"
    else
        echo "containment-setup: not root, so ${missing[*]} stay missing and their tests skip" >&2
    fi
fi

# The check defines the attribute that the tests' launcher also defines.
OSKEN_CHECK='import eventlet.wsgi; eventlet.wsgi.ALREADY_HANDLED = object(); import os_ken.app.ofctl_rest, os_ken.app.simple_switch_13'
if ! "$OSKEN_VENV/bin/python" -c "$OSKEN_CHECK" >/dev/null 2>&1; then
    python3 -m venv "$OSKEN_VENV" >>"$LOG" 2>&1 || fail "cannot create the venv $OSKEN_VENV"
    "$OSKEN_VENV/bin/python" -m pip install -q "os-ken==1.4.1" "eventlet==0.33.3" "dnspython==2.6.1" >>"$LOG" 2>&1 \
        || fail "pip install of os-ken 1.4.1 into $OSKEN_VENV failed"
fi
