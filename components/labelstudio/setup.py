"""``solarpipe labelstudio setup``: the labeling project, its S3 storages and its tasks.

Creates or updates, idempotently, a Label Studio project (title and label config from the
``labelstudio`` params), an S3 import storage over the tiles prefix and an S3 export storage on
the annotations prefix, both on the pipeline's S3 endpoint with its credentials; then syncs the
import storage and waits for the sync. A second run changes nothing and duplicates nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError, UsageError
from components.core.logs import get_logger
from components.core.params import LabelStudioParams, load_params
from components.core.s3 import endpoint_url, parse_s3_uri, region
from components.core.stage import add_params_options
from components.labelstudio.client import (
    connect,
    labelstudio_errors,
    labelstudio_token,
    labelstudio_url,
)
from components.labelstudio.project import find_project

log = get_logger(__name__)

IMAGE_TAG_NAME = "image"  # the task data key, ``$image``: LS puts each object's URL there
LABELS_TAG_NAME = "label"
SYNC_DONE = frozenset({"completed", "completed_with_errors", "failed"})
SYNC_POLL_INTERVAL_S = 0.5


@dataclass
class SetupResult:
    """What the setup found or did, per object: ``created``, ``updated`` or ``unchanged``."""

    project_id: int
    project_url: str
    task_count: int
    new_tasks: int
    actions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageLocation:
    """An S3 prefix as Label Studio stores it: bucket plus a prefix without slashes at the ends."""

    bucket: str
    prefix: str

    @classmethod
    def from_uri(cls, uri: str, option: str) -> StorageLocation:
        if not uri.startswith("s3://"):
            raise UsageError(
                f"{option} must be an s3:// prefix (Label Studio reads S3), got {uri!r}"
            )
        bucket, key = parse_s3_uri(uri)
        return cls(bucket=bucket, prefix=key.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def tile_pattern(regex_filter: str) -> re.Pattern[str]:
    try:
        return re.compile(regex_filter)
    except re.error as exc:
        raise UsageError(f"labelstudio.regex_filter {regex_filter!r}: {exc}") from exc


def require_tiles(tiles: StorageLocation, regex_filter: str) -> None:
    """Fail early, naming the prefix, when Label Studio would find no tile to import there.

    Mirrors Label Studio's scan: objects directly under the prefix whose key matches the regex.
    """
    pattern = tile_pattern(regex_filter)
    key_prefix = f"{tiles.prefix}/" if tiles.prefix else ""
    for info in uri_io.list_objects(str(tiles)):
        _, key = parse_s3_uri(info.uri)
        if "/" not in key.removeprefix(key_prefix) and pattern.match(key):
            return
    raise NotFoundError(
        f"no tiles under {tiles} match labelstudio.regex_filter {regex_filter!r} "
        "(run the prepare stage first?)"
    )


def label_config(labels: list[str]) -> str:
    """The labeling interface: one image and rectangle labels for ``labels``."""
    label_tags = "\n".join(f"    <Label value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_TAG_NAME}" value="${IMAGE_TAG_NAME}" zoom="true"/>\n'
        f'  <RectangleLabels name="{LABELS_TAG_NAME}" toName="{IMAGE_TAG_NAME}">\n'
        f"{label_tags}\n"
        "  </RectangleLabels>\n"
        "</View>"
    )


def s3_credentials() -> dict[str, str]:
    """The pipeline's S3 credentials from the AWS variables (only those that are set)."""
    variables = {
        "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "aws_session_token": "AWS_SESSION_TOKEN",
    }
    return {name: os.environ[env] for name, env in variables.items() if os.environ.get(env)}


def ensure_project(client: Any, title: str, config: str) -> tuple[Any, str]:
    """The project titled ``title`` with label config ``config``, created or updated."""
    project = find_project(client, title)
    if project is None:
        return client.projects.create(title=title, label_config=config), "created"
    if (project.label_config or "").strip() == config.strip():
        return project, "unchanged"
    return client.projects.update(project.id, label_config=config), "updated"


def _storage_changes(storage: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in wanted.items() if getattr(storage, name, None) != value}


def ensure_storage(
    storages: Any,
    project_id: int,
    location: StorageLocation,
    settings: dict[str, Any],
    credentials: dict[str, str],
    update_credentials: bool,
) -> tuple[Any, str]:
    """The S3 storage of ``project_id`` on ``location`` (import or export client), kept in line.

    Storages are found by bucket and prefix. The server never shows stored credentials, so
    they are sent on creation, and again only when ``update_credentials`` is set.
    """
    existing = [
        storage
        for storage in storages.list(project=project_id)
        if storage.bucket == location.bucket
        and (storage.prefix or "").strip("/") == location.prefix
    ]
    wanted = {"bucket": location.bucket, "prefix": location.prefix, **settings}
    if not existing:
        return storages.create(project=project_id, **wanted, **credentials), "created"
    storage = min(existing, key=lambda candidate: candidate.id)
    changes = _storage_changes(storage, wanted)
    if update_credentials:
        changes.update(credentials)
    if not changes:
        return storage, "unchanged"
    log.info("updating storage %s: %s", storage.id, ", ".join(sorted(changes)))
    return storages.update(storage.id, **changes), "updated"


