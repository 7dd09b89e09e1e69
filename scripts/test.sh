#!/usr/bin/env bash
# The test command: set up everything the tests need on this machine, then run them.
#
#   bash scripts/test.sh              # venv, Label Studio, Docker engine + images, ruff, pytest
#   bash scripts/test.sh --no-docker  # skip the engine, the images and the container tests
#   bash scripts/test.sh -- -k prepare  # extra pytest arguments after --
#
# Each phase prints how long it took.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
with_docker=1
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-docker) with_docker=0 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "usage: scripts/test.sh [--no-docker] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

phase() {
    local name="$1"
    shift
    local started=$SECONDS
    echo "==> $name"
    "$@"
    echo "==> $name took $((SECONDS - started)) s"
}

phase "python environment" bash scripts/setup.sh
phase "label studio" bash scripts/install-labelstudio.sh
phase "kubectl (kustomize)" bash scripts/install-kubectl.sh
export SOLARPIPE_REQUIRE_KUBECTL=1
export SOLARPIPE_REQUIRE_LABELSTUDIO=1
if [ "$with_docker" = 1 ]; then
    phase "docker engine" bash scripts/setup-docker.sh
    phase "base image" bash docker/build-base.sh
    # pip in the image builds trusts this host's CAs (a TLS-inspecting proxy's among them).
    export SOLARPIPE_CA_BUNDLE="${SOLARPIPE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
    phase "stage images" .venv/bin/solarpipe images build --base-image "${SOLARPIPE_BASE_IMAGE:-solarpipe-base:bookworm}"
    export SOLARPIPE_REQUIRE_DOCKER=1
fi
phase "ruff" .venv/bin/ruff check .
phase "pytest" .venv/bin/pytest --durations=25 "${pytest_args[@]}"
