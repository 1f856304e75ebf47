"""Training arguments of the student's distillation (paper Eq. 8)."""

from dataclasses import dataclass, field

from .segmentation_trainer import SegmentationConfig


__all__ = ["DistillationConfig"]

KD_LOSSES = ("cwd", "pixel_kd", "fakd_cwd", "fakd_pixel")


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
            "help": "'cwd': channel-wise distillation (the paper). 'pixel_kd': pixel-wise KL divergence. "
            "'fakd_cwd', 'fakd_pixel': their FAKD upper bounds under class-conditional feature augmentation of the "
            "student (lad_hf.fakd; the student's classifier must be a 1x1 conv at decode_head.classifier)."
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
            raise ValueError(f"kd_loss must be one of {KD_LOSSES}, got {self.kd_loss!r}.")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        for name in ("kd_weight", "task_weight", "auxiliary_loss_weight", "fakd_ratio", "fakd_warmup_steps"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
