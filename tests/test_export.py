"""The export stage: TorchScript model with resize and rescale inside, parity check, BentoML
archive with metadata, one-line errors for bad checkpoints, atomic output."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import bentoml
import lightning
import pytest
import torch
import torch.nn.functional as F
from bentoml._internal.models import ModelStore

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.params import TrainParams
from components.export.__main__ import main as export_main
from components.export.parity import check_parity, sample_images
from components.ml.checkpoint import DetectorSpec, load_detector_checkpoint
from components.ml.detector import build_detector
from components.ml.scripted import ServedDetector, load_scripted_model, resolve_device
from tests.detector_fixture import (
    ARCH,
    CLASSES,
    IMAGE_SIZE,
    cached_checkpoint,
    write_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_checkpoint(tmp_path_factory.getbasetemp())


def run_export(checkpoint: str, out: str, *overrides: str) -> int:
    argv = ["--checkpoint", checkpoint, "--out", out]
    for override in overrides:
        argv += ["--set", override]
    return export_main(argv)


def test_export_from_s3_to_s3_writes_model_archive_and_summary(
    checkpoint: Path, bucket: str, tmp_path: Path
) -> None:
    uri_io.upload_file(checkpoint, f"s3://{bucket}/train/model.ckpt")
    uri_io.write_json(f"s3://{bucket}/train/metrics.json", {"val_map_50": 0.75, "epochs": 3})
    out = f"s3://{bucket}/export"

    assert run_export(f"s3://{bucket}/train/model.ckpt", out) == 0

    names = sorted(uri_io.basename(o.uri) for o in uri_io.list_objects(out))
    assert names == ["_SUCCESS", "export.json", "model.pt", "solar_panel_detector.tar.gz"]
    assert set(uri_io.read_json(f"{out}/_SUCCESS")["files"]) == set(names[1:])
    model = load_scripted_model(out)  # the prefix: model.pt inside it
    assert (model.arch, model.image_size, list(model.classes)) == (ARCH, IMAGE_SIZE, CLASSES)
    assert model.score_threshold == pytest.approx(0.3)
    summary = uri_io.read_json(f"{out}/export.json")
    assert summary["parity"]["max_box_diff"] <= summary["parity"]["atol"]
    assert summary["parity"]["images"] == 4 and summary["parity"]["detections"] > 0

    archive = tmp_path / "solar_panel_detector.tar.gz"
    uri_io.download_file(f"{out}/solar_panel_detector.tar.gz", archive)
    with tarfile.open(archive, "r:gz") as tar:  # gzip, as the name says
        assert "./model.pt" in tar.getnames()
    imported = bentoml.models.import_model(str(archive), _model_store=ModelStore(tmp_path / "home"))
    assert str(imported.tag) == summary["bento_tag"]
    metadata = imported.info.metadata
    assert metadata["image_size"] == IMAGE_SIZE and metadata["classes"] == CLASSES
    assert metadata["score_threshold"] == pytest.approx(0.3)
    assert metadata["metrics"] == {"val_map_50": 0.75, "epochs": 3}
    assert metadata["torch_version"] == str(torch.__version__)
    assert imported.info.labels["arch"] == ARCH
    packaged = Path(imported.path_of("model.pt")).read_bytes()
    assert packaged == uri_io.read_bytes(f"{out}/model.pt")


def test_scripted_model_gives_boxes_in_the_input_pixels(exported: Path) -> None:
    model = load_scripted_model(str(exported / "model.pt"))
    torch.manual_seed(1)
    height, width = 96, 200
    picture = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8)
    as_float = picture.permute(2, 0, 1).float() / 255
    resized = F.interpolate(
        as_float[None], size=[IMAGE_SIZE] * 2, mode="bilinear", align_corners=False, antialias=True
    )[0]
    with torch.inference_mode():
        from_uint8, from_float, at_model_size = model([picture, as_float, resized], 0.0)

    assert len(from_uint8["boxes"]) > 0
    torch.testing.assert_close(from_uint8["boxes"], from_float["boxes"])
    scale = torch.tensor([width / IMAGE_SIZE, height / IMAGE_SIZE] * 2)
    torch.testing.assert_close(from_uint8["boxes"], at_model_size["boxes"] * scale)
    assert float(from_uint8["boxes"][:, 0::2].max()) <= width
    assert float(from_uint8["boxes"][:, 1::2].max()) <= height


def test_default_threshold_is_the_exports(exported: Path) -> None:
    model = load_scripted_model(str(exported))
    image = sample_images(IMAGE_SIZE, 1)[0]
    with torch.inference_mode():
        everything = model([image], 0.0)[0]
        default = model([image])[0]
    expected = int((everything["scores"] >= model.score_threshold).sum())
    assert len(default["scores"]) == expected
    assert bool((default["scores"] >= model.score_threshold).all())


def test_parity_check_fails_when_the_scripted_model_differs(
    checkpoint: Path, tmp_path: Path
) -> None:
    detector, info = load_detector_checkpoint(str(checkpoint))
    eager = ServedDetector(detector, info.spec.arch, info.spec.image_size, info.spec.classes, 0.3)
    other_detector, _ = load_detector_checkpoint(str(write_checkpoint(tmp_path / "b.ckpt", 0, 7)))
    other = torch.jit.script(
        ServedDetector(other_detector, info.spec.arch, info.spec.image_size, info.spec.classes, 0.3)
    )
    with pytest.raises(SolarpipeError, match="parity check failed"):
        check_parity(eager, other, sample_images(IMAGE_SIZE, 2), 1e-3)


def detector_hparams(**changes: object) -> dict[str, object]:
    """A train-stage checkpoint's hyper_parameters (64-px SSDlite, one class), changed."""
    train = TrainParams(arch=ARCH, image_size=64).model_dump(mode="json")
    hparams: dict[str, object] = {"train": train, "classes": ["solar_panel"]}
    for key, value in changes.items():
        if key in train:
            train[key] = value
        else:
            hparams[key] = value
    return hparams


