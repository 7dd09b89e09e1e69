"""Package ``model.pt`` as a BentoML model and export it to one archive file.

The model is created in a throw-away BentoML store (so the stage never writes to the user's
``~/bentoml``) and exported as ``<name>.tar.gz`` (default; gzip) or ``<name>.bentomodel``
(BentoML's xz format: ~25x slower to write for ~2% less size). ``solarpipe serve --model
<out>`` imports it into a model store and serves it (``components.serving``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from components.core.errors import UsageError

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

ARCHIVE_SUFFIX = {"tar.gz": "tar.gz", "bentomodel": "bentomodel"}


def archive_name(model_name: str, archive: str) -> str:
    return f"{model_name}.{ARCHIVE_SUFFIX[archive]}"


def check_model_name(model_name: str) -> None:
    """A usage error unless ``model_name`` is a valid BentoML model name (lowercase, no tag)."""
    from bentoml import Tag

    problem = ""
    if model_name != model_name.lower() or ":" in model_name:
        problem = "use lowercase letters, digits, '_', '-' or '.', without ':version'"
    else:
        try:
            Tag.from_taglike(model_name)
        except ValueError as exc:
            problem = str(exc)
    if problem:
        raise UsageError(f"export.name={model_name!r} is not a valid BentoML model name: {problem}")


def without_nulls(value: Any) -> Any:
    """``value`` with every ``None`` left out of its mappings and lists: BentoML metadata
    accepts only plain non-null values (a param left unset is simply absent there)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [without_nulls(item) for item in value if item is not None]
    return value


def write_bento_archive(
    model_file: Path,
    out_dir: Path,
    model_name: str,
    archive: str,
    labels: dict[str, str],
    metadata: dict[str, Any],
) -> tuple[str, Path]:
    """Create the BentoML model holding ``model_file``; returns (tag, archive path)."""
    import bentoml
    from bentoml._internal.models import ModelStore  # the documented ``_model_store`` argument

    check_model_name(model_name)
    with tempfile.TemporaryDirectory(prefix="solarpipe-bentoml-") as store_dir:
        store = ModelStore(store_dir)
        with bentoml.models.create(
            model_name, labels=labels, metadata=without_nulls(metadata), _model_store=store
        ) as bento_model:
            shutil.copyfile(model_file, bento_model.path_of(model_file.name))
        # absolute: BentoML hands the path to fsspec, which reads a relative one from "/"
        target = out_dir.resolve() / archive_name(model_name, archive)
        bentoml.models.export_model(bento_model.tag, str(target), _model_store=store)
    return str(bento_model.tag), target
