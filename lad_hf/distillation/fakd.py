r"""Feature Augmented KD (FAKD, Yuan et al.): the KD loss under infinitely many class-conditional Gaussian
augmentations of the student's features, through a closed-form upper bound (FAKD Eq. 7 for CWD, Eq. 8 for
pixel-wise KD): `kd_loss="fakd_cwd"` and `"fakd_pixel"`. No official code exists; this is the derivation
implemented.

The student's logits are a linear classifier of its features: `z[k, i] = w_k . f_i + b_k` (a 1x1 convolution).
Augmenting a feature along its class's directions, `f_i + d_i` with `d_i ~ N(0, ratio * S[y_i])` (`S[y]`: the
covariance of class `y`'s features, estimated online as in ISDA), moves each logit by a Gaussian:

    z~[k, i] = z[k, i] + w_k . d_i,    w_k . d_i ~ N(0, s2[k, i]),    s2[k, i] = ratio * w_k^T S[y_i] w_k

A KL-divergence KD loss is `sum p_t * (log p_t - z~ / tau) + log Z~`, where `Z~` is the student's partition function
(over positions for CWD, over classes for pixel-wise KD). The expected first part is unchanged (`E[z~] = z`); the
expected log-partition is bounded by Jensen's inequality and the Gaussian moment-generating function:

    E[log sum_j exp(z~_j / tau)] <= log sum_j E[exp(z~_j / tau)] = log sum_j exp(z_j / tau + s2_j / (2 tau^2))

So the bound is the plain loss with the student's log-partition computed on `z / tau + s2 / (2 tau^2)`. It equals the
plain loss when `s2 = 0`, and is never below it (log-sum-exp grows with its arguments).

Shapes: `B` images, `K` classes, `D` feature channels, `h x w` positions. Memory: the estimator keeps `K x D x D`
covariances (K = 150, D = 512: 150 * 512 * 512 * 4 bytes = 157 MB in float32); the per-step table
`w_k^T S[y] w_k` is `K x K`, gathered by each position's label into `B x K x h x w`, the logits' size. Nothing of size
`B*h*w x K x D` is ever built.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.losses import at_least_float32
from ..utils.labels import resize_labels
from .losses import channel_kl, match_teacher, pixel_kl
from .objective import DistillationObjective, KDInputs


__all__ = [
    "ClassFeatureCovariance",
    "FAKDObjective",
    "FAKDPixelObjective",
    "augmentation_variance",
    "cosine_ratio",
    "fakd_channel_wise_divergence",
    "fakd_pixel_wise_divergence",
]


class ClassFeatureCovariance(nn.Module):
    """Online per-class mean and covariance of features (ISDA's estimator): each batch's class statistics are merged
    into the running ones, weighted by the class's pixel counts, so the estimate is that of all features seen.

    Args:
        num_labels (`int`): `K`.
        num_features (`int`): `D`.
        ignore_index (`int`, *optional*, defaults to 255): Label of pixels left out.
    """

    def __init__(self, num_labels: int, num_features: int, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("count", torch.zeros(num_labels, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_labels, num_features, dtype=torch.float64))
        self.register_buffer("covariance", torch.zeros(num_labels, num_features, num_features, dtype=torch.float64))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: `features (B, D, h, w)` and `labels (B, h, w)` at the features' resolution."""
        flat = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).to(torch.float64)
        labels = labels.reshape(-1)
        for k in labels.unique().tolist():
            if k == self.ignore_index or not 0 <= k < self.count.numel():
                continue
            members = flat[labels == k]
            n = members.shape[0]
            batch_mean = members.mean(0)
            centred = members - batch_mean
            batch_covariance = centred.T @ centred / n
            weight = n / (self.count[k] + n)
            difference = self.mean[k] - batch_mean
            self.covariance[k] = (
                (1 - weight) * self.covariance[k]
                + weight * batch_covariance
                + weight * (1 - weight) * torch.outer(difference, difference)
            )
            self.mean[k] = (1 - weight) * self.mean[k] + weight * batch_mean
            self.count[k] += n


