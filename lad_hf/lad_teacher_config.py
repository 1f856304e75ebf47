"""Training arguments of the LAD teacher (paper Eq. 7)."""

from dataclasses import dataclass, field

from .noising import FIXED_CODES, IGNORE_ENCODINGS, LabelNoiser
from .segmentation_trainer import SegmentationConfig


__all__ = ["LadTeacherConfig"]

CONSISTENCY_LOSSES = ("cwd", "cwd_symmetric")


@dataclass
class LadTeacherConfig(SegmentationConfig):
    r"""Arguments of [`LadTeacherTrainer`]: the label noising module, the dual-path consistency, and the remedies
    for a teacher that learns to ignore its label channel.

    The label-channel options are recorded in the teacher's config (`label_noiser`), so that distillation uses the
    teacher exactly as it was trained.
    """

    label_noise_alpha: float = field(
        default=0.01, metadata={"help": "Pixel-wise noise level alpha of the label noising module (paper Eq. 5)."}
    )
    label_class_noise: bool = field(
        default=True,
        metadata={"help": "Random class codes per image (the paper). False: fixed codes, see label_fixed_codes."},
    )
    label_fixed_codes: str = field(
        default="standardized",
        metadata={
            "help": "Class codes without class noise: 'standardized' (paper Table 9) or 'official' ((k-11)/10)."
        },
    )
    label_ignore_encoding: str = field(
        default="class", metadata={"help": "Ignore pixels: 'class' (a random code of their own) or 'zero'."}
    )
    label_scale: float = field(
        default=1.0,
        metadata={
            "help": "Multiplier of the label channel (a remedy for a teacher that ignores it; lad_hf's option, the "
            "official code uses 100). Small prototypes found unit-scale teachers ignoring the channel."
        },
    )
    consistency_weight: float = field(default=1.0, metadata={"help": "lambda of the consistency loss (paper Eq. 7)."})
    consistency_loss: str = field(
        default="cwd",
        metadata={
            "help": "'cwd': the paper's CWD(O1, O2). 'cwd_symmetric': the official code's "
            "CWD(O1, sg(O2)) + CWD(O2, sg(O1))."
        },
    )
    consistency_temperature: float = field(default=4.0, metadata={"help": "CWD temperature of the consistency loss."})
    consistency_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Ramp lambda linearly from 0 over this many optimizer steps (lad_hf's remedy, not the paper's), "
            "so that the teacher learns to read its label before the consistency loss pulls the paths together."
        },
    )
    eval_stability: bool = field(
        default=False,
        metadata={
            "help": "Also report the paper's Table 8 stability at evaluation: the mean pairwise pixel-wise KL "
            "between the teacher's outputs under 3 label noisings (3 more forwards per batch)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.label_noise_alpha < 0:
            raise ValueError(f"label_noise_alpha must be >= 0, got {self.label_noise_alpha}.")
        if self.label_fixed_codes not in FIXED_CODES:
            raise ValueError(f"label_fixed_codes must be one of {FIXED_CODES}, got {self.label_fixed_codes!r}.")
        if self.label_class_noise and self.label_fixed_codes != "standardized":
            raise ValueError("label_fixed_codes only applies with label_class_noise=False.")
        if self.label_ignore_encoding not in IGNORE_ENCODINGS:
            raise ValueError(
                f"label_ignore_encoding must be one of {IGNORE_ENCODINGS}, got {self.label_ignore_encoding!r}."
            )
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}.")
        if self.consistency_loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"consistency_loss must be one of {CONSISTENCY_LOSSES}, got {self.consistency_loss!r}.")
        if self.consistency_temperature <= 0:
            raise ValueError(f"consistency_temperature must be > 0, got {self.consistency_temperature}.")
        if self.consistency_warmup_steps < 0:
            raise ValueError(f"consistency_warmup_steps must be >= 0, got {self.consistency_warmup_steps}.")

    def label_noiser(self, num_labels: int) -> LabelNoiser:
        """The label noising module these arguments describe."""
        return LabelNoiser(
            num_labels,
            alpha=self.label_noise_alpha,
            ignore_index=self.ignore_index,
            class_noise=self.label_class_noise,
            scale=self.label_scale,
            fixed_codes=self.label_fixed_codes,
            ignore_encoding=self.label_ignore_encoding,
        )
