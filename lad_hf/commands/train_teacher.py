"""`lad-hf train-teacher`: a LAD teacher, dual-path trained with a noised label channel (paper Eq. 7).

lad-hf train-teacher --config configs/cityscapes_deeplabv3_r18_teacher.yaml
accelerate launch scripts/train_teacher.py --config configs/cityscapes_deeplabv3_r18_teacher.yaml
"""

from transformers.utils import logging

from ..label_channel.noising import is_lad_teacher
from ..label_channel.teacher import add_label_channel
from ..trainers.lad_teacher_config import LadTeacherConfig
from ..trainers.lad_teacher_trainer import LadTeacherTrainer
from .arguments import DataArguments, LabelChannelArguments, ModelArguments, parse_arguments
from .train import train_model


logger = logging.get_logger(__name__)

DESCRIPTION = (
    "Train a LAD teacher: the model reads the image plus the noised ground-truth label as one more input channel, "
    "on two noised paths with a consistency loss. Any segmentation model can be widened into one."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf train-teacher") -> dict:
    model_args, data_args, args, label_args, _ = parse_arguments(
        (ModelArguments, DataArguments, LadTeacherConfig, LabelChannelArguments), argv, prog, DESCRIPTION
    )

    def widen(model, id2label: dict) -> None:
        """Give the model its label channel, unless it is a teacher already (a saved one, fine-tuned)."""
        noiser = label_args.label_noiser(len(id2label), args.ignore_index)
        if not is_lad_teacher(model.config):
            add_label_channel(model, noiser, label_args.label_stem_channels)
        elif model.config.label_noiser != noiser.to_dict():
            logger.warning(
                f"{model_args.model_name_or_path} is a LAD teacher already: it keeps the label noiser it records, "
                f"{model.config.label_noiser}, and the label options are not used."
            )

    return train_model(model_args, data_args, args, LadTeacherTrainer, prepare=widen)
