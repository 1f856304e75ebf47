"""IFVD (Wang et al., ECCV 2020), `kd_loss="ifvd"`, as CIRKD's code reimplements it: pixel-wise KD (weight 1) +
intra-class feature variation distillation (weight 20): each pixel's cosine similarity to its class's mean feature in
its image, matched by MSE (pixels without a label count as similarity 1 on both sides, as in CIRKD's code); + SKD's
adversarial term (`lad_hf.distillation.adversarial`). Memory: `B x K x C` class means.
"""

import torch
import torch.nn.functional as F

from ..utils.labels import resize_labels
from .adversarial import PixelKDAdversarialObjective
from .features import to_size
from .objective import KDInputs


__all__ = ["IFVDObjective", "class_variation_loss"]


def class_variation_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    ignore_index: int = 255,
) -> torch.Tensor:
    """IFVD's intra-class feature variation distillation: each pixel's cosine similarity to the mean feature of its
    class in its image, for the student and the teacher, matched by MSE over all pixels (a pixel without a label is
    its own centre on both sides: similarity 1, no error, as in CIRKD's code).

    Args:
        student_features (`torch.Tensor` of shape `(B, C_s, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_features (`torch.Tensor` of shape `(B, C_t, H, W)`).
        labels (`torch.LongTensor` of shape `(B, H', W')`): Resized to `(H, W)` by nearest neighbour.
    """
    student_features = to_size(student_features, teacher_features.shape[-2:])
    labels = resize_labels(labels, teacher_features.shape[-2:]).flatten(1)  # (B, N)
    valid = labels != ignore_index
    one_hot = F.one_hot(labels.where(valid, 0), num_labels).float() * valid[..., None]  # (B, N, K)
    similarities = []
    for features in (student_features, teacher_features):
        flat = features.float().flatten(2)  # (B, C, N)
        centres = (flat @ one_hot) / (one_hot.sum(1, keepdim=True) + 1e-6)  # (B, C, K)
        own = torch.gather(centres, 2, labels.where(valid, 0)[:, None].expand(-1, flat.shape[1], -1))
        own = torch.where(valid[:, None], own, flat)  # an unlabelled pixel is its own centre
        similarities.append(F.cosine_similarity(flat, own, dim=1))  # (B, N)
    return F.mse_loss(similarities[0], similarities[1])


class IFVDObjective(PixelKDAdversarialObjective):
    """IFVD: pixel-wise KD + intra-class feature variation distillation + (optionally) the adversarial term."""

    description = "IFVD: pixel KD + intra-class feature variation + adversarial distillation"
    variation_weight = 20.0

    def __init__(self, num_labels: int, ignore_index: int = 255, adversarial: bool = True, temperature: float = 1.0):
        super().__init__(num_labels, adversarial, temperature)
        self.num_labels, self.ignore_index = num_labels, ignore_index

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels) -> "IFVDObjective":
        return cls(num_labels, args.ignore_index, adversarial=args.skd_adversarial, temperature=args.kd_temperature)

    def feature_terms(self, inputs: KDInputs):
        variation = class_variation_loss(
            inputs.student_features, inputs.teacher_features, inputs.labels, self.num_labels, self.ignore_index
        )
        return {"loss_variation": self.variation_weight * variation}
