"""The steps the `lad-hf` training and evaluation commands share: data, models, output folders, results."""

import os
import shutil
from pathlib import Path

from huggingface_hub import constants
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..configuration_lad_seg import LadSegConfig
from ..data import PRESETS, SegmentationTransforms, dataset_id2label, load_segmentation_dataset
from ..modeling_lad_seg import LadSegForSemanticSegmentation
from ..segmentation_trainer import SegmentationConfig
from .arguments import DataArguments, ModelArguments


__all__ = ["build_model", "checkpoint_to_resume", "finish_run", "load_data", "load_model"]

logger = logging.get_logger(__name__)

FINISHED_MARKER = "all_results.json"


def _looks_local(name: str) -> bool:
    """A name that can only be a local path: Hub ids are `name` or `owner/name`, and `owner` is no local folder."""
    return (
        name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and os.path.isdir(name.split("/")[0]))
    )


def _not_found(what: str, name: str, error: Exception | None, kind: str) -> ValueError:
    path = os.path.abspath(name)
    if os.path.exists(path):
        looked = f"the folder {path} exists but holds no loadable {kind}"
    elif _looks_local(name):
        looked = f"there is no file or folder {path}"
    else:
        looked = f"there is no file or folder {path}, and no {kind} '{name}' on {constants.ENDPOINT}"
    reason = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else None
    return ValueError(f"Could not load {what} '{name}': {looked}" + (f" ({reason})." if reason else "."))


def _check_exists_if_local(name: str, what: str, kind: str) -> None:
    """Fail at once, without asking the Hub, for a local path that does not exist."""
    if isinstance(name, str) and _looks_local(name) and not os.path.exists(name):
        raise _not_found(what, name, None, kind)


def load_model(name_or_path: str, what: str = "the model", **kwargs) -> PreTrainedModel:
    """`AutoModelForSemanticSegmentation.from_pretrained`, with an error that says what was looked for."""
    _check_exists_if_local(name_or_path, what, "model")
    try:
        return AutoModelForSemanticSegmentation.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise _not_found(what, name_or_path, error, "model") from None


def load_image_processor(name_or_path: str | None):
    """The image processor saved with a model, if any: its normalisation is the one the model was trained with."""
    if name_or_path is None:
        return None
    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return None


def build_model(model_args: ModelArguments, id2label: dict[int, str]) -> PreTrainedModel:
    """The model to train: `model_name_or_path` with a head for these classes, or a new LadSeg model."""
    label2id = {name: k for k, name in id2label.items()}
    if model_args.model_name_or_path is not None:
        return load_model(
            model_args.model_name_or_path,
            id2label=id2label,
            label2id=label2id,
            num_labels=len(id2label),
            ignore_mismatched_sizes=True,
        )
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
    _check_exists_if_local(name, "the dataset", "dataset")
    try:
        id2label = dataset_id2label(
            name,
            preset=data_args.dataset_preset,
            label_column=data_args.label_column,
            config_name=common["config_name"],
        )
    except (OSError, ValueError) as error:  # not found locally, nor on the Hub (or the Hub is unreachable)
        raise _not_found("the dataset", name, error, "dataset") from None
    if id2label is None:
        raise ValueError(
            f'The dataset \'{name}\' names no classes: add an id2label.json ({{"0": "background", ...}}) to its '
            "folder or Hub repo, give its label column a ClassLabel feature, or use a preset (--dataset_preset)."
        )
    normalisation = {}
    if image_processor is not None:
        normalisation = dict(image_mean=image_processor.image_mean, image_std=image_processor.image_std)
    train_dataset = eval_dataset = None
    if train:
        transform = SegmentationTransforms(
            data_args.crop_size,
            scale_range=tuple(data_args.scale_range),
            ignore_index=args.ignore_index,
            seed=args.seed,
            **normalisation,
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
        transform = SegmentationTransforms(
            data_args.eval_size or data_args.crop_size,
            train=False,
            eval_mode=data_args.eval_mode,
            ignore_index=args.ignore_index,
            **normalisation,
        )
        eval_dataset = load_segmentation_dataset(
            name, data_args.eval_split, transform=transform, id2label=id2label, **common
        )
        eval_dataset = _first(eval_dataset, data_args.max_eval_samples, streaming=False)
    return train_dataset, eval_dataset, id2label


def _first(dataset, count: int | None, streaming: bool):
    if count is None:
        return dataset
    return dataset.take(count) if streaming else dataset.select(range(min(count, len(dataset))))


def checkpoint_to_resume(args: SegmentationConfig) -> str | None:
    """The checkpoint an unfinished run in `output_dir` resumes from; refuses a finished run unless
    `overwrite_output_dir`, which clears its checkpoints and results."""
    output_dir = Path(args.output_dir)
    if not output_dir.is_dir():
        return None
    if args.overwrite_output_dir:
        if args.process_index == 0:
            for checkpoint in output_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)
            for name in (FINISHED_MARKER, "train_results.json", "eval_results.json", "trainer_state.json"):
                (output_dir / name).unlink(missing_ok=True)
        return None
    if (output_dir / FINISHED_MARKER).exists():
        raise ValueError(
            f"{output_dir} holds a finished run ({FINISHED_MARKER}). Choose another --output_dir, or pass "
            "--overwrite_output_dir to train over it from scratch."
        )
    checkpoint = get_last_checkpoint(str(output_dir))
    if checkpoint is not None:
        logger.warning(f"Resuming the unfinished run in {output_dir} from {checkpoint}.")
    return checkpoint


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
