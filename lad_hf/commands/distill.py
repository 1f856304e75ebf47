"""`lad-hf distill`: an image-only student distilled from a frozen teacher, LAD or conventional (paper Eq. 8).

lad-hf distill --config configs/cityscapes_deeplabv3_r18_distill.yaml
accelerate launch scripts/distill.py --config configs/cityscapes_deeplabv3_r18_distill.yaml
"""

from ..lora import dinov2_lora_config
from ..trainers.distillation_config import DistillationConfig
from ..trainers.distillation_trainer import DistillationTrainer
from .arguments import DataArguments, LoraArguments, ModelArguments, parse_arguments
from .train import train_model


DESCRIPTION = (
    "Distil a frozen teacher into a student that sees only the image: cross-entropy plus CWD (or pixel KD) towards "
    "the teacher's logits. A LAD teacher gets the noised label it was trained with. With --lora_r, the student "
    "(e.g. DINOv2) trains through LoRA adapters."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf distill") -> dict:
    model_args, data_args, args, lora_args, _ = parse_arguments(
        (ModelArguments, DataArguments, DistillationConfig, LoraArguments), argv, prog, DESCRIPTION
    )
    if args.teacher_model_name_or_path is None:
        raise ValueError("Name the teacher: --teacher_model_name_or_path (a Hub id or the folder of a trained run).")
    peft_config = None
    if lora_args.lora_r is not None:
        lora = dict(r=lora_args.lora_r, alpha=lora_args.lora_alpha, dropout=lora_args.lora_dropout)
        if lora_args.lora_target_modules is not None:
            lora["target_modules"] = lora_args.lora_target_modules
        peft_config = dinov2_lora_config(**lora)
    # The trainer loads the teacher and checks that it predicts the dataset's classes, before training.
    teacher = ("the teacher", args.teacher_model_name_or_path, "model")
    return train_model(model_args, data_args, args, DistillationTrainer, hub_ids=(teacher,), peft_config=peft_config)
