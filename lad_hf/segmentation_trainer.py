"""What every lad_hf trainer shares: mIoU evaluation, loss components in the logs, seeded noise.

`SegmentationTrainer` is also the plain supervised baseline: it trains any segmentation model on its own loss.
"""

import hashlib
import math
import os
import zlib
from collections import defaultdict

import datasets
import torch
from transformers import Trainer, TrainerCallback

from .files import atomic_path
from .metrics import SegmentationMetric, predictions_from_logits
from .model_card import model_card, read_results
from .segmentation_config import SegmentationConfig


__all__ = ["SegmentationTrainer", "content_generator"]


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


def _seed_from(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def content_generator(labels: torch.Tensor, salt: str) -> torch.Generator:
    """A generator seeded from a label map's content: the same draws for the same image, whatever the batching."""
    generator = torch.Generator(device=labels.device)
    generator.manual_seed(_seed_from(f"{salt}/{zlib.crc32(labels.cpu().numpy().tobytes())}"))
    return generator


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

    # compute_loss returns a per-batch mean: the Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False
    # What the model card says was done (see `card_settings`).
    method = "Supervised training of a semantic segmentation model with its own loss (cross-entropy)."
    method_tag = "supervised"

    def __init__(self, model=None, args: SegmentationConfig | None = None, compute_metrics=None, **kwargs):
        args = args if args is not None else SegmentationConfig(output_dir="trainer_output")
        if not isinstance(args, SegmentationConfig):
            raise TypeError(
                f"{type(self).__name__} takes a SegmentationConfig (or a subclass) as args, got {type(args).__name__}."
            )
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
        self._loss_components: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._generator_step, self._micro_batch = -1, 0

    def _prepare_inputs(self, inputs: dict) -> dict:
        inputs = super()._prepare_inputs(inputs)
        if self.args.channels_last and inputs["pixel_values"].ndim == 4:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        return inputs

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
        generator.manual_seed(_seed_from(key))
        return generator
