"""The losses the models compute themselves: segmentation cross-entropy and STDC-Seg's detail loss."""

import torch
import torch.nn.functional as F


__all__ = ["at_least_float32", "boundary_targets", "detail_aggregation_loss", "segmentation_cross_entropy"]


def segmentation_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of logits upsampled (bilinearly) to the labels' size, averaged over labelled pixels.

    Args:
        logits (`torch.Tensor` of shape `(N, C, h, w)`): Class scores, at any resolution.
        labels (`torch.LongTensor` of shape `(N, H, W)`): Class ids or `ignore_index`.
        ignore_index (`int`, *optional*, defaults to 255): The id of unlabelled pixels.

    Returns:
        A scalar tensor; 0 for a batch with no labelled pixel, where the "mean" reduction of `F.cross_entropy` gives
        NaN.
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(at_least_float32(logits), labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast; float64 stays float64.
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def boundary_targets(labels: torch.Tensor) -> torch.Tensor:
    """STDC's detail ground truth: where the label map changes, by a 3x3 Laplacian at strides 1, 2 and 4 (each
    thresholded at 0.1 and brought back to full size), fused with weights 0.6, 0.3 and 0.1 and thresholded again.

    Args:
        labels (`torch.LongTensor` of shape `(N, H, W)`): Class ids (an ignore id is a value like any other, as in
            STDC-Seg and mmsegmentation).

    Returns:
        `torch.FloatTensor` of shape `(N, 1, H, W)`, 1 on boundaries and 0 elsewhere.
    """
    laplacian = torch.tensor([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=torch.float32, device=labels.device)
    values = labels[:, None].float()
    pyramid = []
    for stride in (1, 2, 4):
        edges = F.conv2d(values, laplacian.view(1, 1, 3, 3), stride=stride, padding=1).clamp(min=0)
        edges = F.interpolate(edges, size=labels.shape[-2:], mode="nearest")
        pyramid.append((edges > 0.1).float())
    # The fusion weights are STDC's initial ones, fixed as in mmsegmentation (STDC-Seg's own code learns them).
    fused = 0.6 * pyramid[0] + 0.3 * pyramid[1] + 0.1 * pyramid[2]
    return (fused > 0.1).float()


def detail_aggregation_loss(detail_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """STDC-Seg's detail loss: binary cross-entropy plus Dice loss between the detail head's boundary logits
    (upsampled to the labels' size) and `boundary_targets(labels)`.

    Args:
        detail_logits (`torch.Tensor` of shape `(N, 1, h, w)`): The detail head's output.
        labels (`torch.LongTensor` of shape `(N, H, W)`): Class ids.

    Returns:
        A scalar tensor.
    """
    targets = boundary_targets(labels)
    logits = at_least_float32(detail_logits)
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=True)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probabilities, targets = logits.sigmoid().flatten(1), targets.flatten(1)
    dice = 1 - (2 * (probabilities * targets).sum(1) + 1) / (probabilities.sum(1) + targets.sum(1) + 1)
    return bce + dice.mean()
