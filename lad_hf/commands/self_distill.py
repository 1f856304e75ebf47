"""`lad-hf self-distill`: SDES self-distillation, expert decoders on the student's encoder, no teacher.

lad-hf self-distill --config configs/cityscapes_deeplabv3_r18_sdes.yaml
accelerate launch scripts/self_distill.py --config configs/cityscapes_deeplabv3_r18_sdes.yaml
"""

from ..data import SegmentationCollator
from ..sdes import SelfDistillationConfig, SelfDistillationTrainer
from .arguments import DataArguments, ModelArguments, parse_arguments
from .common import build_model, checkpoint_to_resume, finish_run, load_data, load_image_processor


DESCRIPTION = (
    "Self-distil a segmentation model after SDES: expert decoders on its encoder distil their prediction ensemble "
    "into its decoder and their feature ensemble into its encoder; the saved model is the student alone."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf self-distill") -> dict:
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, SelfDistillationConfig), argv, prog, DESCRIPTION
    )
    resume = checkpoint_to_resume(args)
    image_processor = load_image_processor(model_args.model_name_or_path)
    train_dataset, eval_dataset, id2label = load_data(data_args, args, image_processor)
    model = build_model(model_args, id2label)
    trainer = SelfDistillationTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SegmentationCollator(),
        processing_class=image_processor,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, result, data_args, model_args)
