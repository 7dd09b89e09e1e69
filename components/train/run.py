"""The train stage's work: set up the data, model and Lightning trainer, fit, write the outputs.

Lightning writes checkpoints and logs into a local work folder named after ``--out``;
``last.ckpt`` is copied to ``<out>/last.ckpt`` as the next epoch starts (the ``--resume`` point,
local or S3) and the finished folder is published to ``--out`` at the end (``uri.local_output_dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from components.core import uri as uri_io
from components.core.annotations import AnnotationsFile, load_annotations
from components.core.errors import SolarpipeError
from components.core.logs import adopt_library_loggers
from components.core.params import Params, TrainParams
from components.core.reports import write_report

if TYPE_CHECKING:  # torch and Lightning load only once the inputs are known to be good
    from components.ml.checkpoint import DetectorSpec
    from components.train.hardware import HardwarePlan

log = logging.getLogger("components.train")

LAST_CHECKPOINT = "last.ckpt"
BEST_MONITOR = "val_map_50"


def work_dir_for(out_uri: str) -> Path:
    """The local folder Lightning writes into: the same for the same ``--out``."""
    key = out_uri if uri_io.is_s3(out_uri) else str(Path(out_uri).resolve())
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"solarpipe-train-{digest}"


def require_splits(annotations: AnnotationsFile, annotations_uri: str) -> None:
    for split in ("train", "val"):
        if not annotations.split(split):
            raise SolarpipeError(
                f"{annotations_uri} has no {split} images: train needs both a train and a val "
                "split (see preprocess.split)"
            )
    if not annotations.classes:
        raise SolarpipeError(f"{annotations_uri} lists no classes")


def restore_last_checkpoint(out_uri: str, checkpoint_dir: Path) -> str | None:
    """Fetch ``<out>/last.ckpt`` into the work folder; ``None`` when there is none."""
    published = uri_io.join(out_uri, LAST_CHECKPOINT)
    if not uri_io.exists(published):
        log.warning("--resume: %s does not exist, training from the start", published)
        return None
    local = checkpoint_dir / LAST_CHECKPOINT
    uri_io.download_file(published, local)
    log.info("resuming from %s", published)
    return str(local)


def check_resumable(checkpoint_path: str, spec: DetectorSpec, pixel_size_m: float | None) -> None:
    """A checkpoint resumes this run only if it holds the same detector (arch, size, classes)
    trained at the same pixel size."""
    import torch

    from components.ml.checkpoint import detector_spec

    try:
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:
        raise SolarpipeError(f"cannot read the checkpoint to resume: {exc}") from exc
    hyper_parameters = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    saved_spec = detector_spec(hyper_parameters, checkpoint_path)
    if saved_spec != spec:
        raise SolarpipeError(
            f"cannot resume: the checkpoint holds {saved_spec}, this run {spec} (train without "
            "--resume to start over)"
        )
    saved_pixel_size = hyper_parameters.get("pixel_size_m")
    if saved_pixel_size != pixel_size_m:
        raise SolarpipeError(
            f"cannot resume: the checkpoint was trained at {saved_pixel_size} m/px input pixels, "
            f"this run at {pixel_size_m} (train without --resume to start over)"
        )


def build_trainer(
    params: TrainParams,
    plan: HardwarePlan,
    work_dir: Path,
    out_uri: str,
    train_batches: int,
) -> tuple[Any, dict[str, Any]]:
    """The Lightning trainer and the callbacks the stage reads back after fitting."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from components.ml.datamodule import StreamEpoch
    from components.train.callbacks import PublishLastCheckpoint, TrainingRecord

    adopt_library_loggers("lightning", "lightning.pytorch", "lightning.fabric")

    checkpoint_dir = work_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=BEST_MONITOR,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
    )
    # Every epoch's end as last.ckpt, overwritten. (save_top_k=0 with save_last=True writes it
    # only when training ends in Lightning 2.6: nothing to resume from after a kill, measured.)
    last = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    tty = sys.stderr.isatty()
    record = TrainingRecord(print_lines=not tty)
    callbacks: list[Any] = [
        best,
        last,
        PublishLastCheckpoint(out_uri, last, best),
        record,
        LearningRateMonitor(logging_interval="epoch"),
        StreamEpoch(),
    ]
    if params.early_stopping_patience:
        callbacks.append(
            EarlyStopping(monitor=BEST_MONITOR, mode="max", patience=params.early_stopping_patience)
        )
    loggers = [
        CSVLogger(work_dir, name="logs", version="csv"),
        TensorBoardLogger(work_dir, name="logs", version="tensorboard", default_hp_metric=False),
    ]
    trainer = Trainer(
        accelerator=plan.accelerator,
        devices=plan.devices,
        strategy=plan.strategy,
        precision=plan.precision,
        max_epochs=params.epochs,
        max_time=timedelta(minutes=params.max_minutes) if params.max_minutes else None,
        limit_train_batches=params.limit_train_batches,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=work_dir,
        enable_progress_bar=tty,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, train_batches)),
        reload_dataloaders_every_n_epochs=0 if params.persistent_workers else 1,
        use_distributed_sampler=False,
        num_sanity_val_steps=1,
    )
    return trainer, {"best": best, "record": record}