def augmentation_variance(
    classifier_weight: torch.Tensor,
    covariance: torch.Tensor,
    labels: torch.Tensor,
    ratio: float,
    ignore_index: int = 255,
) -> torch.Tensor:
    """`s2[b, k, i] = ratio * w_k^T S[y_i] w_k`: the variance of each logit under the feature augmentation.

    Args:
        classifier_weight (`torch.Tensor` of shape `(K, D)`): The student's classifier (a 1x1 conv's weight, squeezed).
        covariance (`torch.Tensor` of shape `(K, D, D)`): Per-class feature covariances.
        labels (`torch.Tensor` of shape `(B, h, w)`): Each position's class; `ignore_index` positions get 0.
        ratio (`float`): The augmentation strength (FAKD's lambda).

    Returns:
        `(B, K, h, w)`, in the classifier's dtype.
    """
    weight = classifier_weight.detach().to(covariance.dtype)
    table = torch.einsum("kd,yde,ke->ky", weight, covariance, weight).clamp_min(0)  # (K classes, K labels)
    valid = labels != ignore_index
    variance = table[:, labels.clamp(0, table.shape[1] - 1)].permute(1, 0, 2, 3)  # (B, K, h, w)
    variance = variance * valid[:, None]
    return (ratio * variance).to(classifier_weight.dtype)


def cosine_ratio(step: int, total_steps: int, max_ratio: float = 1.0) -> float:
    """FAKD's ratio schedule: from 0 to `max_ratio` along a half cosine over `total_steps`."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return max_ratio * (1 - math.cos(math.pi * progress)) / 2


def _bounded_log_softmax(logits: torch.Tensor, variance: torch.Tensor, temperature: float, dim: int) -> torch.Tensor:
    """`z / tau - log sum exp(z / tau + s2 / (2 tau^2))` along `dim`: the student's log-probabilities of the bound."""
    scaled = at_least_float32(logits) / temperature
    shifted = scaled + at_least_float32(variance) / (2 * temperature**2)
    return scaled - torch.logsumexp(shifted, dim=dim, keepdim=True)


def _check(student_logits, teacher_logits, variance, temperature) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if variance.shape != teacher_logits.shape:
        raise ValueError(
            f"variance {tuple(variance.shape)} must have the teacher logits' shape {tuple(teacher_logits.shape)}: "
            "compute it with augmentation_variance from labels at the teacher's resolution."
        )
    return match_teacher(student_logits, teacher_logits)


