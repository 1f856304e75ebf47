"""Training arguments of the LAD teacher (paper Eq. 7)."""

from dataclasses import dataclass, field

from .segmentation_config import SegmentationConfig


__all__ = ["LadTeacherConfig"]

CONSISTENCY_LOSSES = ("cwd", "cwd_symmetric")


@dataclass
class LadTeacherConfig(SegmentationConfig):
    r"""Arguments of [`LadTeacherTrainer`]: the dual-path consistency (paper Eq. 7) and its warm-up.

    The label noising module is not set here: it is part of the teacher, recorded in its config by
    `add_label_channel(model, LabelNoiser(...))`, so that distillation uses the teacher exactly as it was trained.
    """

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
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}.")
        if self.consistency_loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"consistency_loss must be one of {CONSISTENCY_LOSSES}, got {self.consistency_loss!r}.")
        if self.consistency_temperature <= 0:
            raise ValueError(f"consistency_temperature must be > 0, got {self.consistency_temperature}.")
        if self.consistency_warmup_steps < 0:
            raise ValueError(f"consistency_warmup_steps must be >= 0, got {self.consistency_warmup_steps}.")
