"""The steps the `lad-hf` training and evaluation commands share: data, models, output folders, results."""

import shutil
from pathlib import Path

from transformers import AutoImageProcessor, PreTrainedModel
from transformers.utils import logging

from ..data import PRESETS, SegmentationTransforms, dataset_id2label, load_segmentation_dataset
from ..hub import check_hub_ids, load_segmentation_model
from ..models.lad_seg.configuration_lad_seg import LadSegConfig
from ..models.lad_seg.modeling_lad_seg import LadSegForSemanticSegmentation
from ..trainers.segmentation_config import SegmentationConfig
from ..utils.checkpoints import last_complete_checkpoint
from .arguments import DataArguments, ModelArguments


__all__ = [
    "build_model",
    "check_run_hub_ids",
    "checkpoint_to_resume",
    "clear_output_dir",
    "finish_run",
    "load_data",
    "load_image_processor",
]

logger = logging.get_logger(__name__)

FINISHED_MARKER = "all_results.json"
DEFAULT_CROP_SIZE = (512, 512)  # --crop_size's default for images at least this large on one side


def load_image_processor(name_or_path: str | None):
    """The image processor saved with a model, if any: its normalisation is the one the model was trained with."""
    if name_or_path is None:
        return None
    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return None


def check_run_hub_ids(model_args: ModelArguments | None, data_args: DataArguments, *more: tuple) -> None:
    """Look up, before anything is loaded, every Hub id of a run: the model to start from, a pretrained backbone,
    the dataset (a preset's Hub id) and `more` (`(what, name, repo_type)`, e.g. the teacher)."""
    dataset = data_args.dataset_name
    if dataset in PRESETS and data_args.dataset_preset is None:
        dataset = PRESETS[dataset].hub_id
    items = [("the dataset", dataset, "dataset"), *more]
    if model_args is not None:
        backbone = model_args.backbone if model_args.use_pretrained_backbone else None
        items += [("the model", model_args.model_name_or_path, "model"), ("the backbone", backbone, "model")]
    check_hub_ids(*items)


def build_model(model_args: ModelArguments, id2label: dict[int, str]) -> PreTrainedModel:
    """The model to train: `model_name_or_path` with a head for these classes, or a new LadSeg model."""
    label2id = {name: k for k, name in id2label.items()}
    if model_args.model_name_or_path is not None:
        # An image classifier's checkpoint (google/mobilenet_v2_1.0_224 ...) gives a segmentation model its
        # pretrained backbone and a new head; output_stride goes to configs that have one (MobileNetV2's DeepLabV3).
        overrides = {} if model_args.output_stride is None else {"output_stride": model_args.output_stride}
        try:
            return load_segmentation_model(
                model_args.model_name_or_path,
                id2label=id2label,
                label2id=label2id,
                num_labels=len(id2label),
                ignore_mismatched_sizes=True,
                **overrides,
            )
        except TypeError as error:  # the model's __init__ refused the config option it does not have
            if "output_stride" not in str(error):
                raise
            raise ValueError(
                f"{model_args.model_name_or_path} has no output_stride option: leave output_stride out for it (it "
                "applies to LadSeg ResNets and to models whose config has one, such as MobileNetV2)."
            ) from None
    config = LadSegConfig(
        backbone=model_args.backbone,
        use_pretrained_backbone=model_args.use_pretrained_backbone,
        decode_head=model_args.decode_head,
        output_stride=model_args.output_stride,
        decode_channels=model_args.decode_channels,
        id2label=id2label,
        label2id=label2id,
    )
    return LadSegForSemanticSegmentation(config)


