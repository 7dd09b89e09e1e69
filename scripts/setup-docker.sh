#!/usr/bin/env bash
# Make a Docker engine with BuildKit available: install docker.io, debootstrap and
# docker-registry when absent, start dockerd when it is not running, wait until `docker info`
# answers. Idempotent.
#
# Environment:
#   DOCKERD_LOG      where dockerd logs go            (default /var/log/dockerd.log)
#   DOCKERD_FLAGS    extra flags for dockerd          (default: --iptables=false --bridge=none,
#                    for hosts/VMs without netfilter; containers then use --network host)
#   DOCKER_WAIT_S    seconds to wait for the engine   (default 60)
set -euo pipefail

log() { printf 'setup-docker: %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

missing=()
# docker.io brings dockerd and the BuildKit client /usr/bin/docker (DOCKER_BUILDKIT=1 works with
# it; a newer CLI elsewhere on PATH without the buildx plugin cannot build with BuildKit).
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then missing+=(docker.io); fi
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# A registry on loopback for the push test (tests/test_images.py); Debian's distribution/registry.
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    log "engine already running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi

log_file="${DOCKERD_LOG:-/var/log/dockerd.log}"
read -r -a flags <<<"${DOCKERD_FLAGS:---iptables=false --bridge=none}"
log "starting dockerd ${flags[*]} (log: $log_file)"
"${SUDO[@]}" bash -c 'nohup dockerd "$@" >>"$0" 2>&1 </dev/null &' "$log_file" "${flags[@]}"

deadline=$((SECONDS + ${DOCKER_WAIT_S:-60}))
until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "dockerd did not answer within ${DOCKER_WAIT_S:-60}s; last log lines:"
        tail -n 20 "$log_file" >&2 || true
        exit 1
    fi
    sleep 1
done
log "engine running ($(docker info --format '{{.ServerVersion}}'))"
