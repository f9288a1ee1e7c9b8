#!/usr/bin/env bash
# Makes sure a Chromium binary is here for the browser tests (tests/browser): installs
# Debian's chromium package when none is found. It never stops `make test`: when Chromium
# cannot be installed it says why, and leaves the reason in test-artifacts/no-chromium.txt,
# which the browser tests skip with.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
reason_file="$here/test-artifacts/no-chromium.txt"

found() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

give_up() {
  mkdir -p "$(dirname "$reason_file")"
  echo "$1" >"$reason_file"
  echo "Browser tests will be skipped: $1" >&2
  exit 0
}

if found; then
  rm -f "$reason_file"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  give_up "no chromium binary, and no apt-get to install Debian's chromium package"
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    give_up "no chromium binary, and installing it needs root (or sudo without a password)"
  fi
  sudo=(sudo -n)
fi

echo "Installing Debian's chromium for the browser tests..." >&2
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -qq >"$log" 2>&1 ||
  ! "${sudo[@]}" apt-get install -y -qq chromium >>"$log" 2>&1; then
  tail -n 5 "$log" >&2
  why=$(tail -n 1 "$log")
  rm -f "$log"
  give_up "apt-get could not install Debian's chromium package: ${why:-it gave no reason}"
fi
rm -f "$log"
found || give_up "the chromium package installed, yet no chromium binary is on PATH"
rm -f "$reason_file"
echo "Installed $(chromium --version 2>/dev/null)" >&2
