#!/usr/bin/env bash
# Create the project's virtual environment at .venv with every extra (stages, tools, tests).
#
# Idempotent and fast when nothing changed: dependencies are installed again only when
# pyproject.toml changed (a stamp records its hash); the project itself is always re-linked
# (editable install, no dependencies: seconds). SOLARPIPE_VENV puts the venv elsewhere (a CI
# cache keyed by the pyproject hash) and links .venv to it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${SOLARPIPE_VENV:-$root/.venv}"
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            python_bin="$candidate"
            break
        fi
    done
fi
if [ -z "$python_bin" ]; then
    echo "setup: error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

# pip at -qq prints its errors and nothing else. At -q it still prints setuptools' ten-line note
# on every editable install, and one "Location … is ignored" warning per package it fetches when
# a pip configuration names an index folder that is absent (the development machine's does).
pip_install() {
    if ! "$venv/bin/python" -m pip install -qq --disable-pip-version-check "$@"; then
        echo "setup: error: pip install $* failed (pip's errors above)" >&2
        exit 1
    fi
}

stamp="$venv/.solarpipe-deps"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $python_bin"
    "$python_bin" -m venv "$venv"
fi
if [ "$venv" != "$root/.venv" ]; then
    ln -sfn "$venv" "$root/.venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing dependencies (torch, kfp, dvc, bentoml, …; a few minutes the first time)"
    pip_install --upgrade pip setuptools wheel
    pip_install -e ".[dev]"
    echo "$wanted" >"$stamp"
else
    pip_install --no-deps --no-build-isolation -e .
fi
echo "setup: ready: $("$venv/bin/python" --version) in $venv (activate: source .venv/bin/activate)"
