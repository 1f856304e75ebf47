"""What every lad_hf trainer shares: mIoU evaluation, loss components in the logs, seeded noise, the checks before
training, exact resumption, and losses that gradient accumulation does not change.

`SegmentationTrainer` is also the plain supervised baseline: it trains any segmentation model on its own loss.
"""

import itertools
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import datasets
import torch
from safetensors import SafetensorError, safe_open
from transformers import Trainer, TrainerCallback
from transformers.utils import logging

from ..data import SegmentationCollator
from ..metrics import SegmentationMetric, predictions_from_logits
from ..model_card import model_card, read_results
from ..utils.checkpoints import check_writable, describe_write_error, last_complete_checkpoint
from ..utils.files import atomic_path
from ..utils.labels import resize_labels
from ..utils.seeds import seed_from
from .segmentation_config import SegmentationConfig


__all__ = ["SegmentationTrainer"]

logger = logging.get_logger(__name__)

TRAINING_STATE_NAME = "lad_hf_training_state.pt"  # in a checkpoint, beside the optimizer's state


def _format_transform(dataset):
    """The transform a map-style `datasets.Dataset` applies on access (`set_transform`), if any."""
    if isinstance(dataset, datasets.Dataset):
        return dataset.format["format_kwargs"].get("transform")
    return None


class _AugmentationEpoch(TrainerCallback):
    """Tells the training data's transform the epoch, so that its augmentation draws, keyed by (seed, epoch, row),
    differ between epochs and repeat exactly when a run resumes (see `SegmentationTransforms`)."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        transform = _format_transform(getattr(train_dataloader, "dataset", None))
        if hasattr(transform, "set_epoch"):
            transform.set_epoch(math.floor(state.epoch))


class StepTimeEstimate(TrainerCallback):
    """Says, once `steps` steps after the first have run, how long a step takes and about how long the rest of the
    training will (evaluations and saves not counted): a wrong size or setting shows in seconds, not hours."""

    def __init__(self, steps: int = 5):
        self.steps = steps
        self._start: tuple[int, float] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:  # the first step warms up: time from its end
            self._start = (state.global_step, time.perf_counter())
            return
        first, start = self._start
        if state.global_step - first == self.steps:
            seconds = (time.perf_counter() - start) / self.steps
            remaining = max(state.max_steps - state.global_step, 0)
            if state.is_world_process_zero:
                logger.warning(
                    f"Training at {seconds:.2f} s per step here: the remaining {remaining} steps take about "
                    f"{_duration(seconds * remaining)} (evaluations and saves not counted)."
                )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class BatchCounts(NamedTuple):
    """What the micro-batches of one optimizer step hold in all, over the processes (`num_items_in_batch`): labelled
    pixels and images, and this process's label maps, to count labelled pixels at a loss's own resolution."""

    pixels: torch.Tensor
    images: torch.Tensor
    labels: tuple[torch.Tensor, ...]


def check_classes(config, ignore_index: int) -> None:
    """Refuse class settings that train to a meaningless result: one class, or an ignore index that is a class."""
    num_labels = config.num_labels
    if num_labels < 2:
        raise ValueError(
            f"The model predicts {num_labels} class: semantic segmentation needs at least 2 (e.g. background and "
            "object); with one, every pixel is right and mIoU is 1.0 whatever the model learns."
        )
    if 0 <= ignore_index < num_labels:
        name = config.id2label.get(ignore_index, ignore_index)
        raise ValueError(
            f"ignore_index {ignore_index} is a class of the model ('{name}', one of its {num_labels}): it would never "
            "be trained and would score IoU 0. Mark unlabelled pixels with an id outside the classes (255), and "
            "remap the labels if a class should be left out (reduce_labels moves a background 0 to 255)."
        )
    for attribute in ("loss_ignore_index", "semantic_loss_ignore_index"):
        own = getattr(config, attribute, None)
        if own is not None and own != ignore_index:
            raise ValueError(
                f"The model's loss ignores label {own} ({attribute}) but the training arguments' ignore_index is "
                f"{ignore_index}: set both to the same id."
            )


def output_stride(model) -> int | None:
    """How many input pixels one logit spans along a side, where the config says: dilated ResNets' `output_stride`,
    ViTs' `patch_size`."""
    config = getattr(model, "config", None)
    for source in (config, getattr(config, "backbone_config", None)):
        for attribute in ("output_stride", "patch_size"):
            value = getattr(source, attribute, None)
            if isinstance(value, int):
                return value
    return None


