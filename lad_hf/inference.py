"""Test-time inference: sliding windows over large images, and flips and scales averaged (the paper's zoo is
evaluated this way in mmsegmentation and CIRKD)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput

from .models.losses import segmentation_cross_entropy


__all__ = ["TTASegmenter", "segment", "sliding_window_logits"]


def _logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's logits, upsampled to its input's size."""
    logits = model(pixel_values=pixel_values).logits
    if logits.shape[-2:] != pixel_values.shape[-2:]:
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every `stride`, plus one flush with the end."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def sliding_window_logits(
    model: nn.Module, pixel_values: torch.Tensor, window: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Logits of `(B, C, H, W)` images from overlapping `window` crops every `stride`, averaged where they overlap.

    Images smaller than the window are padded with 0 (the mean colour after normalisation) and the padding cropped
    off the result. Returns `(B, num_labels, H, W)`.
    """
    height, width = pixel_values.shape[-2:]
    pad_h, pad_w = max(window[0] - height, 0), max(window[1] - width, 0)
    padded = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    total, count = None, torch.zeros(padded.shape[-2:], device=padded.device)
    for top in _starts(padded.shape[-2], window[0], stride[0]):
        for left in _starts(padded.shape[-1], window[1], stride[1]):
            logits = _logits(model, padded[..., top : top + window[0], left : left + window[1]])
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], *padded.shape[-2:]))
            total[..., top : top + window[0], left : left + window[1]] += logits
            count[top : top + window[0], left : left + window[1]] += 1
    return (total / count)[..., :height, :width]


def segment(
    model: nn.Module,
    pixel_values: torch.Tensor,
    scales: list[float] | tuple[float, ...] = (1.0,),
    flip: bool = False,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Class probabilities `(B, num_labels, H, W)` of `(B, C, H, W)` images, averaged over `scales` (the image
    resized by each), its horizontal flip (with `flip`), and, with `window`, sliding windows at each scale."""
    size = pixel_values.shape[-2:]
    if window is not None and stride is None:
        stride = (max(1, 2 * window[0] // 3), max(1, 2 * window[1] // 3))
    probabilities = None
    for scale in scales:
        scaled = pixel_values
        if scale != 1.0:
            scaled = F.interpolate(pixel_values, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            inputs = scaled.flip(-1) if flipped else scaled
            logits = sliding_window_logits(model, inputs, window, stride) if window else _logits(model, inputs)
            logits = logits.flip(-1) if flipped else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probabilities = logits.softmax(1) if probabilities is None else probabilities + logits.softmax(1)
    return probabilities / (len(scales) * (2 if flip else 1))


class TTASegmenter(nn.Module):
    """A segmentation model wrapped for evaluation with `segment`: its `logits` are the log of the averaged class
    probabilities, and its loss their cross-entropy. Give it to a `SegmentationTrainer` to evaluate.

    Args:
        model (`PreTrainedModel`): An image-only segmentation model.
        scales, flip, window, stride: As for `segment`.
        ignore_index (`int`, *optional*, defaults to 255): Label id left out of the loss.
    """

    def __init__(
        self,
        model: nn.Module,
        scales: list[float] | tuple[float, ...] = (1.0,),
        flip: bool = False,
        window: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        ignore_index: int = 255,
    ):
        super().__init__()
        self.model, self.config = model, model.config
        self.scales, self.flip, self.window, self.stride = list(scales), flip, window, stride
        self.ignore_index = ignore_index

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SemanticSegmenterOutput:
        probabilities = segment(self.model, pixel_values, self.scales, self.flip, self.window, self.stride)
        logits = probabilities.clamp_min(1e-12).log()
        loss = segmentation_cross_entropy(logits, labels, self.ignore_index) if labels is not None else None
        return SemanticSegmenterOutput(loss=loss, logits=logits)
