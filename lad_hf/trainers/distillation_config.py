"""Training arguments of the student's distillation (paper Eq. 8), and the knowledge-distillation losses it offers."""

from dataclasses import dataclass, field

from ..distillation import KD_LOSSES, DistillationObjective
from .segmentation_config import SegmentationConfig


__all__ = ["DistillationConfig"]

# The options of the methods that must be at least 1, and those that must be at least 0 (None: the method's default).
POSITIVE = (
    "cirkd_pixel_memory_size",
    "cirkd_region_memory_size",
    "cirkd_pixel_contrast_size",
    "cirkd_region_contrast_size",
    "cirkd_max_anchors",
    "maskd_tokens",
)
NON_NEGATIVE = (
    "kd_weight",
    "task_weight",
    "auxiliary_loss_weight",
    "fakd_ratio",
    "fakd_warmup_steps",
    "maskd_mask_steps",
)


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
            "help": "; ".join(f"'{name}': {method.description}" for name, method in KD_LOSSES.items())
            + ". FAKD needs a student whose classifier is a 1x1 conv at decode_head.classifier."
        },
    )
    kd_weight: float | None = field(
        default=None,
        metadata={
            "help": "beta, the weight of the KD loss (paper Eq. 8). Default: the method's published one (3 for CWD "
            "and pixel KD, as LAD; 1 for SKD, IFVD, CIRKD and MasKD, whose terms carry their own code's weights)."
        },
    )
    kd_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Temperature tau of the KD loss. Default: the method's (4 for CWD, 1 for the pixel KD of SKD, "
            "IFVD and CIRKD)."
        },
    )
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
    skd_adversarial: bool = field(
        default=True,
        metadata={
            "help": "SKD and IFVD: the holistic adversarial term (a discriminator on the logits, its own step)."
        },
    )
    cirkd_pixel_memory_size: int = field(default=20000, metadata={"help": "CIRKD: pixel embeddings kept per class."})
    cirkd_region_memory_size: int = field(default=2000, metadata={"help": "CIRKD: region embeddings kept per class."})
    cirkd_pixel_contrast_size: int = field(
        default=4096, metadata={"help": "CIRKD: pixel embeddings per class each anchor is contrasted with."}
    )
    cirkd_region_contrast_size: int = field(
        default=1024, metadata={"help": "CIRKD: region embeddings per class each anchor is contrasted with."}
    )
    cirkd_max_anchors: int = field(
        default=1024, metadata={"help": "CIRKD: labelled pixels sampled per step as anchors (lad_hf's memory cap)."}
    )
    maskd_tokens: int = field(default=8, metadata={"help": "MasKD: receptive tokens (masks)."})
    maskd_mask_steps: int = field(
        default=10000,
        metadata={"help": "MasKD: steps of the first stage, which trains the tokens on the frozen teacher."},
    )
    maskd_mask_learning_rate: float = field(
        default=0.1, metadata={"help": "MasKD: learning rate of the first stage (SGD, polynomial decay)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"kd_loss must be one of {tuple(KD_LOSSES)}, got {self.kd_loss!r}.")
        self.kd_weight = self.kd.default_weight if self.kd_weight is None else self.kd_weight
        self.kd_temperature = self.kd.default_temperature if self.kd_temperature is None else self.kd_temperature
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        for name in NON_NEGATIVE:
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")

    @property
    def kd(self) -> type[DistillationObjective]:
        """The method `kd_loss` names (`lad_hf.distillation.KD_LOSSES`)."""
        return KD_LOSSES[self.kd_loss]
