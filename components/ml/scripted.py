"""The served model: a torchvision detector wrapped with its pre- and postprocessing, scripted.

:class:`ServedDetector` takes images of any size (uint8 ``H×W×3`` as decoded from PNG/JPEG, or
float ``3×H×W`` in ``[0, 1]``), resizes them to the detector's input size, runs it, and returns
per image ``boxes`` (``[xmin, ymin, xmax, ymax]`` in the input's pixels), ``scores`` and
``labels`` (class indices, 1-based; names in ``classes``) above a score threshold. It also
carries ``pixel_size_m``, the ground size of one model-input pixel it was trained at (0 when the
checkpoint did not record it: :func:`model_pixel_size` then assumes
:data:`DEFAULT_PIXEL_SIZE_M`), and the ``score_threshold`` chosen for it. Export
scripts it with ``torch.jit.script``; evaluate, detect and the BentoML service load the file with
:func:`load_scripted_model`.
"""

# No ``from __future__ import annotations`` here: TorchScript needs the annotations evaluated.
import io
import logging
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError, UsageError

MODEL_FILE = "model.pt"
EXPORT_SUMMARY_FILE = "export.json"  # beside model.pt: the export's name and version, and more
DEVICES = ("auto", "cpu", "cuda")
# Pixel size assumed for a model exported before pixel sizes were recorded: every such model
# was trained on the quickstart's 0.1 m scenes (SwissImage's pixel size too).
DEFAULT_PIXEL_SIZE_M = 0.1
log = logging.getLogger(__name__)


class ServedDetector(nn.Module):
    """A detector with resize in and box rescaling out; scriptable with ``torch.jit.script``."""

    arch: str
    image_size: int
    score_threshold: float
    classes: list[str]
    pixel_size_m: float

    def __init__(
        self,
        detector: nn.Module,
        arch: str,
        image_size: int,
        classes: list[str],
        score_threshold: float,
        pixel_size_m: float = 0.0,
    ) -> None:
        super().__init__()
        self.detector = detector.eval()
        self.detector._has_warned = True  # silence "returns a (Losses, Detections) tuple" warning
        self.arch = arch
        self.image_size = image_size
        self.classes = list(classes)
        self.score_threshold = float(score_threshold)
        self.pixel_size_m = float(pixel_size_m)
        # An empty buffer that follows the module's device: inputs are moved to it.
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)

    def to_model_input(self, image: Tensor) -> Tensor:
        """uint8 ``H×W×3`` or float ``3×H×W`` → float ``3×S×S`` on the model's device."""
        image = image.to(self.device_anchor.device)
        if image.dtype == torch.uint8:
            if image.dim() != 3 or image.shape[2] != 3:
                raise ValueError("uint8 images must be H x W x 3")
            image = image.permute(2, 0, 1).float() / 255.0
        elif image.dim() != 3 or image.shape[0] != 3:
            raise ValueError("float images must be 3 x H x W")
        return F.interpolate(
            image.float().unsqueeze(0),
            size=[self.image_size, self.image_size],
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]

    @staticmethod
    def input_size(image: Tensor) -> tuple[int, int]:
        """(height, width) of an input image in either accepted layout."""
        if image.dtype == torch.uint8:
            return image.shape[0], image.shape[1]
        return image.shape[1], image.shape[2]

    def forward(
        self,
        images: list[Tensor],
        score_threshold: Optional[float] = None,  # noqa: UP045 (TorchScript)
    ) -> list[dict[str, Tensor]]:
        threshold = self.score_threshold if score_threshold is None else score_threshold
        batch = [self.to_model_input(image) for image in images]
        # Scripted torchvision detectors return (losses, detections); eager ones the detections.
        if torch.jit.is_scripting():  # noqa: SIM108 (TorchScript resolves this statically)
            detections = self.detector(batch)[1]
        else:
            detections = self.detector(batch)
        results: list[dict[str, Tensor]] = []
        for index, detection in enumerate(detections):
            height, width = self.input_size(images[index])
            scale = torch.tensor(
                [width / self.image_size, height / self.image_size] * 2,
                device=detection["boxes"].device,
            )
            keep = detection["scores"] >= threshold
            boxes = detection["boxes"][keep] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(width))
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(height))
            results.append(
                {
                    "boxes": boxes,
                    "scores": detection["scores"][keep],
                    "labels": detection["labels"][keep],
                }
            )
        return results


def script_detector(served: ServedDetector) -> torch.jit.ScriptModule:
    """``torch.jit.script`` the wrapper (on whichever device it sits)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
            return torch.jit.script(served.eval())
    except Exception as exc:
        raise SolarpipeError(f"could not script the {served.arch} detector: {exc}") from exc


def resolve_device(requested: str, key: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without CUDA is an error naming ``key``."""
    if requested not in DEVICES:
        raise UsageError(f"{key}: unknown device {requested!r} (one of {DEVICES})")
    if requested == "cuda" and not torch.cuda.is_available():
        raise SolarpipeError(
            f"{key}=cuda but CUDA is not available on this machine; use --set {key}=auto or cpu"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def model_file_uri(model_uri: str) -> str:
    """The TorchScript file for ``--model``: the file itself, or ``model.pt`` in a folder/prefix."""
    is_file = uri_io.exists(model_uri) if uri_io.is_s3(model_uri) else Path(model_uri).is_file()
    return model_uri if is_file else uri_io.join(model_uri, MODEL_FILE)


def load_scripted_model(
    model_uri: str, device: torch.device | str = "cpu"
) -> torch.jit.ScriptModule:
    """Load an exported ``model.pt`` (URI of the file or of the folder holding it), in eval mode."""
    import torchvision  # noqa: F401  (registers torchvision's ops before TorchScript needs them)

    file_uri = model_file_uri(model_uri)
    if uri_io.is_s3(file_uri):
        source: io.BytesIO | str = io.BytesIO(uri_io.read_bytes(file_uri))
    else:
        if not Path(file_uri).is_file():
            raise NotFoundError(f"no such model file: {file_uri}")
        source = file_uri
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated")
            model = torch.jit.load(source, map_location=torch.device(device))
    except Exception as exc:  # reading arbitrary bytes as TorchScript fails in many ways
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SolarpipeError(
            f"not a TorchScript model: {file_uri} ({first_line}); "
            "pass the model.pt written by the export stage"
        ) from exc
    for attribute in ("image_size", "classes", "score_threshold"):
        if not hasattr(model, attribute):
            raise SolarpipeError(
                f"not a solarpipe detector: {file_uri} has no {attribute!r}; "
                "pass the model.pt written by the export stage"
            )
    return model.eval()


def model_pixel_size(model: torch.jit.ScriptModule, model_uri: str) -> float:
    """The model's pixel size in metres; :data:`DEFAULT_PIXEL_SIZE_M` with a warning for a
    model that does not record one (exported before pixel sizes were recorded)."""
    recorded = float(getattr(model, "pixel_size_m", 0.0))
    if recorded > 0:
        return recorded
    log.warning(
        "%s records no pixel size (exported before pixel sizes were recorded): assuming "
        "%g m; export it again from a checkpoint of a current train stage to record it",
        model_file_uri(model_uri),
        DEFAULT_PIXEL_SIZE_M,
    )
    return DEFAULT_PIXEL_SIZE_M