# Each way a file can fail to be a detector checkpoint, and the reason the error gives for it.
BAD_CHECKPOINTS = {
    "garbage": (b"this is not a checkpoint\n", r"cannot be read by torch\.load"),
    "no-hyper-parameters": (
        {"state_dict": {"model.w": torch.zeros(1)}},
        r"no hyper_parameters; pass the model\.ckpt written by the train stage",
    ),
    "unknown-arch": (
        {"state_dict": {}, "hyper_parameters": detector_hparams(arch="resnet18")},
        r"unknown arch 'resnet18', expected one of",
    ),
    "wrong-weights": (
        {
            "state_dict": {"model.backbone.weight": torch.zeros(3)},
            "hyper_parameters": detector_hparams(),
        },
        r"weights do not fit ssdlite320_mobilenet_v3_large with 2 classes",
    ),
    "bad-anchor-scales": (
        {"state_dict": {}, "hyper_parameters": detector_hparams(anchor_scales=[0.5, 0.1])},
        r"anchor_scales \[0\.5, 0\.1\], expected \[smallest, largest\]",
    ),
    "classes-count-mismatch": (
        {"state_dict": {}, "hyper_parameters": detector_hparams(num_classes=3)},
        r"num_classes=3 but 1 class names",
    ),
    "no-classes": (
        {"state_dict": {}, "hyper_parameters": {"train": detector_hparams()["train"]}},
        r"hyper_parameters lack classes",
    ),
    "bad-anchor-ratios": (
        {"state_dict": {}, "hyper_parameters": detector_hparams(anchor_ratios=[0.5])},
        r"anchor_ratios \[0\.5\], expected aspect ratios above 1",
    ),
    "bad-pixel-size": (
        {"state_dict": {}, "hyper_parameters": detector_hparams(pixel_size_m=-0.1)},
        r"pixel_size_m -0\.1, expected a positive number of metres",
    ),
    "bad-val-threshold": (
        {
            "state_dict": {},
            "hyper_parameters": detector_hparams(),
            "val_operating_point": {"score_threshold": 1.5},
        },
        r"val_operating_point\.score_threshold 1\.5, expected a score in \[0, 1\]",
    ),
}


