"""The evaluate stage runs the exported TorchScript model on one split streamed from S3 and scores
it: mAP, precision/recall/F1 at the threshold, the PR curve, overlays of the worst and best."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, AnnotationsFile, save_annotations
from components.evaluate.__main__ import main as evaluate_main
from components.ml.matching import best_f1_threshold, match_image, precision_recall_f1
from components.ml.scripted import load_scripted_model
from tests.detector_fixture import panel_tile
from tests.tile_fixtures import png_bytes

TILE = 128
TRUTH_PER_TILE = 6  # the model's best boxes taken as truth on the "right" tiles


def run_evaluate(
    annotations: str, model: str, out: str, *overrides: str, report: Path | None = None
) -> int:
    argv = ["--annotations", annotations, "--model", model, "--out", out]
    for override in overrides:
        argv += ["--set", override]
    if report:
        argv += ["--report", "overlays", str(report)]
    return evaluate_main(argv)


def threshold_in_gap(scores: torch.Tensor, count: int) -> float:
    """A score threshold with exactly ``count`` scores above it, away from any score."""
    ordered = torch.sort(scores, descending=True).values
    while float(ordered[count - 1] - ordered[count]) < 1e-4:
        count += 1
    return float(ordered[count - 1] + ordered[count]) / 2


def write_split(bucket: str, model: torch.jit.ScriptModule) -> tuple[str, float, dict[str, int]]:
    """Four test tiles on S3 (plus one train tile). On tiles 0-1 the truth is the model's own
    best boxes ("right" tiles); on tiles 2-3 it is 4-px boxes no prediction overlaps enough."""
    rng = np.random.default_rng(11)
    tiles = [panel_tile(rng, TILE)[0] for _ in range(5)]
    with torch.inference_mode():
        outputs = model(
            [torch.from_numpy(pixels.copy()).permute(2, 0, 1) / 255 for pixels in tiles], 0.0
        )
    threshold = max(threshold_in_gap(output["scores"], TRUTH_PER_TILE) for output in outputs[:2])
    images, expected = [], {"tp": 0, "fp": 0, "fn": 0}
    for index, (pixels, output) in enumerate(zip(tiles, outputs, strict=True)):
        uri = f"s3://{bucket}/tiles/t_{index}.png"
        uri_io.write_bytes(uri, png_bytes(pixels), content_type="image/png")
        kept = output["boxes"][output["scores"] >= threshold]
        if index < 2:
            boxes = [tuple(box) for box in kept.tolist()]
            expected["tp"] += len(boxes)
        elif index < 4:
            boxes = [(0.0, 0.0, 4.0, 4.0), (TILE - 4.0, TILE - 4.0, TILE, TILE)]
            expected["fp"] += len(kept)
            expected["fn"] += len(boxes)
        else:  # a train tile: not evaluated
            boxes = [(0.0, 0.0, 4.0, 4.0)]
        split = "test" if index < 4 else "train"
        images.append(
            AnnotatedImage(
                image=uri,
                width=TILE,
                height=TILE,
                boxes=boxes,
                labels=["solar_panel"] * len(boxes),
                split=split,
            )
        )
    annotations_uri = f"s3://{bucket}/annotations.json"
    save_annotations(annotations_uri, AnnotationsFile(classes=["solar_panel"], images=images))
    return annotations_uri, threshold, expected


def one_tile_annotations(bucket: str) -> str:
    """Annotations naming one test tile that is never fetched (the run fails before)."""
    uri = f"s3://{bucket}/annotations.json"
    record = AnnotatedImage(
        image=f"s3://{bucket}/t.png", width=TILE, height=TILE, boxes=[], labels=[], split="test"
    )
    save_annotations(uri, AnnotationsFile(classes=["solar_panel"], images=[record]))
    return uri


def test_metrics_curve_and_overlays_from_the_torchscript_model(
    exported: Path, bucket: str, tmp_path: Path
) -> None:
    model = load_scripted_model(str(exported))
    annotations, threshold, expected = write_split(bucket, model)
    uri_io.upload_file(exported / "model.pt", f"s3://{bucket}/export/model.pt")
    out = f"s3://{bucket}/evaluate"
    report = tmp_path / "artifacts" / "overlays"

    status = run_evaluate(
        annotations,
        f"s3://{bucket}/export",  # the export prefix: model.pt inside it
        out,
        f"evaluate.score_threshold={threshold}",
        "evaluate.overlays=1",
        report=report,
    )

    assert status == 0
    metrics = uri_io.read_json(f"{out}/metrics.json")
    assert all(isinstance(value, int | float) for value in metrics.values())  # flat, numeric
    assert metrics["images"] == 4
    assert (metrics["true_positives"], metrics["false_positives"], metrics["false_negatives"]) == (
        expected["tp"],
        expected["fp"],
        expected["fn"],
    )
    tp, fp, fn = expected["tp"], expected["fp"], expected["fn"]
    precision, recall = tp / (tp + fp), tp / (tp + fn)  # by hand, not by the stage's helper
    f1 = 2 * precision * recall / (precision + recall)
    assert metrics["precision"] == pytest.approx(precision, abs=1e-6)
    assert metrics["recall"] == pytest.approx(recall, abs=1e-6)
    assert metrics["f1"] == pytest.approx(f1, abs=1e-6)
    assert 0 < metrics["map_50"] < 1 and 0 <= metrics["map_75"] <= metrics["map_50"]

    curve = uri_io.read_json(f"{out}/pr_curve.json")
    assert [row["threshold"] for row in curve] == [round(i / 100, 2) for i in range(101)]
    recalls = [row["recall"] for row in curve]
    assert recalls == sorted(recalls, reverse=True)  # fewer boxes kept, never more found

    overlays = sorted(uri_io.basename(o.uri) for o in uri_io.list_objects(f"{out}/overlays"))
    assert len(overlays) == 2
    assert overlays[0].startswith("best_01_t_") and overlays[0][-5] in "01"  # a "right" tile
    assert overlays[1].startswith("worst_01_t_") and overlays[1][-5] in "23"
    overlay = np.asarray(Image.open(io.BytesIO(uri_io.read_bytes(f"{out}/overlays/{overlays[1]}"))))
    assert (overlay[1, 1] == (0, 255, 0)).all()  # the truth box at the corner, in green

    page = uri_io.read_text(f"{out}/overlays.html")
    assert page == report.read_text(), "the --report page is the one in the output folder"
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    inlined = base64.b64decode(sources[1].split(",", 1)[1])
    assert inlined == uri_io.read_bytes(f"{out}/overlays/{overlays[1]}")  # worst, after best
    assert f"<th>mAP@0.5</th><td>{metrics['map_50']:.3f}</td>" in page


def test_model_against_its_own_detections_is_perfect(
    exported: Path, bucket: str, tmp_path: Path
) -> None:
    model = load_scripted_model(str(exported))
    annotations, threshold, expected = write_split(bucket, model)
    only_right = AnnotationsFile.model_validate(uri_io.read_json(annotations))
    for image in only_right.images[2:4]:
        image.split = "val"
    save_annotations(annotations, only_right)

    assert (
        run_evaluate(
            annotations,
            str(exported),
            str(tmp_path / "ev"),
            f"evaluate.score_threshold={threshold}",
        )
        == 0
    )

    metrics = uri_io.read_json(str(tmp_path / "ev" / "metrics.json"))
    assert metrics["true_positives"] == expected["tp"] == metrics["truth_boxes"]
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (1.0, 1.0, 1.0)
    assert metrics["map_50"] == pytest.approx(1.0) and metrics["map"] == pytest.approx(1.0)


def test_greedy_matching_is_per_class_and_one_to_one() -> None:
    truth = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    predictions = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    matches = match_image(
        predictions,
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([1, 1, 2]),
        truth,
        torch.tensor([1, 1]),
        0.5,
    )
    # The second box on the first panel is a duplicate; the third has the wrong class.
    assert matches.true_positive.tolist() == [True, False, False]
    assert matches.counts(0.0) == (1, 2, 1)
    assert matches.counts(0.85) == (1, 0, 1)
    assert precision_recall_f1(0, 0, 3) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 0, 0) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(("tiles_m", "mismatch"), [(0.1, False), (0.2, True)])
def test_metrics_name_the_pixel_size_scored_at(
    tiles_m: float, mismatch: bool, exported: Path, bucket: str, tmp_path: Path, capsys
) -> None:
    model = load_scripted_model(str(exported))
    annotations, _, _ = write_split(bucket, model)
    recorded = AnnotationsFile.model_validate(uri_io.read_json(annotations))
    recorded.pixel_size_m = tiles_m
    save_annotations(annotations, recorded)

    assert run_evaluate(annotations, str(exported), str(tmp_path / "ev")) == 0

    metrics = uri_io.read_json(str(tmp_path / "ev" / "metrics.json"))
    assert metrics["pixel_size_m"] == tiles_m and metrics["model_pixel_size_m"] == 0.1
    assert metrics["score_threshold"] == pytest.approx(float(model.score_threshold))
    printed = capsys.readouterr()
    assert f"at score ≥ 0.3, {tiles_m} m pixels" in printed.out
    assert "assuming 0.1 m" in printed.err  # the fixture model records no pixel size
    assert ("model-input pixels, the model's are 0.1 m" in printed.err) == mismatch


def test_empty_split_is_an_error(exported: Path, bucket: str, tmp_path: Path, capsys) -> None:
    uri = f"s3://{bucket}/annotations.json"
    save_annotations(uri, AnnotationsFile(classes=["solar_panel"], images=[]))
    assert run_evaluate(uri, str(exported), str(tmp_path / "ev")) == 1
    assert "no test tiles" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_model_that_is_not_torchscript_is_refused(
    exported: Path, bucket: str, tmp_path: Path, capsys
) -> None:
    annotations = one_tile_annotations(bucket)
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"PK\x03\x04 definitely not a TorchScript archive")

    assert run_evaluate(annotations, str(not_a_model), str(tmp_path / "ev")) == 1

    error = capsys.readouterr().err.strip()
    assert error.startswith("components.evaluate: error: not a TorchScript model:")
    assert str(not_a_model) in error
    assert not (tmp_path / "ev").exists()


def test_missing_tile_is_named(exported: Path, bucket: str, tmp_path: Path, capsys) -> None:
    model = load_scripted_model(str(exported))
    annotations, _, _ = write_split(bucket, model)
    uri_io.delete(f"s3://{bucket}/tiles/t_1.png")
    assert run_evaluate(annotations, str(exported), str(tmp_path / "ev")) == 1
    assert f"s3://{bucket}/tiles/t_1.png" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_cuda_requested_without_cuda_is_an_error(
    exported: Path, bucket: str, tmp_path: Path, capsys, without_cuda
) -> None:
    annotations = one_tile_annotations(bucket)
    assert (
        run_evaluate(annotations, str(exported), str(tmp_path / "ev"), "evaluate.device=cuda") == 1
    )
    assert "evaluate.device=cuda but CUDA is not available" in capsys.readouterr().err


def test_operating_point_is_the_middle_of_the_thresholds_with_the_best_f1() -> None:
    """Two panels, three predictions: hits scored 0.9 and 0.5, a miss scored 0.2. F1 is 0.8
    up to 0.20, 1.0 from 0.21 to 0.50, 0.67 to 0.90, then 0: the middle of 0.21-0.50."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30], [50.0, 50, 60, 60]])
    truth = boxes[:2]
    ones = torch.ones(3, dtype=torch.int64)
    matches = match_image(boxes, torch.tensor([0.9, 0.5, 0.2]), ones, truth, ones[:2], 0.5)

    point = best_f1_threshold([matches])

    assert (point.threshold, point.precision, point.recall, point.f1) == (0.36, 1.0, 1.0, 1.0)