def load_data(data_args: DataArguments, args: SegmentationConfig, image_processor=None, train: bool = True):
    """`(train_dataset or None, eval_dataset or None, id2label)` for the training and evaluation commands."""
    name = data_args.dataset_name
    if name is None:
        raise ValueError(
            "Name the dataset: --dataset_name (or dataset_name: in the recipe), a Hub id, a preset such as "
            "cityscapes, a local dataset folder, or a parquet file."
        )
    common = dict(
        preset=data_args.dataset_preset,
        config_name=data_args.dataset_config_name,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        ignore_index=args.ignore_index,
    )
    id2label = dataset_id2label(
        name, preset=data_args.dataset_preset, label_column=data_args.label_column, config_name=common["config_name"]
    )
    if id2label is None:
        raise ValueError(
            f'The dataset \'{name}\' names no classes: add an id2label.json ({{"0": "background", ...}}) to its '
            "folder or Hub repo, give its label column a ClassLabel feature, or use a preset (--dataset_preset)."
        )
    if data_args.crop_size is None:
        data_args.crop_size = default_crop_size(name, data_args.train_split if train else data_args.eval_split, common)
    train_dataset = eval_dataset = None
    if train:
        transform = SegmentationTransforms.from_image_processor(
            image_processor,
            data_args.crop_size,
            scale_range=tuple(data_args.scale_range),
            ignore_index=args.ignore_index,
            seed=args.seed,
        )
        train_dataset = load_segmentation_dataset(
            name,
            data_args.train_split,
            streaming=data_args.streaming,
            transform=transform,
            id2label=id2label,
            shuffle_buffer_size=data_args.shuffle_buffer_size,
            seed=args.seed,
            **common,
        )
        train_dataset = _first(train_dataset, data_args.max_train_samples, data_args.streaming)
    if data_args.eval_split is not None:
        transform = SegmentationTransforms.from_image_processor(
            image_processor,
            data_args.eval_size or data_args.crop_size,
            train=False,
            eval_mode=data_args.eval_mode,
            ignore_index=args.ignore_index,
        )
        eval_dataset = load_segmentation_dataset(
            name, data_args.eval_split, transform=transform, id2label=id2label, **common
        )
        eval_dataset = _first(eval_dataset, data_args.max_eval_samples, streaming=False)
    return train_dataset, eval_dataset, id2label


def default_crop_size(name: str, split: str | None, common: dict) -> list[int]:
    """`DEFAULT_CROP_SIZE`, or the size of the split's first image where that is smaller on both sides: a crop
    larger than every image pads each one to it, and trains and evaluates (at that size, by default) on padding."""
    if split is None:
        return list(DEFAULT_CROP_SIZE)
    first = next(iter(load_segmentation_dataset(name, split, streaming=True, **common)), None)
    if first is None:
        return list(DEFAULT_CROP_SIZE)
    height, width = first["image"].shape[:2]
    if height < DEFAULT_CROP_SIZE[0] and width < DEFAULT_CROP_SIZE[1]:
        logger.warning(
            f"The images of '{name}' are {height}x{width}, smaller than the default crop "
            f"{DEFAULT_CROP_SIZE[0]}x{DEFAULT_CROP_SIZE[1]}: training at {height}x{width} (and evaluating at it "
            "unless --eval_size is given) instead of padding each image to the crop. --crop_size H W chooses it."
        )
        return [height, width]
    return list(DEFAULT_CROP_SIZE)


def _first(dataset, count: int | None, streaming: bool):
    if count is None:
        return dataset
    return dataset.take(count) if streaming else dataset.select(range(min(count, len(dataset))))


def checkpoint_to_resume(args: SegmentationConfig) -> str | None:
    """The checkpoint an unfinished run in `output_dir` resumes from (the last one written to the end); refuses a
    finished run unless `overwrite_output_dir`. Nothing is deleted here: `clear_output_dir` does that, once every
    check has passed."""
    output_dir = Path(args.output_dir)
    if not output_dir.is_dir() or args.overwrite_output_dir:
        return None
    if (output_dir / FINISHED_MARKER).exists():
        raise ValueError(
            f"{output_dir} holds a finished run ({FINISHED_MARKER}). Choose another --output_dir, or pass "
            "--overwrite_output_dir to train over it from scratch."
        )
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is not None:
        logger.warning(f"Resuming the unfinished run in {output_dir} from {checkpoint}.")
    return checkpoint


def clear_output_dir(args: SegmentationConfig) -> None:
    """With `overwrite_output_dir`, remove the checkpoints and results of the run in `output_dir`: the last step
    before training, after the data, the models and the first batches have been checked."""
    output_dir = Path(args.output_dir)
    if not args.overwrite_output_dir or not output_dir.is_dir() or args.process_index != 0:
        return
    for checkpoint in output_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    for name in (FINISHED_MARKER, "train_results.json", "eval_results.json", "trainer_state.json"):
        (output_dir / name).unlink(missing_ok=True)


def finish_run(trainer, train_result, data_args: DataArguments, model_args: ModelArguments) -> dict:
    """Save the model, the trainer state and the results (`train_results.json`, `eval_results.json`,
    `all_results.json`, written last: it marks the run finished), then the model card; push if asked."""
    trainer.save_model()
    trainer.save_state()
    metrics = {}
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    dataset = data_args.dataset_name
    dataset = PRESETS[dataset].hub_id if dataset in PRESETS and data_args.dataset_preset is None else dataset
    card = dict(dataset=dataset, finetuned_from=model_args.model_name_or_path)
    trainer.create_model_card(**card)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card)
    return {**train_result.metrics, **metrics}
