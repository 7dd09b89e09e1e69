"""The preview stage on the embedded S3: a seeded sample per split, boxes drawn in the box colour,
an index.html gallery and a markdown summary, written atomically."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, AnnotationsFile, save_annotations
from components.core.draw import BOX_COLOUR
from components.preview.__main__ import main as preview_main

TILE = 64
GREY = (120, 120, 120)
SPLIT_OF = ["train"] * 8 + ["val"] * 2 + ["test"] * 2


def write_inputs(bucket: str) -> str:
    """Twelve grey tiles on S3 (8 train, 2 val, 2 test), each with one box but the last."""
    grey_png = io.BytesIO()
    Image.new("RGB", (TILE, TILE), GREY).save(grey_png, format="PNG")
    images = []
    for index, split in enumerate(SPLIT_OF):
        tile_uri = f"s3://{bucket}/tiles/t_{index:02d}.png"
        uri_io.write_bytes(tile_uri, grey_png.getvalue(), content_type="image/png")
        boxes = [(10.0, 20.0, 40.0, 30.0)] if index < len(SPLIT_OF) - 1 else []
        images.append(
            AnnotatedImage(
                image=tile_uri,
                width=TILE,
                height=TILE,
                boxes=boxes,
                labels=["solar_panel"] * len(boxes),
                split=split,
            )
        )
    annotations_uri = f"s3://{bucket}/annotations.json"
    save_annotations(annotations_uri, AnnotationsFile(classes=["solar_panel"], images=images))
    return annotations_uri


def run_preview(annotations: str, out: str, *overrides: str) -> int:
    argv = ["--annotations", annotations, "--out", out]
    for override in overrides:
        argv += ["--set", override]
    return preview_main(argv)


def test_gallery_has_samples_per_split_with_boxes_drawn(bucket: str, tmp_path: Path) -> None:
    annotations = write_inputs(bucket)
    out = tmp_path / "preview"
    assert run_preview(annotations, str(out), "preview.samples=3", "preview.line_width=2") == 0
    drawn = sorted(p.name for p in (out / "images").iterdir())
    assert [name.split("-")[0] for name in drawn].count("train") == 3
    assert sum(name.startswith(("val-", "test-")) for name in drawn) == 4
    pixels = np.asarray(Image.open(out / "images" / "val-t_08.png").convert("RGB"))
    assert tuple(pixels[20, 10]) == BOX_COLOUR and tuple(pixels[29, 39]) == BOX_COLOUR
    assert tuple(pixels[25, 25]) == GREY and tuple(pixels[5, 5]) == GREY
    assert (pixels == BOX_COLOUR).all(axis=2).sum() > 100
    empty = np.asarray(Image.open(out / "images" / "test-t_11.png").convert("RGB"))
    assert not (empty == BOX_COLOUR).all(axis=2).any()
    page = (out / "index.html").read_text()
    assert all(f'src="images/{name}"' in page for name in drawn)
    summary = (out / "summary.md").read_text()
    assert "| train | 8 | 8 | 0 | 8 |" in summary and "| test | 2 | 1 | 1 | 1 |" in summary
    assert not (out / "mlpipeline-ui-metadata.json").exists(), "KFP v1's file: v2 reads artifacts"


def test_gallery_report_is_one_page_with_the_drawn_images_inside(
    bucket: str, tmp_path: Path
) -> None:
    """KFP's HTML viewer shows self-contained pages only: every image is a data URI."""
    annotations = write_inputs(bucket)
    out, report = tmp_path / "preview", tmp_path / "artifacts" / "gallery.html"
    argv = ["--annotations", annotations, "--out", str(out), "--report", "gallery", str(report)]
    assert preview_main([*argv, "--set", "preview.samples=2"]) == 0
    page = report.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(list((out / "images").iterdir())) == 6
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        drawn = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert drawn.size == (TILE, TILE)
    assert "| train | 8 | 8 | 0 | 8 |" in page


def test_unknown_report_is_exit_2_naming_the_known_ones(
    bucket: str, tmp_path: Path, capsys
) -> None:
    argv = ["--annotations", "a.json", "--out", str(tmp_path / "p"), "--report", "curve", "x.md"]
    assert preview_main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "components.preview: error: --report curve: preview has reports gallery"
    )


def test_sample_choice_is_seeded(bucket: str, tmp_path: Path) -> None:
    annotations = write_inputs(bucket)

    def train_sample(out: Path, seed: int) -> list[str]:
        assert run_preview(annotations, str(out), "preview.samples=3", f"preview.seed={seed}") == 0
        return sorted(p.name for p in (out / "images").glob("train-*"))

    first = train_sample(tmp_path / "a", 0)
    assert train_sample(tmp_path / "b", 0) == first
    assert any(train_sample(tmp_path / f"s{seed}", seed) != first for seed in range(1, 6))


def test_output_to_an_s3_prefix(bucket: str) -> None:
    annotations = write_inputs(bucket)
    assert run_preview(annotations, f"s3://{bucket}/preview", "preview.samples=1") == 0
    written = sorted(info.uri for info in uri_io.list_objects(f"s3://{bucket}/preview"))
    assert f"s3://{bucket}/preview/index.html" in written
    assert sum(uri.endswith(".png") for uri in written) == 3


def test_missing_tile_fails_and_keeps_the_old_gallery(bucket: str, tmp_path: Path, capsys) -> None:
    annotations = write_inputs(bucket)
    out = tmp_path / "preview"
    assert run_preview(annotations, str(out)) == 0
    before = (out / "index.html").read_text()
    uri_io.delete(f"s3://{bucket}/tiles/t_09.png")
    assert run_preview(annotations, str(out)) == 1
    assert f"s3://{bucket}/tiles/t_09.png" in capsys.readouterr().err
    assert (out / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview"]


def test_missing_annotations_file_is_named(bucket: str, tmp_path: Path, capsys) -> None:
    assert run_preview(f"s3://{bucket}/none.json", str(tmp_path / "p")) == 1
    assert f"s3://{bucket}/none.json" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
