#!/usr/bin/env bash
# Install Debian's chromium for the dashboard browser test (tests/server/test_dashboard.py).
# Idempotent and non-interactive; a no-op when /usr/bin/chromium already exists.
# Needs root (or passwordless sudo) and an apt mirror; the test skips with a clear
# reason when chromium is unavailable.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-chromium: need root (or passwordless sudo) to apt-get install chromium" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