def sync_import_storage(client: Any, storage_id: int, timeout_s: float) -> Any:
    """Start a sync of the import storage and wait until the server reports it finished."""
    storages = client.import_storage.s3
    storage = storages.sync(storage_id)
    deadline = time.monotonic() + timeout_s
    while storage.status not in SYNC_DONE:
        if time.monotonic() > deadline:
            raise SolarpipeError(
                f"Label Studio import storage {storage_id} still {storage.status} after "
                f"{timeout_s:g} s (raise labelstudio.sync_timeout_s, or check the server's log)"
            )
        time.sleep(SYNC_POLL_INTERVAL_S)
        storage = storages.get(storage_id)
    if storage.status == "failed":
        reason = (storage.traceback or "no traceback").strip().splitlines()[-1]
        raise SolarpipeError(f"Label Studio failed to sync import storage {storage_id}: {reason}")
    if storage.status == "completed_with_errors":
        log.warning("import storage %s synced with errors: %s", storage_id, storage.meta)
    return storage


def setup_labelstudio(
    tiles_uri: str,
    annotations_uri: str,
    params: LabelStudioParams,
    update_credentials: bool = False,
) -> SetupResult:
    """Create or update the project and its storages, sync the tiles in; see the module doc.

    Checks the arguments, then that tiles exist, then the server and its token.
    """
    if not params.labels:
        raise UsageError("labelstudio.labels must name at least one label")
    tiles = StorageLocation.from_uri(tiles_uri, "--tiles")
    annotations = StorageLocation.from_uri(annotations_uri, "--annotations")
    tile_pattern(params.regex_filter)
    url, token = labelstudio_url(), labelstudio_token()
    require_tiles(tiles, params.regex_filter)
    connection = connect(url, token)
    endpoint = params.s3_endpoint or endpoint_url()
    s3_settings = {"s3endpoint": endpoint, "region_name": region()}
    # A custom endpoint (MinIO in the cluster, a loopback server) is Label Studio's view of S3,
    # seldom the annotator's browser's: there Label Studio proxies the tiles itself.
    presign = params.presign if params.presign != "auto" else not endpoint
    credentials = s3_credentials()
    client = connection.client
    actions: dict[str, str] = {}
    with labelstudio_errors(connection.url):
        project, actions["project"] = ensure_project(
            client, params.title, label_config(params.labels)
        )
        import_storage, actions["import storage"] = ensure_storage(
            client.import_storage.s3,
            project.id,
            tiles,
            {
                **s3_settings,
                "title": f"tiles {tiles}",
                "regex_filter": params.regex_filter,
                "use_blob_urls": params.use_blob_urls,
                "presign": presign,
            },
            credentials,
            update_credentials,
        )
        export_storage, actions["export storage"] = ensure_storage(
            client.export_storage.s3,
            project.id,
            annotations,
            {**s3_settings, "title": f"annotations {annotations}"},
            credentials,
            update_credentials,
        )
        if actions["export storage"] == "created":
            client.export_storage.s3.sync(export_storage.id)  # annotations made before it
        synced = sync_import_storage(client, import_storage.id, params.sync_timeout_s)
        task_count = client.projects.get(project.id).task_number or 0
    return SetupResult(
        project_id=project.id,
        project_url=f"{connection.url}/projects/{project.id}/data",
        task_count=task_count,
        new_tasks=synced.last_sync_count or 0,
        actions=actions,
    )


def run_setup(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides).labelstudio
    result = setup_labelstudio(args.tiles, args.annotations, params, args.update_credentials)
    for name, action in result.actions.items():
        print(f"{name}: {action}")
    print(f"project: {result.project_url}")
    print(f"tasks: {result.task_count} ({result.new_tasks} new)")


def configure_setup(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``solarpipe labelstudio setup`` to ``parser``."""
    parser.add_argument("--tiles", required=True, metavar="URI", help="s3:// prefix of the tiles")
    parser.add_argument(
        "--annotations",
        required=True,
        metavar="URI",
        help="s3:// prefix where Label Studio writes annotations",
    )
    parser.add_argument(
        "--update-credentials",
        action="store_true",
        help="send the current AWS credentials to existing storages too (after a key rotation)",
    )
    add_params_options(parser)
    parser.set_defaults(handler=run_setup)
