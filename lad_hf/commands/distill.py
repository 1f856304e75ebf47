"""`lad-hf distill`: an image-only student distilled from a frozen teacher, LAD or conventional (paper Eq. 8).

lad-hf distill --config configs/cityscapes_deeplabv3_r18_distill.yaml
accelerate launch scripts/distill.py --config configs/cityscapes_deeplabv3_r18_distill.yaml
"""

import os

from ..data import SegmentationCollator
from ..distillation_config import DistillationConfig
from ..distillation_trainer import DistillationTrainer
from ..hub import load_segmentation_model
from ..lora import dinov2_lora_config
from .arguments import DataArguments, ModelArguments, parse_arguments
from .common import build_model, checkpoint_to_resume, finish_run, load_data, load_image_processor


DESCRIPTION = (
    "Distil a frozen teacher into a student that sees only the image: cross-entropy plus CWD (or pixel KD) towards "
    "the teacher's logits. A LAD teacher gets the noised label it was trained with. With --lora_r, the student "
    "(e.g. DINOv2) trains through LoRA adapters."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf distill") -> dict:
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, DistillationConfig), argv, prog, DESCRIPTION
    )
    if args.teacher_model_name_or_path is None:
        raise ValueError("Name the teacher: --teacher_model_name_or_path (a Hub id or the folder of a trained run).")
    resume = checkpoint_to_resume(args)
    image_processor = load_image_processor(model_args.model_name_or_path)
    train_dataset, eval_dataset, id2label = load_data(data_args, args, image_processor)
    teacher = load_segmentation_model(args.teacher_model_name_or_path, "the teacher")
    student = build_model(model_args, id2label)
    peft_config = None
    if model_args.lora_r is not None:
        lora = dict(r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout)
        if model_args.lora_target_modules is not None:
            lora["target_modules"] = model_args.lora_target_modules
        peft_config = dinov2_lora_config(**lora)
        # The adapter records the path of its base model: saved in the run, the folder loads on its own.
        base_dir = os.path.abspath(os.path.join(args.output_dir, "base_model"))
        with args.main_process_first(local=False, desc="saving the base model"):
            if args.process_index == 0 and not os.path.isdir(base_dir):
                student.save_pretrained(base_dir)
            student = load_segmentation_model(base_dir, "the base model")
    trainer = DistillationTrainer(  # checks that the teacher predicts the dataset's classes
        model=student,
        teacher_model=teacher,
        args=args,
        peft_config=peft_config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SegmentationCollator(),
        processing_class=image_processor,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, result, data_args, model_args)
