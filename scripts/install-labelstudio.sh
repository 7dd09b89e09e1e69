#!/usr/bin/env bash
# Install the Label Studio server into its own venv (.venv-labelstudio in the project root).
# The labeling tests start it on loopback; it is kept apart from the project venv because
# label-studio pins its own Django stack. Idempotent: does nothing when the right version is
# already installed. Override the venv path with LABEL_STUDIO_VENV, the Python with PYTHON.
set -euo pipefail

LABEL_STUDIO_VERSION="1.23.*"
project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${LABEL_STUDIO_VENV:-${project_root}/.venv-labelstudio}"
python_bin="${PYTHON:-python3.11}"

installed_version() {
    "${venv_dir}/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
print(version("label-studio"))
PY
}

if [[ -x "${venv_dir}/bin/label-studio" ]] && [[ "$(installed_version)" == ${LABEL_STUDIO_VERSION} ]]; then
    echo "label-studio $(installed_version) already installed in ${venv_dir}"
    exit 0
fi

if ! command -v "${python_bin}" >/dev/null 2>&1; then
    echo "error: ${python_bin} not found (Label Studio ${LABEL_STUDIO_VERSION} needs Python 3.11; set PYTHON=...)" >&2
    exit 1
fi

# pip at -qq prints its errors only (scripts/setup.sh says what -q still prints).
pip_install() {
    if ! "${venv_dir}/bin/python" -m pip install -qq --disable-pip-version-check "$@"; then
        echo "error: pip install $* failed (pip's errors above)" >&2
        exit 1
    fi
}

echo "installing label-studio==${LABEL_STUDIO_VERSION} into ${venv_dir}"
"${python_bin}" -m venv --clear "${venv_dir}"
pip_install --upgrade pip
pip_install "label-studio==${LABEL_STUDIO_VERSION}"
echo "installed label-studio $(installed_version) in ${venv_dir}"
