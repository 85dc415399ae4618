#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian's chromium (/usr/bin/chromium) and the pinned
# Python `playwright` package (whose wheel bundles its node driver) into a virtual environment.
# It never runs `playwright install`: the test drives the system chromium, nothing is downloaded.
#
#   scripts/install_browser.sh [VENV]      # VENV defaults to .venv
#
# Idempotent: when both are present it changes nothing and exits 0. apt needs root (or sudo).
set -euo pipefail

VENV="${1:-.venv}"
PLAYWRIGHT_VERSION="1.65.2"
CHROMIUM="/usr/bin/chromium"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "install_browser.sh: no virtual environment at '$VENV' (run 'make install' first, or pass its path)" >&2
    exit 1
fi

if [ -x "$CHROMIUM" ]; then
    echo "chromium: present ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install_browser.sh: installing chromium needs root or sudo" >&2; exit 1; }
        SUDO="sudo"
    fi
    command -v apt-get >/dev/null || { echo "install_browser.sh: needs apt-get (Debian/Ubuntu) to install chromium" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    LOG="$(mktemp -t install_browser.XXXXXX.log)"
    # Update the package lists only when apt does not know chromium yet (a fresh image has none).
    if ! apt-cache show chromium >/dev/null 2>&1; then
        echo "chromium: apt-get update"
        $SUDO apt-get update -qq
    fi
    echo "chromium: apt-get install chromium (log: $LOG)"
    if ! $SUDO apt-get install -y -q --no-install-recommends chromium >"$LOG" 2>&1; then
        # stale lists (a package version no longer on the mirror): refresh once and retry
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -q --no-install-recommends chromium >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
    fi
    [ -x "$CHROMIUM" ] || { echo "install_browser.sh: apt installed chromium but $CHROMIUM is missing" >&2; exit 1; }
fi

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)"
if [ "$installed" = "$PLAYWRIGHT_VERSION" ]; then
    echo "playwright: present ($installed) in $VENV"
else
    echo "playwright: pip install playwright==$PLAYWRIGHT_VERSION into $VENV"
    "$VENV/bin/python" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"
fi
