#!/usr/bin/env bash
# Shared set-up for scripts/run and scripts/test: system library, virtualenv, Python packages.
# Usage: source scripts/setup.sh [extra]   (extra = "test" installs the test tools too)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRA="${1:-}"

# ctypes asks /sbin/ldconfig itself, so this works for users whose PATH lacks /sbin too.
have_libopus() { "$PYTHON" -c 'import ctypes.util, sys; sys.exit(not ctypes.util.find_library("opus"))'; }

if ! have_libopus; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian's libopus0 (Opus codec for Discord voice)..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopus0 >/dev/null
    else
        echo "setup: libopus is missing. Install it first: sudo apt-get install -y libopus0" >&2
        exit 1
    fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))." >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            rm -rf "$VENV"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "setup: cannot create a virtualenv. Install it first: sudo apt-get install -y python3-venv" >&2
            exit 1
        fi
    fi
fi

spec="."
[ -n "$EXTRA" ] && spec=".[${EXTRA}]"
# Reinstall only when the dependency list changed since the last install.
stamp="$VENV/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${EXTRA:-base}"
if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
