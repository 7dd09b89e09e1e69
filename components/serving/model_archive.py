"""Find, fetch, check and import the exported BentoML model archive that a server will serve.

A model URI is the archive itself (``…/solar_panel_detector.tar.gz`` or ``.bentomodel``) or the
export folder/prefix holding it (``out/export``, ``s3://bucket/runs/<id>/export``). The archive
is checked to be a BentoML model (``model.yaml`` naming it, the TorchScript ``model.pt``) before
BentoML imports it, so a wrong URI fails with one line naming it instead of deep in BentoML.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.ml.scripted import MODEL_FILE

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

ARCHIVE_SUFFIXES = (".tar.gz", ".bentomodel")
MODEL_MANIFEST = "model.yaml"


@dataclass(frozen=True)
class ModelArchive:
    """A local copy of a checked archive: where it is, and the model tag it holds."""

    path: Path
    tag: str


def is_archive_uri(uri: str) -> bool:
    return uri.rstrip("/").endswith(ARCHIVE_SUFFIXES)


def find_archive_uri(model_uri: str) -> str:
    """The archive named by ``model_uri``: the URI itself, or the one archive under it."""
    if is_archive_uri(model_uri):
        if not uri_io.exists(model_uri):
            raise NotFoundError(f"no model archive at {model_uri}")
        return model_uri
    found = [info.uri for info in uri_io.list_objects(model_uri) if is_archive_uri(info.uri)]
    if not found:
        raise NotFoundError(
            f"no model archive (*.tar.gz or *.bentomodel) at {model_uri}; "
            "pass the export stage's output folder or its archive"
        )
    if len(found) > 1:
        names = ", ".join(uri_io.basename(uri) for uri in found)
        raise SolarpipeError(f"several model archives under {model_uri} ({names}): pass one")
    return found[0]


def read_model_tag(archive: Path, uri: str) -> str:
    """``name:version`` from the archive's ``model.yaml``; an error naming ``uri`` otherwise."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = {posixpath.normpath(member.name): member for member in tar.getmembers()}
            missing = [name for name in (MODEL_MANIFEST, MODEL_FILE) if name not in members]
            if missing:
                raise SolarpipeError(
                    f"not a solarpipe model archive: {uri} has no {' or '.join(missing)}; "
                    "pass the archive written by the export stage"
                )
            handle = tar.extractfile(members[MODEL_MANIFEST])
            manifest = yaml.safe_load(handle.read()) if handle else None
    except tarfile.ReadError as exc:
        raise SolarpipeError(
            f"not a BentoML model archive: {uri} (not a tar file, gzip- or xz-compressed)"
        ) from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SolarpipeError(f"not a BentoML model archive: {uri} ({first_line})") from exc
    except yaml.YAMLError as exc:
        raise SolarpipeError(f"not a BentoML model archive: {uri} (bad {MODEL_MANIFEST})") from exc
    if not isinstance(manifest, dict) or not {"name", "version"} <= manifest.keys():
        raise SolarpipeError(
            f"not a BentoML model archive: {uri} ({MODEL_MANIFEST} names no model)"
        )
    return f"{manifest['name']}:{manifest['version']}"


def fetch_archive(model_uri: str, folder: Path) -> ModelArchive:
    """Download (or copy) the archive named by ``model_uri`` into ``folder`` and check it."""
    archive_uri = find_archive_uri(model_uri)
    local = folder / uri_io.basename(archive_uri)
    uri_io.download_file(archive_uri, local)
    return ModelArchive(path=local.resolve(), tag=read_model_tag(local, archive_uri))


def import_archive(archive: ModelArchive, bentoml_home: Path) -> str:
    """Import the archive into the model store under ``bentoml_home``; returns its tag.

    A store that already holds the tag (the same archive served again) is left as it is.
    """
    import bentoml
    from bentoml._internal.models import ModelStore  # the documented ``_model_store`` argument
    from bentoml.exceptions import BentoMLException, NotFound

    store = ModelStore(str(bentoml_home / "models"))
    try:
        store.get(archive.tag)
        return archive.tag
    except NotFound:
        pass
    try:
        # absolute: BentoML hands the path to fsspec, which reads a relative one from "/"
        imported = bentoml.models.import_model(str(archive.path), _model_store=store)
    except (BentoMLException, OSError, ValueError) as exc:
        raise SolarpipeError(f"BentoML could not import {archive.path.name}: {exc}") from exc
    return str(imported.tag)


def scratch_folder(prefix: str) -> Path:
    """A fresh private folder under the temporary directory (``$TMPDIR``, ``/tmp``)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
