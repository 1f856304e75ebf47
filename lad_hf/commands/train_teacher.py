"""`lad-hf train-teacher`: a LAD teacher, dual-path trained with a noised label channel (paper Eq. 7).

lad-hf train-teacher --config configs/cityscapes_deeplabv3_r18_teacher.yaml
accelerate launch scripts/train_teacher.py --config configs/cityscapes_deeplabv3_r18_teacher.yaml
"""

from ..data import SegmentationCollator
from ..label_channel import add_label_channel
from ..lad_teacher_config import LadTeacherConfig
from ..lad_teacher_trainer import LadTeacherTrainer
from .arguments import DataArguments, ModelArguments, parse_arguments
from .common import build_model, checkpoint_to_resume, finish_run, load_data, load_image_processor


DESCRIPTION = (
    "Train a LAD teacher: the model reads the image plus the noised ground-truth label as one more input channel, "
    "on two noised paths with a consistency loss. Any segmentation model can be widened into one."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf train-teacher") -> dict:
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, LadTeacherConfig), argv, prog, DESCRIPTION
    )
    resume = checkpoint_to_resume(args)
    image_processor = load_image_processor(model_args.model_name_or_path)
    train_dataset, eval_dataset, id2label = load_data(data_args, args, image_processor)
    model = build_model(model_args, id2label)
    if getattr(model.config, "label_noiser", None) is None:  # not yet a teacher: widen it (a saved teacher is one)
        add_label_channel(model, args.label_noiser(len(id2label)), model_args.label_stem_channels)
    trainer = LadTeacherTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SegmentationCollator(),
        processing_class=image_processor,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, result, data_args, model_args)
