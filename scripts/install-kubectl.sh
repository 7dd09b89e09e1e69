#!/usr/bin/env bash
# kubectl, for its built-in kustomize (the manifest tests render k8s/ with `kubectl kustomize`).
# Idempotent: does nothing when kubectl is on PATH; otherwise installs Debian's package.
set -euo pipefail
if command -v kubectl >/dev/null 2>&1; then
    echo "kubectl already installed: $(command -v kubectl)"
    exit 0
fi
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends kubectl >/dev/null
echo "installed kubectl: $(command -v kubectl)"
