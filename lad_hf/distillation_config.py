"""Training arguments of the student's distillation (paper Eq. 8), and the knowledge-distillation losses it offers."""

from collections.abc import Callable
from dataclasses import dataclass, field

from .fakd import fakd_channel_wise_divergence, fakd_pixel_wise_divergence
from .losses import channel_wise_divergence, pixel_wise_divergence
from .segmentation_config import SegmentationConfig


__all__ = ["KD_LOSSES", "DistillationConfig", "KDLoss"]


@dataclass(frozen=True)
class KDLoss:
    """A knowledge-distillation loss of `DistillationTrainer`: `function(student_logits, teacher_logits,
    temperature=tau, **inputs)`, a scalar tensor.

    Args:
        function: The loss.
        description: What it is, for `--help` and the model card.
        uses_labels: `inputs` holds `labels` and `ignore_index`: unlabelled pixels are left out.
        uses_student_features: `inputs` holds FAKD's `variance`, from the features the student's classifier reads.
    """

    function: Callable
    description: str
    uses_labels: bool = False
    uses_student_features: bool = False


KD_LOSSES = {
    "cwd": KDLoss(channel_wise_divergence, "channel-wise distillation, CWD (the paper's)"),
    "pixel_kd": KDLoss(pixel_wise_divergence, "pixel-wise KL divergence", uses_labels=True),
    "fakd_cwd": KDLoss(
        fakd_channel_wise_divergence,
        "FAKD's upper bound of CWD under class-conditional feature augmentation of the student (lad_hf.fakd)",
        uses_student_features=True,
    ),
    "fakd_pixel": KDLoss(
        fakd_pixel_wise_divergence,
        "FAKD's upper bound of pixel-wise KD under class-conditional feature augmentation of the student",
        uses_labels=True,
        uses_student_features=True,
    ),
}


@dataclass
class DistillationConfig(SegmentationConfig):
    r"""Arguments of [`DistillationTrainer`]: `loss = task_weight * CE + kd_weight * KD(student, teacher)`."""

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: a Hub id or a local folder, loaded with from_pretrained unless the trainer gets a "
            "teacher model. A LAD teacher's recorded label noiser comes with it."
        },
    )
    kd_loss: str = field(
        default="cwd",
        metadata={
            "help": "; ".join(f"'{name}': {loss.description}" for name, loss in KD_LOSSES.items())
            + ". FAKD needs a student whose classifier is a 1x1 conv at decode_head.classifier."
        },
    )
    kd_weight: float = field(default=3.0, metadata={"help": "beta, the weight of the KD loss (paper Eq. 8)."})
    kd_temperature: float = field(default=4.0, metadata={"help": "Temperature tau of the KD loss."})
    fakd_ratio: float = field(
        default=1.0, metadata={"help": "FAKD: strength of the feature augmentation (its lambda), after the warm-up."}
    )
    fakd_warmup_steps: int | None = field(
        default=None,
        metadata={"help": "FAKD: steps of the cosine warm-up of the ratio from 0 (default: the whole run)."},
    )
    task_weight: float = field(default=1.0, metadata={"help": "Weight of the student's cross-entropy."})
    auxiliary_loss_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the student's auxiliary-head cross-entropy, for students that return auxiliary_logits. "
            "Default: the student config's auxiliary_loss_weight (0.4 for lad_hf models; the official code uses "
            "0.02 for students)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"kd_loss must be one of {tuple(KD_LOSSES)}, got {self.kd_loss!r}.")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        for name in ("kd_weight", "task_weight", "auxiliary_loss_weight", "fakd_ratio", "fakd_warmup_steps"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")

    @property
    def kd(self) -> KDLoss:
        """The KD loss `kd_loss` names."""
        return KD_LOSSES[self.kd_loss]
