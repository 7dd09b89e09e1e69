#!/usr/bin/env bash
# Build the offline base image from Debian packages (debootstrap + docker import), for hosts that
# cannot pull from a container registry: Debian bookworm minbase, Python 3.11 with venv, CA
# certificates. Idempotent: does nothing when the tag already exists (FORCE=1 rebuilds).
#
# Usage: docker/build-base.sh [TAG]        (default solarpipe-base:bookworm)
# Then:  solarpipe images build --base-image solarpipe-base:bookworm
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
set -euo pipefail

tag="${1:-solarpipe-base:bookworm}"
suite="${SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# passwd gives useradd for the images' non-root user; python3-venv gives the images their venv.
packages="python3,python3-venv,ca-certificates,passwd"

log() { printf 'build-base: %s\n' "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag exists; nothing to do (FORCE=1 rebuilds)"
    exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap missing: run scripts/setup-docker.sh"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }

rootfs="$(mktemp -d /tmp/solarpipe-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

started=$SECONDS
log "debootstrap $suite (minbase + $packages) from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >/dev/null

# Same trimming as the official slim images: no package lists, caches, docs, man pages, locales.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian "$rootfs"/tmp/* \
    "$rootfs"/debootstrap
find "$rootfs"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
# Keep the image's apt pointed at the same mirror, for users who add packages on top.
echo "deb $mirror $suite main" >"$rootfs"/etc/apt/sources.list

tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "solarpipe offline base: debootstrap $suite minbase + $packages" \
    - "$tag" >/dev/null
size="$(docker image inspect "$tag" --format '{{.Size}}')"
log "built $tag ($((size / 1000000)) MB) in $((SECONDS - started)) s"
