#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver, used by service/tests/console_browser.rs
# to drive the approver console in a real headless browser. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
echo "[install-chromium] $(chromium --version 2>/dev/null); $(chromedriver --version 2>/dev/null | head -1)" >&2
