"""The project's packaging: the editable build that set-up runs raises no deprecation warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What pip runs in `pip install -e .`: setuptools' PEP 660 hook, warnings recorded, not printed.
BUILD_EDITABLE = """
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import setuptools.build_meta as backend
    backend.build_editable(sys.argv[1])
print(json.dumps([[w.category.__name__, str(w.message).strip()] for w in caught]))
"""


def test_editable_build_raises_no_deprecation_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_EDITABLE, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("solarpipe-*.whl")), "no editable wheel was built"
    caught = json.loads(result.stdout.strip().splitlines()[-1])
    deprecations = [
        f"{category}: {message}" for category, message in caught if "Deprecat" in category
    ]
    assert deprecations == []
