"""Knowledge-distillation losses for segmentation logits: pure functions, tensors in, tensors out."""

import torch
import torch.nn.functional as F

from ..models.losses import at_least_float32
from ..utils.labels import check_labels, resize_labels


__all__ = [
    "channel_kl",
    "channel_wise_divergence",
    "dual_path_consistency",
    "match_teacher",
    "noise_stability",
    "pixel_kl",
    "pixel_wise_divergence",
]


def match_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Check batch and class dims agree; resize the student's logits to the teacher's spatial size if needed."""
    if student_logits.ndim != 4 or teacher_logits.ndim != 4:
        raise ValueError(
            "logits must have shape (batch_size, num_labels, height, width), got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}."
        )
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in "
            "batch size or number of classes; student and teacher must share the label set."
        )
    if student_logits.shape[-2:] != teacher_logits.shape[-2:]:
        student_logits = F.interpolate(
            student_logits, size=teacher_logits.shape[-2:], mode="bilinear", align_corners=False
        )
    return student_logits


def channel_kl(log_p_s: torch.Tensor, log_p_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """`tau^2 / (N * C) * sum p_t * (log p_t - log p_s)` of `(N, C, H * W)` log-distributions over positions."""
    n, c = log_p_t.shape[:2]
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * temperature**2 / (n * c)


def pixel_kl(
    log_p_s: torch.Tensor,
    log_p_t: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """`tau^2` times the mean over pixels (those not `ignore_index` in `labels`) of the KL between `(N, C, H, W)`
    log-distributions over classes."""
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # (N, H, W)
    if labels is None:
        return kl.mean() * temperature**2
    check_labels(labels, log_p_t.shape[1], ignore_index, batch_size=log_p_t.shape[0])
    valid = resize_labels(labels, kl.shape[-2:]) != ignore_index
    return (kl * valid).sum() / valid.sum().clamp(min=1) * temperature**2


def channel_wise_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    r"""Channel-wise distillation (CWD, Shu et al. ICCV 2021).

    Each channel's logits are turned into a distribution over the `H * W` positions, and the student's is pulled
    towards the teacher's:

        CWD(s, t) = tau^2 / (N * C) * sum_{n, c, i} p_t * (log p_t - log p_s),
        p = softmax(logits.flatten(2) / tau, dim=-1)

    Computed with `log_softmax` in float32 or wider, so it stays finite for logits of any magnitude. Adding a constant
    to one channel of either input changes nothing.

    Args:
        student_logits (`torch.Tensor` of shape `(N, C, h, w)`): Resized to the teacher's `(H, W)` when they differ.
        teacher_logits (`torch.Tensor` of shape `(N, C, H, W)`): The target; detach it if it should get no gradient.
        temperature (`float`, *optional*, defaults to 1.0): `tau`.

    Returns:
        A scalar tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    student_logits = match_teacher(student_logits, teacher_logits)
    log_p_s = F.log_softmax(at_least_float32(student_logits.flatten(2)) / temperature, dim=-1)
    log_p_t = F.log_softmax(at_least_float32(teacher_logits.flatten(2)) / temperature, dim=-1)
    return channel_kl(log_p_s, log_p_t, temperature)


def pixel_wise_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    r"""Pixel-wise KL divergence between class distributions (Hinton KD applied at every pixel).

        PKD(s, t) = tau^2 / |valid| * sum_{n, i in valid} sum_c p_t * (log p_t - log p_s),
        p = softmax(logits / tau, dim=1)

    Args:
        student_logits (`torch.Tensor` of shape `(N, C, h, w)`): Resized to the teacher's `(H, W)` when they differ.
        teacher_logits (`torch.Tensor` of shape `(N, C, H, W)`): The target.
        temperature (`float`, *optional*, defaults to 1.0): `tau`.
        labels (`torch.LongTensor` of shape `(N, H', W')`, *optional*): When given, pixels whose label is
            `ignore_index` are left out of the average (labels are resized to `(H, W)` by nearest neighbour).
        ignore_index (`int`, *optional*, defaults to 255): The id of unlabelled pixels.

    Returns:
        A scalar tensor (0 when no pixel is valid).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    student_logits = match_teacher(student_logits, teacher_logits)
    log_p_s = F.log_softmax(at_least_float32(student_logits) / temperature, dim=1)
    log_p_t = F.log_softmax(at_least_float32(teacher_logits) / temperature, dim=1)
    return pixel_kl(log_p_s, log_p_t, temperature, labels, ignore_index)


def dual_path_consistency(
    logits_1: torch.Tensor, logits_2: torch.Tensor, temperature: float = 1.0, symmetric: bool = False
) -> torch.Tensor:
    """The distance `D(O1, O2)` between a LAD teacher's two noised paths (paper Eq. 7), measured with CWD.

    Args:
        logits_1, logits_2 (`torch.Tensor` of shape `(N, C, H, W)`): The teacher's outputs for the same images under
            two independent label noisings.
        temperature (`float`, *optional*, defaults to 1.0): CWD temperature.
        symmetric (`bool`, *optional*, defaults to `False`): `False` gives the paper's one-way `CWD(O1, O2)` with
            gradients through both paths. `True` gives the official code's form `CWD(O1, sg(O2)) + CWD(O2, sg(O1))`
            with a stop-gradient on each target (the official code also weights it by 5 and uses tau = 4).

    Returns:
        A scalar tensor.
    """
    if not symmetric:
        return channel_wise_divergence(logits_1, logits_2, temperature)
    return channel_wise_divergence(logits_1, logits_2.detach(), temperature) + channel_wise_divergence(
        logits_2, logits_1.detach(), temperature
    )


def noise_stability(logits: list[torch.Tensor]) -> torch.Tensor:
    r"""The stability of a LAD teacher under label noise (paper Table 8), per image.

    The mean over ordered pairs `k != j` of the pixel-wise `KL(softmax(O^k) || softmax(O^j))` (softmax over classes),
    averaged over pixels, for the outputs `O^1 .. O^m` of the same images under `m` independent label noisings.
    Lower is more stable; dual-path training must lower it.

    Args:
        logits (`list[torch.Tensor]`, each of shape `(N, C, H, W)`): At least 2 outputs for the same images.

    Returns:
        `torch.Tensor` of shape `(N,)`.
    """
    if len(logits) < 2:
        raise ValueError(f"noise_stability compares outputs under several noisings: got {len(logits)}.")
    log_probs = [F.log_softmax(at_least_float32(x), dim=1) for x in logits]
    pairs = [(k, j) for k in range(len(logits)) for j in range(len(logits)) if k != j]
    kl = sum((log_probs[k].exp() * (log_probs[k] - log_probs[j])).sum(dim=1).mean(dim=(1, 2)) for k, j in pairs)
    return kl / len(pairs)
