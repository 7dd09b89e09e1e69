"""``solarpipe labelstudio setup`` against a real Label Studio server and the embedded S3.

The server runs from ``.venv-labelstudio`` (``scripts/install-labelstudio.sh``); without it the
``labelstudio`` tests skip, or fail when ``SOLARPIPE_REQUIRE_LABELSTUDIO`` is set (CI). The last
test labels tiles through the SDK, lets the server write its export objects to S3, and runs the
preprocess stage on them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.s3server import EmbeddedS3, free_port
from tests.labelstudio_server import LabelStudioServer

TILE_WIDTH, TILE_HEIGHT = 80, 60  # not square: catches swapped axes in percent → pixels
LABEL = "solar_panel"
EXPORT_WAIT_S = 20.0


@pytest.fixture(autouse=True)
def default_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder: params are the built-in defaults plus each test's ``--set``."""
    monkeypatch.chdir(tmp_path)


def sdk_client(server: LabelStudioServer, token: str | None = None) -> Any:
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=token or server.token)


def write_tiles(prefix: str, names: list[str]) -> list[TileRecord]:
    """Small distinct PNG tiles under ``prefix``, and their manifest records."""
    records = []
    for index, name in enumerate(names):
        buffer = io.BytesIO()
        Image.new("RGB", (TILE_WIDTH, TILE_HEIGHT), (index * 20 % 256, 90, 140)).save(buffer, "PNG")
        tile_uri = uri_io.join(prefix, name)
        uri_io.write_bytes(tile_uri, buffer.getvalue(), content_type="image/png")
        records.append(
            TileRecord(
                key=name,
                uri=tile_uri,
                window=TileWindow(
                    col_off=index * TILE_WIDTH, row_off=0, width=TILE_WIDTH, height=TILE_HEIGHT
                ),
                width=TILE_WIDTH,
                height=TILE_HEIGHT,
                sha256="0" * 64,
                bytes=len(buffer.getvalue()),
                transform=(0.1, 0.0, 2600000.0 + index * 8, 0.0, -0.1, 1200000.0),
            )
        )
    return records


def run_setup(tiles: str, annotations: str, *settings: str) -> int:
    overrides = [item for setting in settings for item in ("--set", setting)]
    return solarpipe(
        ["labelstudio", "setup", "--tiles", tiles, "--annotations", annotations, *overrides]
    )


def projects_titled(client: Any, title: str) -> list[Any]:
    return [project for project in client.projects.list() if project.title == title]


