"""Where training runs: accelerator, devices, precision, strategy and CPU threads from the
train params."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from components.core.cpus import usable_cpus
from components.core.errors import SolarpipeError, UsageError
from components.core.params import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardwarePlan:
    """Trainer arguments for the machine at hand."""

    accelerator: str  # "gpu" or "cpu"
    devices: int | str
    precision: str
    strategy: str
    cpu_threads: int  # torch intra-op threads


def _gpu_count(devices: int | str) -> int:
    if isinstance(devices, int):
        return torch.cuda.device_count() if devices == -1 else devices
    text = devices.strip()
    if text in ("auto", "-1"):
        return torch.cuda.device_count()
    if text.isdigit():
        return int(text)
    return len([part for part in text.split(",") if part.strip()])


def resolve_hardware(params: TrainParams) -> HardwarePlan:
    """GPU when asked for (or ``auto`` and present), with mixed precision; else 32-bit CPU."""
    cuda = torch.cuda.is_available()
    accelerator = params.accelerator
    if accelerator in ("gpu", "cuda") and not cuda:
        if not params.fallback_to_cpu:
            raise SolarpipeError(
                f"train.accelerator={accelerator} but no CUDA device is available "
                "(torch.cuda.is_available() is False); use --set train.accelerator=cpu, "
                "or --set train.fallback_to_cpu=true to fall back to the CPU"
            )
        log.warning("no CUDA device: training on the CPU (train.fallback_to_cpu)")
        accelerator = "cpu"
    elif accelerator == "auto":
        accelerator = "gpu" if cuda else "cpu"
    accelerator = "gpu" if accelerator == "cuda" else accelerator

    precision = params.precision
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32-true"
    elif precision == "16-mixed" and accelerator == "cpu":
        raise UsageError("train.precision=16-mixed needs a GPU; use 32-true or bf16-mixed on CPU")

    if accelerator == "gpu":
        devices: int | str = params.devices
        strategy = "ddp" if _gpu_count(devices) > 1 else "auto"
    else:
        devices = 1 if params.devices == "auto" else params.devices
        strategy = "auto"
    return HardwarePlan(
        accelerator, devices, precision, strategy, params.cpu_threads or usable_cpus()
    )