class SegmentationTrainer(Trainer):
    """A `Trainer` for semantic segmentation models.

    - Without `compute_metrics`, evaluation reports `SegmentationMetric`'s mIoU, accuracies and per-class IoU.
    - Subclasses log loss components with `log_loss_components(name=tensor)`; they appear, averaged over the logging
      interval and the processes, next to `loss`.
    - `step_generator()` gives noise that differs per process and per step, and repeats after resuming.

    Args:
        model (`PreTrainedModel`): A segmentation model: `forward(pixel_values, labels=None)` returning `logits`.
        args (`SegmentationConfig`): Training arguments.
        compute_metrics, preprocess_logits_for_metrics: As for `Trainer`; default to `SegmentationMetric`.
        **kwargs: Passed on to `Trainer`.
    """

    # compute_loss scales each loss term to its share of the accumulated batch (`pixel_share`, `image_share`).
    loss_is_scaled_for_ga = True
    # What the model card says was done (see `card_settings`).
    method = "Supervised training of a semantic segmentation model with its own loss (cross-entropy)."
    method_tag = "supervised"

    def __init__(self, model=None, args: SegmentationConfig | None = None, compute_metrics=None, **kwargs):
        args = args if args is not None else SegmentationConfig(output_dir="trainer_output")
        if not isinstance(args, SegmentationConfig):
            raise TypeError(
                f"{type(self).__name__} takes a SegmentationConfig (or a subclass) as args, got {type(args).__name__}."
            )
        check_classes(model.config, args.ignore_index)
        if args.should_save:
            check_writable(args.output_dir)  # before the Trainer creates it, and long before the first save
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = SegmentationCollator()
        if compute_metrics is None:
            metric = SegmentationMetric(model.config.num_labels, args.ignore_index, model.config.id2label)
            compute_metrics = metric.compute_metrics
            kwargs.setdefault("preprocess_logits_for_metrics", predictions_from_logits)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        super().__init__(model=model, args=args, compute_metrics=compute_metrics, **kwargs)
        if hasattr(_format_transform(self.train_dataset), "set_epoch"):
            if args.dataloader_persistent_workers and args.dataloader_num_workers > 0:
                raise ValueError(
                    "dataloader_persistent_workers keeps the workers of the first epoch, which would repeat its "
                    "augmentation in every epoch: leave it off (the workers then start anew each epoch)."
                )
            self.add_callback(_AugmentationEpoch())
        self.add_callback(StepTimeEstimate())
        self._loss_components: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._generator_step, self._micro_batch = -1, 0
        self._preflight_done = False

    def _prepare_inputs(self, inputs: dict) -> dict:
        inputs = dict(inputs)
        self._batch_rows = inputs.pop("row", None)  # the dataset rows of the batch, for error messages
        inputs = super()._prepare_inputs(inputs)
        if self.args.channels_last and inputs["pixel_values"].ndim == 4:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        return inputs

    # -- Before training: every dataset's first batch, and every model's forward ----------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """`Trainer.train`, after the `preflight`; resuming (`resume_from_checkpoint=True`) takes the last checkpoint
        that was written to the end."""
        resume_from_checkpoint = self.checkpoint_to_resume(resume_from_checkpoint)
        self.preflight()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def checkpoint_to_resume(self, resume_from_checkpoint: str | bool | None) -> str | bool | None:
        """`resume_from_checkpoint=True` as the last checkpoint of `output_dir` that was written to the end."""
        if resume_from_checkpoint is not True:
            return resume_from_checkpoint
        checkpoint = last_complete_checkpoint(self.args.output_dir)
        if checkpoint is None:
            raise ValueError(f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete checkpoint.")
        return checkpoint

    def preflight(self) -> None:
        """Pull the first batch of the training and evaluation data through their transforms and label checks, and run
        every model of the method once on it without gradients (`preflight_forward`), so that a problem shared by the
        whole dataset (labels beyond the classes, mismatched sizes, a crop smaller than the output stride, a teacher
        of other classes) stops the run in seconds. Done once, before the first `train()`; no random state moves."""
        if self._preflight_done:
            return
        datasets_used = {"training": self.train_dataset}
        evaluation = self.eval_dataset
        datasets_used.update(evaluation if isinstance(evaluation, dict) else {"evaluation": evaluation})
        model = self.model
        was_training = model.training
        model.eval()
        try:
            for name, dataset in datasets_used.items():
                if dataset is None:
                    continue
                batch = self._prepare_inputs(self.data_collator(self._first_samples(dataset, name)))
                self._check_batch(batch, f"the first {name} batch")
                with torch.no_grad(), self.accelerator.autocast():  # in the training's precision
                    self.preflight_forward(model, batch)
        finally:
            model.train(was_training)
        self._preflight_done = True

    def _first_samples(self, dataset, name: str) -> list[dict]:
        size = self.args.per_device_train_batch_size if name == "training" else self.args.per_device_eval_batch_size
        if isinstance(dataset, torch.utils.data.IterableDataset | datasets.IterableDataset):
            samples = list(itertools.islice(iter(dataset), size))
        else:
            samples = [dataset[i] for i in range(min(size, len(dataset)))]
        if not samples:
            raise ValueError(f"The {name} dataset holds no samples.")
        return samples

    def _check_batch(self, batch: dict, what: str) -> None:
        pixel_values = batch["pixel_values"]
        stride = output_stride(self.accelerator.unwrap_model(self.model))
        if stride is not None and min(pixel_values.shape[-2:]) < stride:
            raise ValueError(
                f"In {what}, images are {tuple(pixel_values.shape[-2:])}, smaller than the model's output stride "
                f"{stride}: each prediction would span more than the image. Crop to at least {stride}x{stride} "
                "(crop_size)."
            )
        self._check_finite(pixel_values, what)

    def _check_finite(self, pixel_values: torch.Tensor, what: str) -> None:
        finite = torch.isfinite(pixel_values.flatten(1)).all(dim=1)
        if not finite.all():
            bad = (~finite).nonzero().flatten().tolist()
            rows = self._batch_rows.tolist() if self._batch_rows is not None else None
            which = f"dataset rows {[rows[i] for i in bad]}" if rows is not None else f"samples {bad} of the batch"
            raise ValueError(
                f"{what}: the pixel values of {which} are not finite (NaN or inf): repair or remove those images."
            )

    def preflight_forward(self, model, batch: dict) -> None:
        """One forward of the trained model on a batch, as training will run it (the model computes its loss, which
        checks the labels against its classes)."""
        model(pixel_values=batch["pixel_values"], labels=batch["labels"])

    # -- Training: losses scaled for gradient accumulation, non-finite losses stopped -------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The micro-batches of one optimizer step, and what they hold in all: `[labelled pixels, images]` summed over
        the micro-batches and the processes (transformers' `num_items_in_batch`, counted for segmentation)."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        pixels = sum((b["labels"] != self.args.ignore_index).sum().to(device) for b in batch_samples)
        images = sum(len(b["labels"]) for b in batch_samples)
        counts = torch.stack([pixels, torch.tensor(images, device=device)])
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batch_samples, BatchCounts(*counts, labels=tuple(b["labels"] for b in batch_samples))

    def pixel_share(self, labels: torch.Tensor, num_items_in_batch, size=None) -> torch.Tensor | float:
        """The factor that turns a mean over this micro-batch's labelled pixels into its part of the mean over the
        whole accumulated batch (all micro-batches and processes; the processes' gradients are averaged, hence the
        process count): with uneven ignore pixels, accumulating micro-batches then equals one big batch. `size`: the
        resolution the loss averages at, where it is not the labels' (a loss on the logits' grid)."""
        if not isinstance(num_items_in_batch, BatchCounts):  # evaluation, or a direct call
            return 1.0
        ignore = self.args.ignore_index
        if size is None or tuple(size) == tuple(labels.shape[-2:]):
            mine, total = (labels != ignore).sum(), num_items_in_batch.pixels
        else:
            mine = (resize_labels(labels, size) != ignore).sum()
            total = sum((resize_labels(batch, size) != ignore).sum() for batch in num_items_in_batch.labels)
            if self.accelerator.num_processes > 1:
                total = self.accelerator.reduce(total, reduction="sum")
        return mine / total.clamp(min=1) * self.accelerator.num_processes

    def image_share(self, labels: torch.Tensor, num_items_in_batch) -> torch.Tensor | float:
        """As `pixel_share`, for a loss that is a mean over images (CWD, feature distances)."""
        if not isinstance(num_items_in_batch, BatchCounts):
            return 1.0
        return labels.shape[0] / num_items_in_batch.images * self.accelerator.num_processes

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
        loss = outputs.loss * self.pixel_share(inputs["labels"], num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        rows = inputs.get("row")
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss)
        if self.accelerator.num_processes > 1:  # every process stops together
            finite = torch.isfinite(self.accelerator.reduce(loss.detach(), reduction="sum"))
        if not finite:
            self._batch_rows = rows
            step = self.state.global_step + 1
            self._check_finite(inputs["pixel_values"], f"Step {step}")
            raise ValueError(
                f"Step {step}: the loss is {loss.item()} although the batch's pixel values are finite: training "
                "diverged (lower the learning rate; with fp16, try bf16). No update was made from this step, and the "
                "checkpoints written so far are intact."
            )
        return loss

    # -- Checkpoints: what they hold beyond the Trainer's, what a failed write says --------------------------------

    def training_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold beyond the model, the optimizer and the random states for a resumed run to
        repeat the uninterrupted one (a subclass's running statistics, training-only modules); none here."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `training_state` returned."""

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        state = self.training_state()
        if state and self.args.should_save:
            torch.save(state, os.path.join(output_dir, TRAINING_STATE_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.restore_training_state(checkpoint)

    def restore_training_state(self, checkpoint: str) -> None:
        """`load_training_state` from what `checkpoint` holds beside the optimizer's state, if anything."""
        path = os.path.join(checkpoint, TRAINING_STATE_NAME)
        if os.path.isfile(path):
            self.load_training_state(torch.load(path, map_location=self.args.device, weights_only=True))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self._check_same_model(resume_from_checkpoint, self.accelerator.unwrap_model(model or self.model))
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    @staticmethod
    def _check_same_model(checkpoint: str, model) -> None:
        """Refuse a checkpoint of another model before loading anything from it: the weights it holds must be, name
        for name and shape for shape, those of the model to train (adapter checkpoints are the Trainer's to check)."""
        weights_file = os.path.join(checkpoint, "model.safetensors")
        if not os.path.isfile(weights_file):
            return
        with safe_open(weights_file, framework="pt") as saved:
            shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}
        expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        if shapes == expected:
            return
        differ = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
        config = os.path.join(checkpoint, "config.json")
        holds = ""
        if os.path.isfile(config):
            saved_config = json.loads(Path(config).read_text())
            source = saved_config.get("_name_or_path") or "built from options"
            holds = f" (a {saved_config.get('model_type')} model, {source})"
        raise ValueError(
            f"{checkpoint} holds a checkpoint of another model{holds}, not of the one to train (they differ in "
            f"{differ[:3]}). Resume with the model that run trained, or start anew: another output_dir, or "
            "overwrite_output_dir to train over it."
        )

    def _save_checkpoint(self, model, trial) -> None:
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError, SafetensorError) as error:
            previous = last_complete_checkpoint(self.args.output_dir)
            raise ValueError(
                f"Writing the checkpoint of step {self.state.global_step} failed: "
                f"{describe_write_error(error, self.args.output_dir)}. "
                + (f"{previous} is intact: " if previous else "")
                + "free space (or fix the folder), then start the run again to resume."
            ) from error

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call:  # a checkpoint: `_save_checkpoint` explains a failure
            return super().save_model(output_dir, _internal_call)
        try:
            super().save_model(output_dir, _internal_call)
        except (OSError, RuntimeError, SafetensorError) as error:
            folder = output_dir or self.args.output_dir
            previous = last_complete_checkpoint(self.args.output_dir)
            raise ValueError(
                f"Saving the model to {folder} failed: {describe_write_error(error, folder)}. "
                + (f"{previous} holds the weights of step {previous.rpartition('-')[2]}: " if previous else "")
                + "free space, then save again."
            ) from error

    def log_loss_components(self, **components: torch.Tensor) -> None:
        for name, value in components.items():
            self._loss_components[name].append(value.detach().float())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_components:  # a training log: every process gets here at the same step
            names = list(self._loss_components)
            means = torch.stack([torch.stack(values).mean() for values in self._loss_components.values()])
            means = self.accelerator.reduce(means, reduction="mean")
            logs.update({name: round(value, 6) for name, value in zip(names, means.tolist(), strict=True)})
            self._loss_components.clear()
        super().log(logs, start_time)

    def evaluation_loop(self, *args, **kwargs):
        # Under DDP every process updated its own batch-norm statistics in the last step; evaluate with rank 0's, the
        # ones that are saved, so that the metrics are those of the saved model whatever the number of processes.
        if self.accelerator.num_processes > 1:
            with torch.no_grad():
                for buffer in self.model.buffers():
                    torch.distributed.broadcast(buffer, src=0)
        return super().evaluation_loop(*args, **kwargs)

    def card_settings(self) -> dict:
        """The method's settings, for the model card."""
        return {}

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write `README.md` in `output_dir`: the method, its settings and the saved results (`all_results.json`).
        `push_to_hub` calls this too, so the pushed card is this one."""
        if not self.is_world_process_zero():
            return
        args = self.args
        # push_to_hub names the model by the last part of hub_model_id: the card's usage wants the whole id.
        if args.hub_model_id is not None and (model_name is None or args.hub_model_id.endswith(f"/{model_name}")):
            model_id = args.hub_model_id
        else:
            model_id = model_name or os.path.basename(os.path.abspath(args.output_dir))
        training = {
            "steps": self.state.global_step or args.max_steps,
            "batch size per device": args.per_device_train_batch_size,
            "processes": args.world_size,
            "gradient accumulation": args.gradient_accumulation_steps,
            "learning rate": args.learning_rate,
            "schedule": f"{args.lr_scheduler_type.value} {args.lr_scheduler_kwargs or ''}".strip(),
            "warmup steps": args.warmup_steps,
            "weight decay": args.weight_decay,
            "optimizer": args.optim,
            "seed": args.seed,
        }
        results = read_results(args.output_dir) or next(
            (h for h in reversed(self.state.log_history) if any(k.endswith("mean_iou") for k in h)), {}
        )
        card = model_card(
            model_id,
            self.method,
            self.card_settings(),
            training,
            results,
            self.card_usage(model_id),
            dataset=dataset if isinstance(dataset, str) else None,
            base_model=finetuned_from,
            tags=[self.method_tag, *([tags] if isinstance(tags, str) else tags or [])],
        )
        with atomic_path(os.path.join(args.output_dir, "README.md")) as tmp:
            card.save(tmp)

    def card_usage(self, model_id: str) -> str:
        return (
            "import lad_hf  # registers lad_hf's model types with the Auto classes\n"
            "from transformers import AutoModelForSemanticSegmentation\n\n"
            f'model = AutoModelForSemanticSegmentation.from_pretrained("{model_id}")\n'
            "logits = model(pixel_values=pixel_values).logits  # upsample to the image, then argmax over classes\n"
            "# or: lad-hf predict --model_name_or_path " + model_id + " --inputs images/ --output_dir predictions"
        )

    def step_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded from (run seed, process, optimizer step, micro-batch of the step)."""
        if self.state.global_step != self._generator_step:
            self._generator_step, self._micro_batch = self.state.global_step, 0
        self._micro_batch += 1
        key = f"{self.args.seed}/{self.args.process_index}/{self._generator_step}/{self._micro_batch}"
        generator = torch.Generator(device=device)
        generator.manual_seed(seed_from(key))
        return generator
