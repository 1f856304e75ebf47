"""Knowledge distillation: the KD losses as pure functions, and the methods of `DistillationTrainer`.

Each method is one file and one entry of `KD_LOSSES` below (the `kd_loss` option), a `DistillationObjective` that
carries what it needs: its loss, the modules it trains besides the student, and any step of its own
(`objective.py`). SDES, which needs no teacher, is `SelfDistillationTrainer`'s (`sdes.py`).
"""

from .adversarial import AdversarialTerm, Discriminator
from .cirkd import CIRKDObjective, ContrastMemory, cross_image_similarity_loss
from .cwd import CWDObjective
from .fakd import (
    ClassFeatureCovariance,
    FAKDObjective,
    FAKDPixelObjective,
    augmentation_variance,
    cosine_ratio,
    fakd_channel_wise_divergence,
    fakd_pixel_wise_divergence,
)
from .features import pool_to
from .ifvd import IFVDObjective, class_variation_loss
from .losses import channel_wise_divergence, dual_path_consistency, noise_stability, pixel_wise_divergence
from .maskd import MasKDObjective, MaskTokens, masked_distillation_loss
from .objective import DistillationObjective, KDInputs
from .pixel_kd import PixelKDObjective
from .sdes import SelfDecouplingStudent, feature_ensemble
from .skd import SKDObjective, pairwise_similarity_loss


# The methods of DistillationTrainer by their `kd_loss` name. A new method: a file with its DistillationObjective,
# and its line here.
KD_LOSSES: dict[str, type[DistillationObjective]] = {
    "cwd": CWDObjective,
    "pixel_kd": PixelKDObjective,
    "fakd_cwd": FAKDObjective,
    "fakd_pixel": FAKDPixelObjective,
    # The paper's comparison methods (Table 1), with their code's weights inside.
    "skd": SKDObjective,
    "ifvd": IFVDObjective,
    "cirkd": CIRKDObjective,
    "maskd": MasKDObjective,
}

__all__ = [
    "KD_LOSSES",
    "AdversarialTerm",
    "CIRKDObjective",
    "CWDObjective",
    "ClassFeatureCovariance",
    "ContrastMemory",
    "Discriminator",
    "DistillationObjective",
    "FAKDObjective",
    "FAKDPixelObjective",
    "IFVDObjective",
    "KDInputs",
    "MasKDObjective",
    "MaskTokens",
    "PixelKDObjective",
    "SKDObjective",
    "SelfDecouplingStudent",
    "augmentation_variance",
    "channel_wise_divergence",
    "class_variation_loss",
    "cosine_ratio",
    "cross_image_similarity_loss",
    "dual_path_consistency",
    "fakd_channel_wise_divergence",
    "fakd_pixel_wise_divergence",
    "feature_ensemble",
    "masked_distillation_loss",
    "noise_stability",
    "pairwise_similarity_loss",
    "pixel_wise_divergence",
    "pool_to",
]