def _number(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def collect_metrics(trainer: Any, parts: dict[str, Any]) -> dict[str, Any]:
    """Flat final figures for ``metrics.json``."""
    metrics = trainer.callback_metrics
    record = parts["record"]
    best = parts["best"]
    figures: dict[str, Any] = {
        "train_loss": _number(metrics.get("train_loss_epoch")),
        "val_map": _number(metrics.get("val_map")),
        "val_map_50": _number(metrics.get("val_map_50")),
        "val_map_75": _number(metrics.get("val_map_75")),
        "val_mar_100": _number(metrics.get("val_mar_100")),
        "best_val_map_50": _number(best.best_model_score),
        "val_f1": _number(metrics.get("val_f1")),
        "val_score_threshold": _number(metrics.get("val_score_threshold")),
        "epochs": int(trainer.current_epoch),
        "global_steps": int(trainer.global_step),
        "resumed_from_step": int(record.start_step),
        "train_seconds": round(record.seconds, 1),
        "train_images_per_second": round(record.images / record.seconds, 2)
        if record.seconds > 0
        else None,
        "skipped_images": int(record.skipped),
    }
    return {key: value for key, value in figures.items() if value is not None}


def write_outputs(
    out_uri: str, work_dir: Path, parts: dict[str, Any], metrics: dict[str, Any], params: Params
) -> None:
    last_path = work_dir / "checkpoints" / LAST_CHECKPOINT
    best_path = Path(parts["best"].best_model_path) if parts["best"].best_model_path else None
    if best_path is None or not best_path.exists():
        log.warning("no validated checkpoint: model.ckpt is the last one")
        best_path = last_path
    with uri_io.local_output_dir(out_uri) as staging:
        shutil.copyfile(best_path, staging / "model.ckpt")
        shutil.copyfile(last_path, staging / LAST_CHECKPOINT)
        (staging / "metrics.json").write_bytes(uri_io.dump_json(metrics))
        (staging / "params.yaml").write_text(
            yaml.safe_dump({"train": params.train.model_dump(mode="json")}, sort_keys=False)
        )
        logs = work_dir / "logs"
        if logs.is_dir():
            shutil.copytree(logs, staging / "logs")


def train(args: argparse.Namespace, params: Params) -> None:
    """Fit the detector on ``--annotations`` and publish the outputs to ``--out``."""
    train_params = params.train
    annotations = load_annotations(args.annotations)
    require_splits(annotations, args.annotations)

    import torch
    from lightning.pytorch import seed_everything

    from components.ml.datamodule import TileDataModule
    from components.ml.dataset import worker_error_line
    from components.ml.module import DetectorModule
    from components.train.hardware import resolve_hardware

    plan = resolve_hardware(train_params)
    torch.set_num_threads(plan.cpu_threads)
    if plan.accelerator == "gpu":
        torch.set_float32_matmul_precision("high")
    work_dir = work_dir_for(args.out)
    resume_path = None
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:
        # A DDP process that Lightning launched: rank 0 has prepared the work folder.
        local_last = work_dir / "checkpoints" / LAST_CHECKPOINT
        resume_path = str(local_last) if args.resume and local_last.exists() else None
    elif args.resume:
        resume_path = restore_last_checkpoint(args.out, work_dir / "checkpoints")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)

    seed_everything(train_params.seed, workers=True, verbose=False)
    module = DetectorModule(
        train_params.model_dump(mode="json"),
        annotations.classes,
        pixel_size_m=annotations.input_pixel_size(train_params.image_size),
        data_pixel_size_m=annotations.pixel_size_m,
    )
    if resume_path:
        check_resumable(resume_path, module.spec, module.hparams["pixel_size_m"])
    datamodule = TileDataModule(annotations, train_params, pin_memory=plan.accelerator == "gpu")
    train_batches = max(1, len(annotations.split("train")) // train_params.batch_size)
    trainer, parts = build_trainer(train_params, plan, work_dir, args.out, train_batches)
    log.info(
        "training %s on %d train / %d val tiles: %s (%d CPU threads), %s precision, "
        "up to %d epochs%s",
        train_params.arch,
        len(annotations.split("train")),
        len(annotations.split("val")),
        plan.accelerator,
        plan.cpu_threads,
        plan.precision,
        train_params.epochs,
        f" or {train_params.max_minutes:g} min" if train_params.max_minutes else "",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning 2.6's own use of a torch 2.14 deprecation, once per fit: nothing to act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path)
        except BaseException as exc:
            if not (work_dir / "checkpoints" / LAST_CHECKPOINT).exists():
                shutil.rmtree(work_dir, ignore_errors=True)  # nothing there to resume from
            if isinstance(exc, SolarpipeError):
                raise type(exc)(worker_error_line(exc)) from exc
            raise
    if not trainer.is_global_zero:
        return
    metrics = collect_metrics(trainer, parts)
    write_outputs(args.out, work_dir, parts, metrics, params)
    shutil.rmtree(work_dir, ignore_errors=True)
    history = parts["record"].history
    best_epoch = max(history, key=lambda row: row[2])[0] if history else None
    write_report(args, "curve", parts["record"].curve_markdown(best_epoch))
    log.info(
        "wrote %s: best val mAP@0.5 %s after %d epochs (%.0f s)",
        args.out,
        metrics.get("best_val_map_50", "-"),
        metrics["epochs"],
        metrics["train_seconds"],
    )
