"""`lad-hf train`: a supervised baseline of any segmentation model (cross-entropy only).

lad-hf train --config configs/cityscapes_deeplabv3_r18_baseline.yaml
accelerate launch scripts/train.py --config configs/cityscapes_deeplabv3_r18_baseline.yaml
"""

from ..data import SegmentationCollator
from ..trainers.segmentation_config import SegmentationConfig
from ..trainers.segmentation_trainer import SegmentationTrainer
from .arguments import DataArguments, ModelArguments, parse_arguments
from .common import (
    build_model,
    check_run_hub_ids,
    checkpoint_to_resume,
    clear_output_dir,
    finish_run,
    load_data,
    load_image_processor,
)


DESCRIPTION = "Train a segmentation model on its labels alone: the baseline that LAD's students are compared with."


def train_model(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: SegmentationConfig,
    trainer_class=SegmentationTrainer,
    prepare=None,
    hub_ids: tuple = (),
    **trainer_kwargs,
) -> dict:
    """What every training command does once its options are parsed: look up the Hub ids (the model's, the
    dataset's, and `hub_ids`: `(what, name, repo_type)`), find the checkpoint to resume, load the data, build the
    model (then `prepare(model, id2label)`, if given), check the first batches, train it with `trainer_class` and
    save the run. An overwritten run is cleared only once all of that has passed."""
    check_run_hub_ids(model_args, data_args, *hub_ids)
    resume = checkpoint_to_resume(args)
    image_processor = load_image_processor(model_args.model_name_or_path)
    train_dataset, eval_dataset, id2label = load_data(data_args, args, image_processor)
    model = build_model(model_args, id2label)
    if prepare is not None:
        prepare(model, id2label)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SegmentationCollator(),
        processing_class=image_processor,
        **trainer_kwargs,
    )
    trainer.preflight()  # the first batches and the models, before anything on disk changes
    clear_output_dir(args)
    result = trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, result, data_args, model_args)


def main(argv: list[str] | None = None, prog: str = "lad-hf train") -> dict:
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, SegmentationConfig), argv, prog, DESCRIPTION
    )
    return train_model(model_args, data_args, args)
