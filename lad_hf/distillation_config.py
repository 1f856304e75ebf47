"""Training arguments of the student's distillation (paper Eq. 8), and the knowledge-distillation losses it offers."""

from collections.abc import Callable
from dataclasses import dataclass, field

from .fakd import fakd_channel_wise_divergence, fakd_pixel_wise_divergence
from .kd_methods import CIRKDObjective, IFVDObjective, MasKDObjective, SKDObjective
from .losses import channel_wise_divergence, pixel_wise_divergence
from .segmentation_config import SegmentationConfig


__all__ = ["KD_LOSSES", "DistillationConfig", "KDLoss"]


@dataclass(frozen=True)
class KDLoss:
    """A knowledge-distillation loss of `DistillationTrainer`: either a `function(student_logits, teacher_logits,
    temperature=tau, **inputs)` returning a scalar tensor, or an `objective`: an `nn.Module` class whose
    `from_args(args, num_labels, student_channels, teacher_channels)` the trainer builds, called with the logits,
    the decoder features and the labels, and returning its weighted terms by name (see `lad_hf.kd_methods`).

    Args:
        description: What it is, for `--help` and the model card.
        function, objective: The loss.
        weight, temperature: The method's published beta and tau: the `kd_weight` and `kd_temperature` it gets by
            default.
        uses_labels: A function's `inputs` hold `labels` and `ignore_index`: unlabelled pixels are left out.
        uses_student_features: The features the student's classifier reads: a function gets FAKD's `variance`
            from them; an objective gets them.
        uses_teacher_features: An objective gets the teacher's classifier features too.
    """

    description: str
    function: Callable | None = None
    objective: type | None = None
    weight: float = 3.0
    temperature: float = 4.0
    uses_labels: bool = False
    uses_student_features: bool = False
    uses_teacher_features: bool = False


KD_LOSSES = {
    "cwd": KDLoss("channel-wise distillation, CWD (the paper's)", channel_wise_divergence),
    "pixel_kd": KDLoss("pixel-wise KL divergence", pixel_wise_divergence, uses_labels=True),
    "fakd_cwd": KDLoss(
        "FAKD's upper bound of CWD under class-conditional feature augmentation of the student (lad_hf.fakd)",
        fakd_channel_wise_divergence,
        uses_student_features=True,
    ),
    "fakd_pixel": KDLoss(
        "FAKD's upper bound of pixel-wise KD under class-conditional feature augmentation of the student",
        fakd_pixel_wise_divergence,
        uses_labels=True,
        uses_student_features=True,
    ),
    # The paper's comparison methods (Table 1), with their code's weights inside (lad_hf.kd_methods).
    "skd": KDLoss(
        "SKD: pixel KD + pair-wise similarity + adversarial distillation (lad_hf.kd_methods)",
        objective=SKDObjective,
        weight=1.0,
        temperature=1.0,
        uses_student_features=True,
        uses_teacher_features=True,
    ),
    "ifvd": KDLoss(
        "IFVD: pixel KD + intra-class feature variation + adversarial distillation",
        objective=IFVDObjective,
        weight=1.0,
        temperature=1.0,
        uses_student_features=True,
        uses_teacher_features=True,
    ),
    "cirkd": KDLoss(
        "CIRKD: pixel KD + cross-image pixel-to-pixel and memory-based pixel and region contrastive distillation",
        objective=CIRKDObjective,
        weight=1.0,
        temperature=1.0,
        uses_student_features=True,
        uses_teacher_features=True,
    ),
    "maskd": KDLoss(
        "MasKD: mask-weighted logit distillation with receptive tokens trained first on the teacher",
        objective=MasKDObjective,
        weight=1.0,
        temperature=1.0,
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
        self.kd_weight = self.kd.weight if self.kd_weight is None else self.kd_weight
        self.kd_temperature = self.kd.temperature if self.kd_temperature is None else self.kd_temperature
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        for name in ("kd_weight", "task_weight", "auxiliary_loss_weight", "fakd_ratio", "fakd_warmup_steps"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("cirkd_pixel_memory_size", "cirkd_region_memory_size", "cirkd_pixel_contrast_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("cirkd_region_contrast_size", "cirkd_max_anchors", "maskd_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.maskd_mask_steps < 0:
            raise ValueError(f"maskd_mask_steps must be >= 0, got {self.maskd_mask_steps}.")

    @property
    def kd(self) -> KDLoss:
        """The KD loss `kd_loss` names."""
        return KD_LOSSES[self.kd_loss]