@pytest.mark.labelstudio
def test_tiles_reach_the_browser_through_the_server_when_s3_is_not_the_browsers(
    labelstudio: LabelStudioServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    """In a cluster the S3 endpoint Label Studio uses is not one the annotator's browser reaches:
    with presign auto (the default) the task's image URL points at Label Studio itself, which
    streams the tile from S3."""
    tiles_prefix = f"s3://{bucket}/proxied/tiles"
    [tile] = write_tiles(tiles_prefix, ["scene_0_0.png"])
    title = f"proxied {bucket}"
    assert run_setup(tiles_prefix, f"s3://{bucket}/proxied/ann", f"labelstudio.title={title}") == 0
    client = sdk_client(labelstudio)
    [project] = projects_titled(client, title)
    [task] = list(client.tasks.list(project=project.id, resolve_uri=True))
    image_url = task.data["image"]
    assert not image_url.startswith(("s3://", s3_server.endpoint)), image_url
    absolute = image_url if image_url.startswith("http") else f"{labelstudio.url}{image_url}"
    assert absolute.startswith(labelstudio.url)
    request = urllib.request.Request(
        absolute, headers={"Authorization": f"Token {labelstudio.token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.read() == uri_io.read_bytes(tile.uri)


@pytest.mark.labelstudio
def test_setup_twice_makes_one_project_two_storages_and_one_task_per_tile(
    labelstudio: LabelStudioServer,
    s3_server: EmbeddedS3,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiles_prefix = f"s3://{bucket}/run/tiles"
    annotations_prefix = f"s3://{bucket}/run/annotations"
    tiles = write_tiles(tiles_prefix, ["scene_0_0.png", "scene_80_0.png", "scene_160_0.png"])
    uri_io.write_text(uri_io.join(tiles_prefix, "notes.txt"), "not a tile")
    title = f"twice {bucket}"

    assert run_setup(tiles_prefix, annotations_prefix, f"labelstudio.title={title}") == 0
    first = capsys.readouterr()
    assert "project: created" in first.out
    assert "import storage: created" in first.out
    assert "export storage: created" in first.out
    assert "tasks: 3 (3 new)" in first.out

    assert run_setup(tiles_prefix, annotations_prefix, f"labelstudio.title={title}") == 0
    second = capsys.readouterr()
    for name in ("project", "import storage", "export storage"):
        assert f"{name}: unchanged" in second.out
    assert "tasks: 3 (0 new)" in second.out
    for output in (first, second):
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in output.out + output.err

    client = sdk_client(labelstudio)
    [project] = projects_titled(client, title)
    assert f"project: {labelstudio.url}/projects/{project.id}/data" in second.out
    [import_storage] = client.import_storage.s3.list(project=project.id)
    assert (import_storage.bucket, import_storage.prefix) == (bucket, "run/tiles")
    assert import_storage.s3endpoint == s3_server.endpoint
    assert import_storage.regex_filter == r".*\.png$"
    assert import_storage.use_blob_urls
    assert not import_storage.presign, "a custom endpoint: Label Studio proxies the tiles"
    [export_storage] = client.export_storage.s3.list(project=project.id)
    assert (export_storage.bucket, export_storage.prefix) == (bucket, "run/annotations")
    task_images = [
        task.data["image"] for task in client.tasks.list(project=project.id, resolve_uri=False)
    ]
    assert sorted(task_images) == sorted(tile.uri for tile in tiles)

    write_tiles(tiles_prefix, ["scene_240_0.png"])
    assert run_setup(tiles_prefix, annotations_prefix, f"labelstudio.title={title}") == 0
    assert "tasks: 4 (1 new)" in capsys.readouterr().out
    assert len(projects_titled(client, title)) == 1

    rotated = ["--tiles", tiles_prefix, "--annotations", annotations_prefix, "--update-credentials"]
    assert solarpipe(["labelstudio", "setup", *rotated, "--set", f"labelstudio.title={title}"]) == 0
    after_rotation = capsys.readouterr().out
    assert "project: unchanged" in after_rotation
    assert "import storage: updated" in after_rotation
    assert "export storage: updated" in after_rotation
    assert len(client.import_storage.s3.list(project=project.id)) == 1


@pytest.mark.labelstudio
def test_changed_labels_update_the_project_label_config(
    labelstudio: LabelStudioServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles_prefix = f"s3://{bucket}/tiles"
    write_tiles(tiles_prefix, ["a_0_0.png"])
    title = f"labels {bucket}"
    assert run_setup(tiles_prefix, f"s3://{bucket}/ann", f"labelstudio.title={title}") == 0
    capsys.readouterr()

    settings = (f"labelstudio.title={title}", "labelstudio.labels=[solar_panel, solar_thermal]")
    assert run_setup(tiles_prefix, f"s3://{bucket}/ann", *settings) == 0
    output = capsys.readouterr().out
    assert "project: updated" in output
    assert "tasks: 1 (0 new)" in output
    assert run_setup(tiles_prefix, f"s3://{bucket}/ann", *settings) == 0
    assert "project: unchanged" in capsys.readouterr().out
    [project] = projects_titled(sdk_client(labelstudio), title)
    assert 'value="solar_thermal"' in project.label_config


@pytest.mark.labelstudio
def test_personal_access_token_is_accepted(
    labelstudio: LabelStudioServer,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    personal_token = sdk_client(labelstudio).tokens.create().token
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", personal_token)
    tiles_prefix = f"s3://{bucket}/tiles"
    write_tiles(tiles_prefix, ["a_0_0.png", "a_80_0.png"])
    assert run_setup(tiles_prefix, f"s3://{bucket}/ann", f"labelstudio.title=pat {bucket}") == 0
    assert "tasks: 2 (2 new)" in capsys.readouterr().out


@pytest.mark.labelstudio
def test_rejected_token_is_one_line_and_exit_1(
    labelstudio: LabelStudioServer,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    write_tiles(f"s3://{bucket}/tiles", ["a_0_0.png"])
    assert run_setup(f"s3://{bucket}/tiles", f"s3://{bucket}/ann") == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "rejected the token (HTTP 401" in error and "LABEL_STUDIO_API_KEY" in error


def test_unreachable_server_is_one_line_and_exit_1(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    write_tiles(f"s3://{bucket}/tiles", ["a_0_0.png"])
    assert run_setup(f"s3://{bucket}/tiles", f"s3://{bucket}/ann") == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"cannot reach Label Studio at {url}" in error


def test_prefix_without_tiles_is_one_line_and_exit_1(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    uri_io.write_text(f"s3://{bucket}/tiles/notes.txt", "not a tile")
    write_tiles(f"s3://{bucket}/tiles/nested", ["a_0_0.png"])  # Label Studio does not recurse
    assert run_setup(f"s3://{bucket}/tiles", f"s3://{bucket}/ann") == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"no tiles under s3://{bucket}/tiles match" in error


@pytest.mark.parametrize(
    ("environment", "tiles", "settings", "expected"),
    [
        ({"LABEL_STUDIO_API_KEY": "x"}, "s3://b/tiles", [], "set LABEL_STUDIO_URL"),
        (
            {"LABEL_STUDIO_URL": "localhost:8", "LABEL_STUDIO_API_KEY": "x"},
            "s3://b/t",
            [],
            "scheme",
        ),
        ({"LABEL_STUDIO_URL": "http://127.0.0.1:9"}, "s3://b/t", [], "set LABEL_STUDIO_API_KEY"),
        ({}, "data/tiles", [], "--tiles must be an s3:// prefix"),
        ({}, "s3://b/t", ["labelstudio.regex_filter=(png"], "labelstudio.regex_filter"),
        ({}, "s3://b/t", ["labelstudio.labels=[]"], "labelstudio.labels"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(
    environment: dict[str, str],
    tiles: str,
    settings: list[str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert run_setup(tiles, "s3://b/annotations", *settings) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error


def rectangle(
    x: float, y: float, width: float, height: float, rotation: float = 0.0
) -> dict[str, Any]:
    """One rectangle result as the labeling UI sends it (percent of the image size)."""
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": TILE_WIDTH,
        "original_height": TILE_HEIGHT,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": y,
            "width": width,
            "height": height,
            "rotation": rotation,
            "rectanglelabels": [LABEL],
        },
    }


def wait_for_export_objects(prefix: str, annotation_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The export objects the server wrote, by annotation id (keys like ``prefix//12`` too)."""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        objects = {
            int(info.uri.rstrip("/").rsplit("/", 1)[-1]): json.loads(uri_io.read_bytes(info.uri))
            for info in uri_io.list_objects(prefix)
        }
        if annotation_ids <= objects.keys() or time.monotonic() > deadline:
            return objects
        time.sleep(0.5)


@pytest.mark.labelstudio
def test_server_exports_feed_preprocess(
    labelstudio: LabelStudioServer,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Label tiles through the SDK; preprocess what the server wrote to S3."""
    tiles_prefix = f"s3://{bucket}/run/tiles"
    annotations_prefix = f"s3://{bucket}/run/annotations"
    names = {
        "box": "t_0_0.png",
        "rotated": "t_80_0.png",
        "empty": "t_160_0.png",
        "cancelled": "t_240_0.png",
        "updated": "t_320_0.png",
        "relabelled": "t_400_0.png",
        "two_boxes": "t_480_0.png",
        "unlabelled": "t_560_0.png",
    }
    records = write_tiles(tiles_prefix, list(names.values()))
    manifest_uri = f"s3://{bucket}/run/manifest.json"
    save_manifest(
        manifest_uri,
        Manifest(
            raster=f"s3://{bucket}/scene.tif",
            scene="t",
            crs="EPSG:2056",
            raster_width=TILE_WIDTH * len(records),
            raster_height=TILE_HEIGHT,
            tile_size=TILE_WIDTH,
            overlap=0,
            tiles_prefix=tiles_prefix,
            tiles=records,
        ),
    )
    title = f"export {bucket}"
    assert run_setup(tiles_prefix, annotations_prefix, f"labelstudio.title={title}") == 0
    capsys.readouterr()

    client = sdk_client(labelstudio)
    [project] = projects_titled(client, title)
    task_by_tile = {
        uri_io.basename(task.data["image"]): task.id
        for task in client.tasks.list(project=project.id, resolve_uri=False)
    }
    task = {case: task_by_tile[name] for case, name in names.items()}

    def annotate(case: str, result: list[dict[str, Any]], **fields: Any) -> int:
        return client.annotations.create(id=task[case], result=result, **fields).id

    annotation_ids = {
        annotate("box", [rectangle(10, 20, 30, 25)]),
        annotate("rotated", [rectangle(50, 10, 20, 20, rotation=90)]),
        annotate("empty", []),
        annotate("cancelled", [], was_cancelled=True),
        annotate("relabelled", [rectangle(5, 5, 10, 10)]),
        annotate("two_boxes", [rectangle(0, 0, 25, 50), rectangle(75, 50, 25, 50)]),
    }
    updated_id = annotate("updated", [rectangle(0, 0, 10, 10)])
    client.annotations.update(id=updated_id, result=[rectangle(60, 50, 25, 40)])
    relabelled_id = annotate("relabelled", [rectangle(70, 60, 20, 20)])
    annotation_ids |= {updated_id, relabelled_id}

    exported = wait_for_export_objects(annotations_prefix, annotation_ids)
    assert annotation_ids <= exported.keys()
    assert exported[updated_id]["result"][0]["value"]["x"] == 60
    assert exported[updated_id]["task"]["data"]["image"] == uri_io.join(
        tiles_prefix, names["updated"]
    )

    out_uri = f"s3://{bucket}/run/preprocess/annotations.json"
    settings = [
        "preprocess.max_empty_fraction=null",
        "preprocess.min_box_size=1",
        "preprocess.split={train: 0.5, val: 0.25, test: 0.25}",
    ]
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "components.preprocess"),
            *("--annotations", annotations_prefix, "--manifest", manifest_uri, "--out", out_uri),
            *(item for setting in settings for item in ("--set", setting)),
        ],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    by_tile = {uri_io.basename(image.image): image for image in load_annotations(out_uri).images}

    assert set(by_tile) == {
        names[case] for case in ("box", "rotated", "empty", "updated", "relabelled", "two_boxes")
    }
    # Percent of 80 x 60 px → pixels. The rotated one turns 90° clockwise about its top-left
    # corner (40, 6): its 16 x 12 px body ends up spanning x 28..40 and y 6..22.
    expected_boxes = {
        "box": [(8, 12, 32, 27)],
        "rotated": [(28, 6, 40, 22)],
        "empty": [],
        "updated": [(48, 30, 68, 54)],
        "relabelled": [(56, 36, 72, 48)],
        "two_boxes": [(0, 0, 20, 30), (60, 30, 80, 60)],
    }
    for case, boxes in expected_boxes.items():
        image = by_tile[names[case]]
        assert len(image.boxes) == len(boxes), case
        for box, expected_box in zip(sorted(image.boxes), boxes, strict=True):
            assert box == pytest.approx(expected_box), case
        assert image.labels == [LABEL] * len(boxes)
        assert (image.width, image.height, image.task_id) == (TILE_WIDTH, TILE_HEIGHT, task[case])
