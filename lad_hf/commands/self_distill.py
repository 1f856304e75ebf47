"""`lad-hf self-distill`: SDES self-distillation, expert decoders on the student's encoder, no teacher.

lad-hf self-distill --config configs/cityscapes_deeplabv3_r18_sdes.yaml
accelerate launch scripts/self_distill.py --config configs/cityscapes_deeplabv3_r18_sdes.yaml
"""

from ..trainers.self_distillation_config import SelfDistillationConfig
from ..trainers.self_distillation_trainer import SelfDistillationTrainer
from .arguments import DataArguments, ModelArguments, parse_arguments
from .train import train_model


DESCRIPTION = (
    "Self-distil a segmentation model after SDES: expert decoders on its encoder distil their prediction ensemble "
    "into its decoder and their feature ensemble into its encoder; the saved model is the student alone."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf self-distill") -> dict:
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, SelfDistillationConfig), argv, prog, DESCRIPTION
    )
    return train_model(model_args, data_args, args, SelfDistillationTrainer)