def fakd_channel_wise_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, variance: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The FAKD upper bound of CWD (FAKD Eq. 7): `channel_wise_divergence` with the student's per-channel
    log-partition over positions taken on `z / tau + s2 / (2 tau^2)`.

    Args:
        student_logits (`(N, C, h, w)`): Resized to the teacher's `(H, W)` when they differ.
        teacher_logits (`(N, C, H, W)`): The target.
        variance (`(N, C, H, W)`): `augmentation_variance` at the teacher's resolution (bilinear resizing of the
            student's logits mixes neighbours, whose variance is at most the mixed variances: still a bound).
        temperature (`float`): `tau`.
    """
    student_logits = _check(student_logits, teacher_logits, variance, temperature)
    log_p_s = _bounded_log_softmax(student_logits.flatten(2), variance.flatten(2), temperature, dim=-1)
    log_p_t = F.log_softmax(at_least_float32(teacher_logits.flatten(2)) / temperature, dim=-1)
    return channel_kl(log_p_s, log_p_t, temperature)


def fakd_pixel_wise_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    variance: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """The FAKD upper bound of pixel-wise KD (FAKD Eq. 8): `pixel_wise_divergence` with each pixel's log-partition
    over classes taken on `z / tau + s2 / (2 tau^2)`. Shapes as `fakd_channel_wise_divergence`; `labels (N, H, W)`
    leave out `ignore_index` pixels."""
    student_logits = _check(student_logits, teacher_logits, variance, temperature)
    log_p_s = _bounded_log_softmax(student_logits, variance, temperature, dim=1)
    log_p_t = F.log_softmax(at_least_float32(teacher_logits) / temperature, dim=1)
    return pixel_kl(log_p_s, log_p_t, temperature, labels, ignore_index)


class FAKDObjective(DistillationObjective):
    """FAKD's bound of CWD (`kd_loss="fakd_cwd"`): the class covariance of the student's classifier features is
    updated with every forward (kept in checkpoints: a resumed run continues the estimate), and each student logit's
    variance under augmentations of strength `cosine_ratio(step)` enters the bound at the teacher's resolution.

    Args:
        num_labels (`int`): `K`.
        num_features (`int`): `D`, the width of the student's classifier input.
        temperature (`float`): `tau`.
        ratio (`float`): The augmentation strength after the warm-up.
        warmup_steps (`int`, *optional*): Steps of the cosine warm-up from 0 (default: the whole run).
        ignore_index (`int`): Label of unlabelled pixels.
    """

    description = (
        "FAKD's upper bound of CWD under class-conditional feature augmentation of the student (lad_hf.distillation"
        ".fakd)"
    )
    reads_student_features = True

    def __init__(
        self,
        num_labels: int,
        num_features: int,
        temperature: float = 4.0,
        ratio: float = 1.0,
        warmup_steps: int | None = None,
        ignore_index: int = 255,
    ):
        super().__init__()
        self.temperature, self.ratio, self.warmup_steps, self.ignore_index = (
            temperature,
            ratio,
            warmup_steps,
            ignore_index,
        )
        self.feature_covariance = ClassFeatureCovariance(num_labels, num_features, ignore_index)

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels) -> "FAKDObjective":
        return cls(
            num_labels,
            student_channels,
            args.kd_temperature,
            args.fakd_ratio,
            args.fakd_warmup_steps,
            args.ignore_index,
        )

    def variance(self, inputs: KDInputs) -> torch.Tensor:
        """Update the class covariance with this forward's classifier features, then the variance of each student
        logit under augmentations of strength `cosine_ratio(step)`, at the teacher's resolution."""
        features, labels = inputs.student_features, inputs.labels
        self.feature_covariance.update(features, resize_labels(labels, features.shape[-2:]))
        ratio = cosine_ratio(inputs.step, self.warmup_steps or inputs.max_steps, self.ratio)
        weight = inputs.student_classifier.weight.flatten(1)  # (K, D)
        size = inputs.teacher_logits.shape[-2:]
        return augmentation_variance(
            weight, self.feature_covariance.covariance, resize_labels(labels, size), ratio, self.ignore_index
        )

    def forward(self, inputs: KDInputs):
        loss = fakd_channel_wise_divergence(
            inputs.student_logits, inputs.teacher_logits, self.variance(inputs), self.temperature
        )
        return {"loss_kd": loss}

    def card_settings(self) -> dict:
        return {"FAKD ratio": self.ratio, "FAKD warm-up steps": self.warmup_steps or "the run"}


class FAKDPixelObjective(FAKDObjective):
    """FAKD's bound of pixel-wise KD (`kd_loss="fakd_pixel"`), over the labelled pixels of the teacher's grid."""

    description = "FAKD's upper bound of pixel-wise KD under class-conditional feature augmentation of the student"
    mean_over_labelled_pixels = True

    def forward(self, inputs: KDInputs):
        loss = fakd_pixel_wise_divergence(
            inputs.student_logits,
            inputs.teacher_logits,
            self.variance(inputs),
            self.temperature,
            labels=inputs.labels,
            ignore_index=self.ignore_index,
        )
        return {"loss_kd": loss}
