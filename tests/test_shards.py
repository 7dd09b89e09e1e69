"""Shard logic on its own (fast): specs, the split of the windows, the seam merge, the merges
of parts, and the merge commands' bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.cli import main as solarpipe_main
from components.core.cpus import cgroup_cpu_limit
from components.core.errors import SolarpipeError, UsageError
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.prepare.run import lists_existing
from components.raster.windows import plan_grid
from components.shards.detections import DetectionPart, merged_collection, save_part
from components.shards.manifests import merge_manifests
from components.shards.seams import greedy_nms
from components.shards.spec import ShardSpec, parse_shard, part_uri, shard_cells

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, ShardSpec(0, 1)), ("0/1", ShardSpec(0, 1)), ("3/4", ShardSpec(3, 4))],
)
def test_shard_spec_parses_index_from_zero(text: str | None, expected: ShardSpec) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/2", "must be in 0..1"),
        ("2/2", "must be in 0..1"),
        ("0/0", "at least 1"),
        ("1", "expected I/N"),
        ("a/b", "expected I/N"),
        ("-1/2", "expected I/N"),
    ],
)
def test_bad_shard_spec_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard(text)


def test_part_uri_under_a_prefix_is_zero_padded_and_a_file_uri_is_kept() -> None:
    assert part_uri("s3://b/run/parts/", ShardSpec(3, 12), ".json") == (
        "s3://b/run/parts/shard-0003-of-0012.json"
    )
    assert part_uri("out/part.npz", ShardSpec(3, 12), ".npz") == "out/part.npz"


def test_shards_are_disjoint_cover_every_window_with_data_and_are_balanced() -> None:
    rng = np.random.default_rng(0)
    has_data = np.zeros((90, 130), dtype=bool)
    has_data[10:40, 70:125] = True  # most of the area is empty (outside the AOI, no file)
    has_data &= rng.random(has_data.shape) > 0.1
    for count in (1, 2, 3, 7, 50):
        parts = [shard_cells(has_data, ShardSpec(index, count)) for index in range(count)]
        union = np.concatenate(parts)
        assert len(union) == len(set(union.tolist()))  # disjoint
        assert sorted(union.tolist()) == np.flatnonzero(has_data).tolist()
        sizes = [len(part) for part in parts]
        assert max(sizes) - min(sizes) <= 1  # by windows with data, not by area


def test_a_shard_gets_compact_blocks_not_whole_rows() -> None:
    has_data = np.ones((64, 64), dtype=bool)
    cells = shard_cells(has_data, ShardSpec(0, 16), block=16)
    rows, columns = np.divmod(cells, 64)
    assert rows.max() - rows.min() == 15 and columns.max() - columns.min() == 15


def test_listing_or_head_whichever_asks_s3_less() -> None:
    assert lists_existing(total_windows=1000, shard_windows=1000)
    assert lists_existing(total_windows=63_000_000, shard_windows=63_000_000 // 10)
    assert not lists_existing(total_windows=63_000_000, shard_windows=63_000_000 // 10_000)


def test_cgroup_quota_caps_the_cpus(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("350000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 4
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def random_boxes(rng: np.random.Generator, count: int, extent: float) -> np.ndarray:
    corners = rng.uniform(0, extent, size=(count, 2))
    sizes = rng.uniform(5, 30, size=(count, 2))
    return np.hstack([corners, corners + sizes])


def test_greedy_nms_keeps_what_torchvision_keeps() -> None:
    torch = pytest.importorskip("torch")
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 400, 200)
    scores = rng.permutation(400) / 400 + 0.001  # distinct scores: one right answer
    labels = rng.integers(1, 3, 400)
    for threshold in (0.2, 0.5, 0.8):
        expected = batched_nms(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), threshold
        )
        kept = greedy_nms(boxes, scores, labels, threshold)
        assert kept.tolist() == sorted(expected.tolist())


def window_detections(grid, rng: np.random.Generator) -> dict[int, tuple]:
    """Made-up detections per window, some near seams, a twin pair across every column cut,
    equal scores too."""
    found = {}
    for row_index, column_index, window in grid.windows():
        x0, y0, x1, y1 = grid.owned_area(row_index, column_index)
        x0, y0 = max(x0, window.col_off), max(y0, window.row_off)
        x1, y1 = min(x1, window.col_off + grid.width), min(y1, window.row_off + grid.height)
        count = int(rng.integers(0, 6))
        centres = np.column_stack([rng.uniform(x0, x1, count), rng.uniform(y0, y1, count)])
        if column_index > 0:  # the right half of a twin pair across the cut on the left
            cut = grid.column_cuts[column_index - 1]
            centres = np.vstack([centres, [cut + 1.5, (y0 + y1) / 2]])
        if column_index < grid.shape[1] - 1:  # the left half of the pair on the right
            cut = grid.column_cuts[column_index]
            centres = np.vstack([centres, [cut - 1.5, (y0 + y1) / 2]])
        half = np.full((len(centres), 2), 8.0)
        boxes = np.hstack([centres - half, centres + half])
        scores = np.round(rng.uniform(0.3, 1, len(centres)), 1)  # rounded: equal scores happen
        labels = np.ones(len(centres), dtype=np.int64)
        labels[:count] = rng.integers(1, 3, count)
        found[row_index * grid.shape[1] + column_index] = (boxes, scores, labels)
    return found


def part_of(found: dict, cells: np.ndarray, meta: dict, shard: ShardSpec) -> DetectionPart:
    chosen = [found[int(cell)] for cell in cells]
    return DetectionPart(
        meta={**meta, "shard": str(shard), "windows": len(cells), "skipped_nodata": 0},
        boxes=np.concatenate([c[0] for c in chosen]).reshape(-1, 4),
        scores=np.concatenate([c[1] for c in chosen]),
        labels=np.concatenate([c[2] for c in chosen]).astype(np.int64),
        cells=np.concatenate([[int(cell)] * len(found[int(cell)][1]) for cell in cells]).astype(
            np.int64
        ),
    )


DETECT_META = {
    "raster": "scene.tif",
    "crs": "EPSG:2056",
    "transform": [0.1, 0.0, 2_600_000.0, 0.0, -0.1, 1_200_000.0],
    "width": 700,
    "height": 500,
    "window": 128,
    "overlap": 32,
    "classes": ["solar_panel", "water_heater"],
    "nms_iou": 0.3,
    "score_threshold": 0.3,
}


@pytest.mark.parametrize("count", [2, 3, 5])
def test_merged_shards_give_exactly_the_whole_runs_detections(count: int) -> None:
    grid = plan_grid(700, 500, 128, 32)
    found = window_detections(grid, np.random.default_rng(count))
    everything = np.ones(grid.shape, dtype=bool)
    whole = part_of(found, shard_cells(everything, ShardSpec(0, 1)), DETECT_META, ShardSpec(0, 1))
    shards = [
        part_of(
            found, shard_cells(everything, ShardSpec(i, count)), DETECT_META, ShardSpec(i, count)
        )
        for i in range(count)
    ]
    expected, expected_summary = merged_collection([whole])
    merged, summary = merged_collection(shards[::-1])  # the order parts arrive in is irrelevant
    assert json.dumps(merged) == json.dumps(expected)
    assert summary == expected_summary and summary.merged > 0


def manifest_part(shard: ShardSpec | None, rows: list[int], raster: str = "s.tif") -> Manifest:
    tiles = [
        TileRecord(
            key=f"s_0_{row}.png",
            uri=f"t/s_0_{row}.png",
            window=TileWindow(col_off=0, row_off=row, width=256, height=256),
            width=256,
            height=256,
            sha256="0" * 64,
            bytes=1,
            transform=(0.1, 0, 0, 0, -0.1, 0),
        )
        for row in rows
    ]
    return Manifest(
        raster=raster,
        scene="s",
        crs="EPSG:2056",
        raster_width=256,
        raster_height=2048,
        tile_size=256,
        overlap=0,
        tiles_prefix="t",
        tiles=tiles,
        shard=str(shard) if shard else None,
    )


def test_merged_manifest_has_the_bytes_of_the_whole_run(tmp_path: Path) -> None:
    save_manifest(str(tmp_path / "whole.json"), manifest_part(None, [0, 256, 512, 768]))
    save_manifest(
        str(tmp_path / "p/shard-0001-of-0002.json"), manifest_part(ShardSpec(1, 2), [512, 768])
    )
    save_manifest(
        str(tmp_path / "p/shard-0000-of-0002.json"), manifest_part(ShardSpec(0, 2), [0, 256])
    )
    merge_manifests([f"{tmp_path}/p/"], str(tmp_path / "by-prefix.json"))
    listed = json.dumps(
        [f"{tmp_path}/p/shard-0001-of-0002.json", f"{tmp_path}/p/shard-0000-of-0002.json"]
    )
    merge_manifests([listed], str(tmp_path / "by-list.json"))
    whole = (tmp_path / "whole.json").read_bytes()
    assert (tmp_path / "by-prefix.json").read_bytes() == whole
    assert (tmp_path / "by-list.json").read_bytes() == whole


def test_missing_duplicate_or_foreign_parts_merge_nothing(tmp_path: Path) -> None:
    for index in (0, 2):
        save_manifest(
            str(tmp_path / f"p/{ShardSpec(index, 3).part_name('.json')}"),
            manifest_part(ShardSpec(index, 3), [index * 256]),
        )
    out = tmp_path / "merged.json"
    with pytest.raises(SolarpipeError, match=r"shard 1/3 is missing .*nothing merged"):
        merge_manifests([f"{tmp_path}/p/"], str(out))
    first = f"{tmp_path}/p/shard-0000-of-0003.json"
    with pytest.raises(SolarpipeError, match="given twice"):
        merge_manifests([first, first], str(out))
    save_manifest(
        str(tmp_path / "q/shard-0001-of-0003.json"),
        manifest_part(ShardSpec(1, 3), [256], "other.tif"),
    )
    with pytest.raises(SolarpipeError, match=r"raster='other\.tif'"):
        merge_manifests([f"{tmp_path}/p/", f"{tmp_path}/q/"], str(out))
    assert not out.exists()


def run_cli(*argv: str) -> int:
    return solarpipe_main(list(argv))


def test_merge_commands_bad_inputs_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_manifest(
        str(tmp_path / "p/shard-0001-of-0002.json"), manifest_part(ShardSpec(1, 2), [256])
    )
    out = tmp_path / "merged.json"
    cases = [
        (["merge-manifests", "--parts", f"{tmp_path}/p/", "--out", str(out)], 1, "0/2 is missing"),
        (
            ["merge-manifests", "--parts", f"{tmp_path}/empty/", "--out", str(out)],
            1,
            "no shard parts",
        ),
        (["merge-manifests", "--parts", "[not json", "--out", str(out)], 2, "not a JSON list"),
        (
            ["merge-manifests", "--parts", f"{tmp_path}/absent.json", "--out", str(out)],
            1,
            "absent.json",
        ),
        (
            [
                "merge-detections",
                "--parts",
                str(tmp_path / "p/shard-0001-of-0002.json"),
                "--out",
                str(out),
            ],
            1,
            "not a detections part",
        ),
    ]
    for argv, status, message in cases:
        assert run_cli("shards", *argv) == status, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_merges_run_without_torch(tmp_path: Path) -> None:
    """The merges run in the light image: importing torch is made to fail, and they work."""
    grid = plan_grid(700, 500, 128, 32)
    found = window_detections(grid, np.random.default_rng(7))
    everything = np.ones(grid.shape, dtype=bool)
    for index in range(2):
        shard = ShardSpec(index, 2)
        save_part(
            str(tmp_path / "parts" / shard.part_name(".npz")),
            part_of(found, shard_cells(everything, shard), DETECT_META, shard),
        )
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "from components.core.entrypoint import run_tool\n"
        "from components.shards.cli import configure\n"
        f"sys.exit(run_tool('components.shards', configure, ['merge-detections', '--parts', "
        f"'{tmp_path}/parts/', '--out', '{tmp_path}/panels.geojson']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "duplicates merged at seams" in done.stdout
    collection = json.loads((tmp_path / "panels.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]


@pytest.mark.parametrize("e", [-0.1, 0.1])
def test_rings_are_closed_and_counter_clockwise_on_the_map(e: float) -> None:
    from affine import Affine

    from components.raster.geojson import box_rings

    rings = box_rings(np.array([[0.0, 0, 10, 5], [3, 4, 5, 9]]), Affine(0.1, 0, 2.6e6, 0, e, 1.2e6))
    for ring in rings:
        assert (ring[0] == ring[-1]).all()
        x, y = ring[:, 0], ring[:, 1]
        assert (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() > 0  # shoelace: positive = CCW
