#!/usr/bin/env bash
# The quickstart command: set up the venv (first time: a few minutes), then run the whole
# pipeline on the embedded default (S3 server, synthetic scene). Extra arguments go to
# `solarpipe quickstart` (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/solarpipe quickstart "$@"
