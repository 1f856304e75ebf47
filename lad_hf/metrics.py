"""Streaming mIoU: a confusion matrix accumulated with `bincount`, never the predictions themselves."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from .utils.labels import check_labels


__all__ = ["SegmentationMetric", "predictions_from_logits"]

# The Trainer pads labels and predictions with -100 when it gathers batches of different sizes.
TRAINER_PADDING = -100


def predictions_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class ids at the labels' resolution: upsample `(B, C, h, w)` logits bilinearly to `(H, W)`, then argmax.

    Usable as the Trainer's `preprocess_logits_for_metrics`, so that evaluation gathers `(B, H, W)` ids across
    processes instead of `C` times more logits.
    """
    if isinstance(logits, tuple | list):  # models that also return hidden states
        logits = logits[0]
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


class SegmentationMetric:
    """mIoU, mean and overall pixel accuracy, and per-class IoU, accumulated batch by batch.

    Pixels whose label is `ignore_index` or -100 (the Trainer's padding) are left out. A class absent from both the
    labels and the predictions has no IoU and is left out of the means instead of counting as 0; a class absent from
    the labels is left out of `mean_accuracy`.

    Args:
        num_labels (`int`): Number of classes.
        ignore_index (`int`, *optional*, defaults to 255): Label id of unlabelled pixels.
        id2label (`dict[int, str]`, *optional*): Class names for the per-class keys `iou_<name>`.

    Example:
        ```python
        >>> metric = SegmentationMetric(num_labels=19)
        >>> for batch in loader:
        ...     metric.update(model(batch["pixel_values"]).logits, batch["labels"])
        >>> metric.compute()["mean_iou"]

        >>> # With the Trainer, batch by batch and the same in one or several processes:
        >>> args = TrainingArguments(..., batch_eval_metrics=True)
        >>> trainer = Trainer(..., compute_metrics=metric.compute_metrics,
        ...                   preprocess_logits_for_metrics=predictions_from_logits)
        ```
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, id2label: dict[int, str] | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
        if id2label is not None and sorted(int(key) for key in id2label) != list(range(num_labels)):
            raise ValueError(f"id2label must name the classes 0..{num_labels - 1}, got keys {sorted(id2label)}.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        names = id2label or {k: str(k) for k in range(num_labels)}
        self.id2label = {int(k): name for k, name in names.items()}
        self.confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)

    def reset(self) -> None:
        self.confusion = torch.zeros_like(self.confusion)

    def update(self, preds: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch.

        Args:
            preds: logits `(B, C, h, w)` (float; upsampled to the labels' size) or class ids `(B, H, W)` (integer).
            labels: class ids `(B, H, W)`.
        """
        preds, labels = torch.as_tensor(preds), torch.as_tensor(labels)
        if preds.is_floating_point():
            if preds.ndim != 4 or preds.shape[1] != self.num_labels:
                raise ValueError(
                    f"Float predictions are read as logits of shape (batch_size, {self.num_labels}, height, width), "
                    f"got {tuple(preds.shape)}. Pass integer class ids of shape (batch_size, height, width) instead."
                )
            preds = predictions_from_logits(preds, labels.to(preds.device))
        check_labels(labels, self.num_labels, self.ignore_index, extra_ignore=(TRAINER_PADDING,))
        if preds.shape != labels.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in shape.")
        labels = labels.to(preds.device)
        valid = (labels != self.ignore_index) & (labels != TRAINER_PADDING)
        preds, labels = preds[valid], labels[valid]
        if preds.numel() and (preds.min() < 0 or preds.max() >= self.num_labels):
            raise ValueError(
                f"predicted class ids must lie in [0, {self.num_labels}), got values from {int(preds.min())} to "
                f"{int(preds.max())}."
            )
        counts = torch.bincount(labels * self.num_labels + preds, minlength=self.num_labels**2)
        self.confusion = self.confusion.to(counts.device) + counts.view(self.num_labels, self.num_labels)

    def compute(self) -> dict[str, float]:
        """`mean_iou`, `mean_accuracy`, `overall_accuracy` and `iou_<name>` per class (NaN for absent classes)."""
        confusion = self.confusion.double().cpu()
        true_positive = confusion.diag()
        labelled = confusion.sum(dim=1)
        union = labelled + confusion.sum(dim=0) - true_positive
        iou = torch.where(union > 0, true_positive / union, math.nan)
        accuracy = torch.where(labelled > 0, true_positive / labelled, math.nan)
        total = labelled.sum()
        results = {
            "mean_iou": float(iou.nanmean()),
            "mean_accuracy": float(accuracy.nanmean()),
            "overall_accuracy": float(true_positive.sum() / total) if total > 0 else math.nan,
        }
        results.update({f"iou_{self.id2label[k]}": float(iou[k]) for k in range(self.num_labels)})
        return results

    def compute_metrics(self, eval_pred: EvalPrediction, compute_result: bool = True) -> dict[str, float]:
        """The Trainer's `compute_metrics`, for `batch_eval_metrics=True` (or the default, whole-set call).

        The Trainer gathers every process's batch before calling it, so each process accumulates the same matrix.
        """
        predictions = eval_pred.predictions
        if isinstance(predictions, tuple | list):  # models that also return hidden states
            predictions = predictions[0]
        self.update(predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        results = self.compute()
        self.reset()
        return results
