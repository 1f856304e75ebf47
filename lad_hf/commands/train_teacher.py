"""`lad-hf train-teacher`: a LAD teacher, dual-path trained with a noised label channel (paper Eq. 7).

lad-hf train-teacher --config configs/cityscapes_deeplabv3_r18_teacher.yaml
accelerate launch scripts/train_teacher.py --config configs/cityscapes_deeplabv3_r18_teacher.yaml
"""

from ..label_channel import add_label_channel
from ..lad_teacher_config import LadTeacherConfig
from ..lad_teacher_trainer import LadTeacherTrainer
from .train import train_model


DESCRIPTION = (
    "Train a LAD teacher: the model reads the image plus the noised ground-truth label as one more input channel, "
    "on two noised paths with a consistency loss. Any segmentation model can be widened into one."
)


def widen(model, model_args, args: LadTeacherConfig, id2label: dict) -> None:
    """Give the model its label channel, unless it is already a teacher (a saved one, resumed or fine-tuned)."""
    if getattr(model.config, "label_noiser", None) is None:
        add_label_channel(model, args.label_noiser(len(id2label)), model_args.label_stem_channels)


def main(argv: list[str] | None = None, prog: str = "lad-hf train-teacher") -> dict:
    return train_model(argv, prog, DESCRIPTION, LadTeacherConfig, LadTeacherTrainer, prepare=widen)
