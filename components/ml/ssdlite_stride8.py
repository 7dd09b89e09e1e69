"""SSDlite on MobileNetV3-Large with one more, finer feature map: stride 8 before torchvision's
stride 16, 32 and the four extra maps (seven in all).

torchvision's SSDlite takes its first map from the expansion layer of the block that moves
from stride 16 to 32; this one also takes the expansion layer of the block that moves from 8
to 16 (240 channels at stride 8), the same way. Panels at 0.1 m are 12-90 px (median 25 px
square-root area): on the stride-16 grid a 15-px panel lies up to 8 px off every anchor centre,
on the stride-8 grid up to 4 px. The backbone, head type and loss are torchvision's.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

from torch import Tensor, nn

FEATURE_MAPS = 7


class Stride8Features(nn.Module):
    """MobileNetV3 features at strides 8, 16 and 32, then torchvision's four extra blocks."""

    def __init__(self, backbone: nn.Sequential, norm_layer: Any) -> None:
        from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet

        super().__init__()
        strided = [i for i, block in enumerate(backbone) if getattr(block, "_is_cn", False)]
        to_16, to_32 = strided[-2], strided[-1]  # the blocks that halve the map to 16 and 32
        self.features = nn.Sequential(
            nn.Sequential(*backbone[:to_16], backbone[to_16].block[0]),
            nn.Sequential(
                backbone[to_16].block[1:], *backbone[to_16 + 1 : to_32], backbone[to_32].block[0]
            ),
            nn.Sequential(backbone[to_32].block[1:], *backbone[to_32 + 1 :]),
        )
        # torchvision's extra blocks (and their initialisation) for the stride-32 output
        self.extra = SSDLiteFeatureExtractorMobileNet(backbone, to_32, norm_layer).extra

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        output = []
        for block in self.features:
            x = block(x)
            output.append(x)
        for block in self.extra:
            x = block(x)
            output.append(x)
        return OrderedDict([(str(i), v) for i, v in enumerate(output)])


def ssdlite_stride8(
    num_classes: int, weights_backbone: str | None = None, weights: None = None
) -> nn.Module:
    """The detector with torchvision's SSDlite settings (called like torchvision's builders;
    no whole-detector weights exist); inputs, anchors and matching are set by the caller
    (``detector.py``) as for SSDlite."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead, _normal_init

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    mobilenet = mobilenet_v3_large(
        weights=weights_backbone, norm_layer=norm_layer, reduced_tail=weights_backbone is None
    )
    if weights_backbone is None:
        _normal_init(mobilenet)
    backbone = Stride8Features(mobilenet.features, norm_layer)
    size = (320, 320)
    anchors = DefaultBoxGenerator([[2, 3]] * FEATURE_MAPS, min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(
        det_utils.retrieve_out_channels(backbone, size),
        anchors.num_anchors_per_location(),
        num_classes,
        norm_layer,
    )
    return SSD(
        backbone,
        anchors,
        size,
        num_classes,
        head=head,
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
        topk_candidates=300,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
