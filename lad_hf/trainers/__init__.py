"""The `Trainer` subclasses, each with its `TrainingArguments` subclass: the supervised baseline, the LAD teacher's
dual-path training (paper Eq. 7), distillation from a frozen teacher (Eq. 8), and SDES self-distillation."""

from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .lad_teacher_config import LadTeacherConfig
from .lad_teacher_trainer import LadTeacherTrainer
from .segmentation_config import SegmentationConfig
from .segmentation_trainer import SegmentationTrainer
from .self_distillation_config import SelfDistillationConfig
from .self_distillation_trainer import SelfDistillationTrainer


__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "LadTeacherConfig",
    "LadTeacherTrainer",
    "SegmentationConfig",
    "SegmentationTrainer",
    "SelfDistillationConfig",
    "SelfDistillationTrainer",
]
