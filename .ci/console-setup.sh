#!/usr/bin/env bash
# Install Debian's Chromium for the console tests (tests/test_console.py).
# Playwright drives it through executable_path=/usr/bin/chromium and never
# downloads a browser of its own. Idempotent and quiet; needs root (as CI is).
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
