"""Checks on segmentation label maps, shared by the models, the noiser, the losses and the metric."""

import torch
import torch.nn.functional as F


__all__ = ["check_labels", "resize_labels"]


def check_labels(
    labels: torch.Tensor,
    num_labels: int,
    ignore_index: int = 255,
    extra_ignore: tuple[int, ...] = (),
    spatial_size: tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> None:
    """Raise a clear error when `labels` is not a valid batch of class-id maps.

    Args:
        labels (`torch.Tensor` of shape `(batch_size, height, width)`):
            Integer class ids in `[0, num_labels)`, or `ignore_index`.
        num_labels (`int`): Number of classes.
        ignore_index (`int`): The id of pixels that carry no label.
        extra_ignore (`tuple[int, ...]`): Further ids to accept as "no label" (the Trainer pads with -100).
        spatial_size (`tuple[int, int]`, *optional*): The `(height, width)` the labels must have, e.g. the image's.
        batch_size (`int`, *optional*): The batch size the labels must have, e.g. the image batch's.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class ids, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must hold integer class ids (torch.long), got dtype {labels.dtype}. "
            "Convert label maps with `labels.long()` after checking they hold whole class ids, not normalised values."
        )
    if labels.ndim != 3:
        raise ValueError(
            f"labels must have shape (batch_size, height, width), got {tuple(labels.shape)}. "
            "Drop a channel dimension of size 1 with `labels.squeeze(1)`."
        )
    if batch_size is not None and labels.shape[0] != batch_size:
        raise ValueError(f"labels hold {labels.shape[0]} maps but the images are a batch of {batch_size}.")
    if spatial_size is not None and tuple(labels.shape[-2:]) != tuple(spatial_size):
        raise ValueError(
            f"labels have spatial size {tuple(labels.shape[-2:])} but the images have {tuple(spatial_size)}; "
            "resize or crop images and labels together (labels with nearest-neighbour interpolation)."
        )
    valid = ((labels >= 0) & (labels < num_labels)) | (labels == ignore_index)
    for value in extra_ignore:
        valid |= labels == value
    if not bool(valid.all()):
        bad = torch.unique(labels[~valid]).tolist()
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"labels contain values [{shown}] outside the expected range [0, {num_labels}) "
            f"(ignore index {ignore_index}). Remap the dataset's ids (e.g. reduce_labels, or Cityscapes labelIds to "
            "trainIds) or set num_labels / ignore_index to match the data."
        )


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(B, H, W)` class ids resized to `size` by nearest neighbour (no label value is invented)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
