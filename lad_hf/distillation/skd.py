"""SKD (Liu et al., TPAMI 2020), `kd_loss="skd"`, as CIRKD's code reimplements it: pixel-wise KD (weight 1,
temperature 1) + pair-wise similarity distillation (weight 10): features max-pooled 2x2, L2-normalised, the `N x N`
cosine-similarity maps of each image matched by MSE; + the holistic adversarial term (`skd_adversarial`,
`lad_hf.distillation.adversarial`): a discriminator on the logits trained with a hinge loss (weight 0.1, Adam 4e-4)
by its own optimizer step after each student step, and the student pushed by `-D(student)` (weight 0.001).

Memory: `B` maps of `N x N` similarities with `N` at most `max_positions` (4096: pooled further when needed, never
all pixels of a 512x1024 batch; 64 MB per map in float32).
"""

import torch
import torch.nn.functional as F

from .adversarial import PixelKDAdversarialObjective
from .features import pool_to, to_size
from .objective import KDInputs


__all__ = ["SKDObjective", "pairwise_similarity_loss"]


def pairwise_similarity_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, max_positions: int = 4096
) -> torch.Tensor:
    """SKD's pair-wise distillation (CIRKD's form): both feature maps max-pooled 2x2 (and further, to at most
    `max_positions` positions), L2-normalised over channels; the MSE between the students' and the teachers' `N x N`
    cosine-similarity maps of each image.

    Args:
        student_features (`torch.Tensor` of shape `(B, C_s, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_features (`torch.Tensor` of shape `(B, C_t, H, W)`).
        max_positions (`int`, *optional*, defaults to 4096): Cap of `N`.
    """
    student_features = to_size(student_features, teacher_features.shape[-2:])
    maps = []
    for features in (student_features, teacher_features):
        pooled = F.normalize(pool_to(features.float(), max_positions, factor=2), dim=1).flatten(2)  # (B, C, N)
        maps.append(pooled.transpose(1, 2) @ pooled)  # (B, N, N)
    return F.mse_loss(maps[0], maps[1])


class SKDObjective(PixelKDAdversarialObjective):
    """SKD: pixel-wise KD + pair-wise similarity distillation + (optionally) the adversarial term."""

    description = "SKD: pixel KD + pair-wise similarity + adversarial distillation (lad_hf.distillation.skd)"
    pairwise_weight = 10.0

    def __init__(self, num_labels: int, adversarial: bool = True, max_positions: int = 4096, temperature: float = 1.0):
        super().__init__(num_labels, adversarial, temperature)
        self.max_positions = max_positions

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels) -> "SKDObjective":
        return cls(num_labels, adversarial=args.skd_adversarial, temperature=args.kd_temperature)

    def feature_terms(self, inputs: KDInputs):
        similarity = pairwise_similarity_loss(inputs.student_features, inputs.teacher_features, self.max_positions)
        return {"loss_pairwise": self.pairwise_weight * similarity}