def bad_checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    content, _ = BAD_CHECKPOINTS[kind]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_file_that_is_not_a_detector_checkpoint_is_refused_and_old_output_kept(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.pt").write_bytes(b"previous export")
    path = bad_checkpoint(kind, tmp_path)

    assert run_export(str(path), str(out)) == 1

    error = capsys.readouterr().err.strip()
    assert error.startswith(f"components.export: error: not a detector checkpoint: {path} (")
    assert re.search(BAD_CHECKPOINTS[kind][1], error), error
    assert len(error.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["model.pt"]
    assert (out / "model.pt").read_bytes() == b"previous export"


def checkpoint_with(
    source: Path, path: Path, train: dict[str, object], **hyper_parameters: object
) -> Path:
    """A copy of ``source`` recording more hyper-parameters and train params, and a val
    operating point."""
    recorded = torch.load(source, weights_only=False)
    recorded["hyper_parameters"].update(hyper_parameters)
    recorded["hyper_parameters"]["train"].update(train)
    recorded["val_operating_point"] = {"score_threshold": 0.42, "f1": 0.9}
    torch.save(recorded, path)
    return path


def test_model_records_pixel_size_train_params_and_the_val_threshold(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = {"epochs": 28, "lr": 0.003, "max_minutes": None}
    recorded = checkpoint_with(checkpoint, tmp_path / "model.ckpt", train, pixel_size_m=0.1)

    assert run_export(str(recorded), str(tmp_path / "export")) == 0

    assert "records no" not in capsys.readouterr().err
    model = load_scripted_model(str(tmp_path / "export"))
    assert model.pixel_size_m == pytest.approx(0.1)
    assert model.score_threshold == pytest.approx(0.42)
    summary = uri_io.read_json(str(tmp_path / "export" / "export.json"))
    assert summary["pixel_size_m"] == 0.1 and summary["score_threshold"] == 0.42
    assert summary["score_threshold_source"] == "best F1 on the val split"
    imported = bentoml.models.import_model(
        str(tmp_path / "export" / "solar_panel_detector.tar.gz"),
        _model_store=ModelStore(tmp_path / "home"),
    )
    metadata = imported.info.metadata
    assert metadata["pixel_size_m"] == pytest.approx(0.1)
    assert metadata["train_params"]["epochs"] == 28 and metadata["train_params"]["lr"] == 0.003
    assert "max_minutes" not in metadata["train_params"]  # null params left out

    assert run_export(str(recorded), str(tmp_path / "set"), "export.score_threshold=0.6") == 0
    assert load_scripted_model(str(tmp_path / "set")).score_threshold == pytest.approx(0.6)


def test_checkpoint_from_before_pixel_sizes_exports_with_warnings(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_export(str(checkpoint), str(tmp_path / "export")) == 0

    warnings = capsys.readouterr().err
    assert "records no pixel size (written before pixel sizes were recorded)" in warnings
    assert "detect and evaluate will assume 0.1 m" in warnings
    assert "records no score threshold chosen on the val split: using 0.3" in warnings
    model = load_scripted_model(str(tmp_path / "export"))
    assert model.pixel_size_m == 0.0 and model.score_threshold == pytest.approx(0.3)


def test_checkpoint_from_before_the_train_params_were_stored_still_loads(tmp_path: Path) -> None:
    """Older checkpoints name arch, image_size, num_classes and classes at the top level."""
    detector = build_detector(ARCH, 2, 64)
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in detector.state_dict().items()},
            "hyper_parameters": {
                "arch": ARCH, "num_classes": 2, "image_size": 64, "classes": ["solar_panel"]
            },
        },
        path,
    )  # fmt: skip
    _, info = load_detector_checkpoint(str(path))
    assert info.spec == DetectorSpec(ARCH, 64, ("solar_panel",), None)
    assert info.spec.num_classes == 2 and info.train == {}


def test_missing_checkpoint_is_named_and_nothing_written(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_export(f"s3://{bucket}/train/none.ckpt", str(tmp_path / "export")) == 1
    assert f"s3://{bucket}/train/none.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_invalid_bentoml_name_is_a_usage_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_export(str(checkpoint), str(tmp_path / "export"), "export.name=Not A Name!")
    assert status == 2
    assert "export.name" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_model_file_that_is_not_torchscript_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(SolarpipeError, match="not a TorchScript model"):
        load_scripted_model(str(checkpoint))  # a torch.save file, not TorchScript
    foreign = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(foreign))
    with pytest.raises(SolarpipeError, match="not a solarpipe detector"):
        load_scripted_model(str(foreign))
    with pytest.raises(NotFoundError, match="no such model file"):
        load_scripted_model(str(tmp_path / "absent"))


def test_cuda_requested_without_cuda_is_an_error(without_cuda) -> None:
    with pytest.raises(SolarpipeError, match=r"evaluate\.device=cuda but CUDA is not available"):
        resolve_device("cuda", "evaluate.device")
    assert resolve_device("auto", "evaluate.device") == torch.device("cpu")


def test_train_params_from_before_anchor_ratios_describe_todays_default_detector() -> None:
    """So that such a checkpoint still resumes: same spec with or without the default ratios."""
    from components.ml.checkpoint import detector_spec

    today = detector_hparams()
    before = detector_hparams()
    del before["train"]["anchor_ratios"]  # type: ignore[index]
    wider = detector_hparams(anchor_ratios=[2.0, 3.0, 5.0])

    assert detector_spec(before, "old") == detector_spec(today, "new")
    assert detector_spec(today, "new").anchor_ratios is None
    assert detector_spec(wider, "wider").anchor_ratios == (2.0, 3.0, 5.0)


def test_detector_is_rebuilt_with_the_anchor_scales_its_checkpoint_records(
    tmp_path: Path,
) -> None:
    from components.ml.detector import SSDLITE_ANCHOR_SCALES
    from components.ml.module import DetectorModule

    module = DetectorModule(
        TrainParams(arch="ssdlite320_mobilenet_v3_large", image_size=128).model_dump(mode="json"),
        ["solar_panel"],
    )
    assert module.hparams.anchor_scales == list(SSDLITE_ANCHOR_SCALES)
    recorded = [0.1, 0.6]  # as if trained with other scales than today's default
    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": {**module.hparams, "anchor_scales": recorded},
    }
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)

    detector, info = load_detector_checkpoint(str(path))
    reloaded = DetectorModule.load_from_checkpoint(path, map_location="cpu")

    assert info.spec.anchor_scales == tuple(recorded)
    for model in (detector, reloaded.model):
        generator = model.anchor_generator
        assert generator.scales[0] == pytest.approx(recorded[0])
        assert generator.scales[-2] == pytest.approx(recorded[1])
    assert module.model.anchor_generator.scales[0] == pytest.approx(SSDLITE_ANCHOR_SCALES[0])


@pytest.mark.slow  # a subprocess stage run
def test_stride8_detector_with_wider_anchors_exports_as_its_checkpoint_records(
    tmp_path: Path,
) -> None:
    """The stride-8 SSDlite with 5:1 anchors: the head has 8 anchors per location on 7 maps,
    and export rebuilds exactly that detector from the checkpoint and scripts it."""
    from components.ml.module import DetectorModule

    arch = "ssdlite_mobilenet_v3_large_stride8"
    train = TrainParams(arch=arch, image_size=128, anchor_ratios=[2, 3, 5])
    module = DetectorModule(train.model_dump(mode="json"), ["solar_panel"])
    assert module.model.anchor_generator.num_anchors_per_location() == [8] * 7
    path = tmp_path / "model.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
        },
        path,
    )

    assert run_export(str(path), str(tmp_path / "export")) == 0

    model = load_scripted_model(str(tmp_path / "export"))
    assert model.arch == arch
    image = sample_images(128, 1)[0]
    module.model.eval()
    with torch.inference_mode():
        scripted = model([image], 0.0)[0]
        eager = module.model([image.permute(2, 0, 1).float() / 255])[0]
    assert len(scripted["boxes"]) == len(eager["boxes"]) > 0
