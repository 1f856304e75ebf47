"""Dual-path training of a LAD teacher (paper Eq. 7)."""

import torch

from ..distillation.losses import dual_path_consistency, noise_stability
from ..label_channel.noising import LabelNoiser
from ..label_channel.teacher import build_teacher_inputs
from ..metrics import SegmentationMetric, predictions_from_logits
from ..utils.seeds import content_generator
from .lad_teacher_config import LadTeacherConfig
from .segmentation_trainer import SegmentationTrainer


__all__ = ["LadTeacherTrainer"]

STABILITY_DRAWS = 3  # paper Table 8


class LadTeacherTrainer(SegmentationTrainer):
    r"""Trains a LAD teacher: a segmentation model that reads the noised label as its last input channel.

    Each step runs the batch's images under two independent label noisings as ONE forward of a 2B batch through the
    same weights, and minimises (paper Eq. 7)

        L_T = CE(O1, y) + CE(O2, y) + lambda * D(O1, O2)

    where the CE terms are the model's own loss (with its auxiliary heads) and `D` is CWD. `loss_seg` and
    `loss_consistency` are logged apart.

    Evaluation gives the teacher a noised label, its real operating condition (`eval_mean_iou`), and a label-reliance
    diagnostic: the mIoU with another image's noised label (`eval_mean_iou_shuffled_label`, shuffled within the batch)
    and with a zero label channel (`eval_mean_iou_zero_label`). A teacher that loses nothing without its true label
    has learned to ignore it, and distilling from it is plain self-distillation. With `eval_stability=True`, the
    paper's Table 8 stability (`eval_stability_kl`) is reported too.

    Args:
        model (`PreTrainedModel`): A model with a label channel, widened with `add_label_channel(model, noiser)`:
            its config records the noiser it is trained with (and a saved teacher keeps it).
        args (`LadTeacherConfig`): Training arguments.
        **kwargs: Passed on to `Trainer` (`train_dataset`, `eval_dataset`, `data_collator`, `callbacks` ...).

    Example:
        ```python
        >>> teacher = add_label_channel(LadSegForSemanticSegmentation(config), LabelNoiser(config.num_labels))
        >>> args = LadTeacherConfig(output_dir="teacher", max_steps=40_000, consistency_weight=1.0)
        >>> LadTeacherTrainer(model=teacher, args=args, train_dataset=train, eval_dataset=val).train()
        ```
    """

    method = (
        "A LAD teacher (Label Assisted Distillation, Qiu et al., ECCV 2024): a segmentation model that reads the "
        "image plus a randomly noised copy of its ground-truth label as one more input channel, trained on two "
        "noised paths with a consistency loss (paper Eq. 7). It is meant to teach an image-only student with "
        "`lad_hf.DistillationTrainer`; it needs the label at inference."
    )
    method_tag = "lad-teacher"

    def __init__(self, model=None, args: LadTeacherConfig | None = None, **kwargs):
        args = args if args is not None else LadTeacherConfig(output_dir="trainer_output")
        if not isinstance(args, LadTeacherConfig):
            raise TypeError(f"LadTeacherTrainer takes a LadTeacherConfig as args, got {type(args).__name__}.")
        # The noiser is the teacher's own, recorded in its config: the one distillation will use.
        self.noiser = LabelNoiser.from_config(model.config)
        if self.noiser.num_labels != model.config.num_labels:
            raise ValueError(
                f"The teacher's recorded label noiser encodes {self.noiser.num_labels} classes but the teacher "
                f"predicts {model.config.num_labels}: record a LabelNoiser(num_labels={model.config.num_labels})."
            )
        if self.noiser.ignore_index != args.ignore_index:
            raise ValueError(
                f"The teacher's label noiser takes {self.noiser.ignore_index} for unlabelled pixels, the training "
                f"arguments {args.ignore_index}: build the LabelNoiser with ignore_index={args.ignore_index}."
            )
        super().__init__(model=model, args=args, **kwargs)

    def card_settings(self) -> dict:
        noiser = self.noiser.to_dict()
        return {
            "label noise alpha (LNM, Eq. 5)": noiser["alpha"],
            "random class codes per image": noiser["class_noise"],
            "fixed class codes (without class noise)": noiser["fixed_codes"],
            "label channel scale": noiser["scale"],
            "ignore pixels encoded as": noiser["ignore_encoding"],
            "label stem channels": getattr(self.model.config, "label_stem_channels", None),
            "consistency loss": self.args.consistency_loss,
            "consistency weight lambda": self.args.consistency_weight,
            "consistency temperature": self.args.consistency_temperature,
            "consistency warm-up steps": self.args.consistency_warmup_steps,
        }

    def card_usage(self, model_id: str) -> str:
        return (
            "import lad_hf\n\n"
            "# Distil this teacher into an image-only student; its recorded label noiser comes with it.\n"
            f'args = lad_hf.DistillationConfig(output_dir="student", teacher_model_name_or_path="{model_id}")\n'
            "trainer = lad_hf.DistillationTrainer(model=student, args=args, train_dataset=train, eval_dataset=val)\n"
            "trainer.train()\n"
            f"# or: lad-hf distill --teacher_model_name_or_path {model_id} --dataset_name ... --output_dir student"
        )

    def ramped_consistency_weight(self) -> float:
        """lambda at the current step, ramped from 0 over `consistency_warmup_steps`."""
        warmup = self.args.consistency_warmup_steps
        ramp = min(1.0, self.state.global_step / warmup) if warmup > 0 else 1.0
        return self.args.consistency_weight * ramp

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        # Eq. 7: the two noised paths as one batch of 2B through the same weights. The noiser draws new codes for
        # every image of the batch, so the two copies of an image get independent noisings.
        labels_twice = torch.cat([labels, labels])
        label_channel = self.noiser(labels_twice, generator=self.step_generator(labels.device))
        teacher_inputs = torch.cat([torch.cat([pixel_values, pixel_values]), label_channel.to(pixel_values.dtype)], 1)
        outputs = model(pixel_values=teacher_inputs, labels=labels_twice)
        loss_seg = 2 * outputs.loss  # CE(O1, y) + CE(O2, y): the model's loss is their mean
        logits_1, logits_2 = outputs.logits.chunk(2)
        loss_consistency = dual_path_consistency(
            logits_1,
            logits_2,
            self.args.consistency_temperature,
            symmetric=self.args.consistency_loss == "cwd_symmetric",
        )
        # Each term's share of the accumulated batch: CE is a mean over labelled pixels, CWD a mean over images.
        loss = loss_seg * self.pixel_share(labels, num_items_in_batch) + self.ramped_consistency_weight() * (
            loss_consistency * self.image_share(labels, num_items_in_batch)
        )
        self.log_loss_components(loss_seg=loss_seg, loss_consistency=loss_consistency)
        return (loss, outputs) if return_outputs else loss

    def preflight_forward(self, model, batch: dict) -> None:
        # The teacher with a noised label, drawn from a generator of its own: the training noise is untouched.
        generator = torch.Generator(device=batch["labels"].device).manual_seed(0)
        inputs = build_teacher_inputs(batch["pixel_values"], batch["labels"], self.noiser, generator=generator)
        model(pixel_values=inputs, labels=batch["labels"])

    def eval_label_channel(self, labels: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """Noised labels for evaluation, drawn per image from its content: the same whatever the batching or the
        number of processes. `draw` picks another noising of the same labels."""
        channels = [
            self.noiser(labels[i : i + 1], generator=content_generator(labels[i], f"{self.args.seed}/{draw}"))
            for i in range(labels.shape[0])
        ]
        return torch.cat(channels)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        num_labels = self.model.config.num_labels
        self._reliance = {
            name: SegmentationMetric(num_labels, self.args.ignore_index) for name in ("shuffled_label", "zero_label")
        }
        self._stability: list[torch.Tensor] = []
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for name, metric in self._reliance.items():
            if metric.confusion.any():  # not in loss-only evaluation
                output.metrics[f"{metric_key_prefix}_mean_iou_{name}"] = metric.compute()["mean_iou"]
        if self._stability:
            output.metrics[f"{metric_key_prefix}_stability_kl"] = torch.cat(self._stability).mean().item()
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            channel = self.eval_label_channel(labels).to(pixel_values.dtype)
            outputs = model(pixel_values=torch.cat([pixel_values, channel], 1), labels=labels)
            loss, logits = outputs.loss.detach(), outputs.logits.detach()
            if prediction_loss_only:
                return loss, None, None
            # Label reliance: another image's noised label (a derangement of the batch; a flipped map for a batch of
            # one), and a zero label channel. Then more noisings for the stability metric.
            other = labels.roll(1, dims=0) if labels.shape[0] > 1 else labels.flip(-2, -1)
            channels = [self.eval_label_channel(other).to(channel.dtype), torch.zeros_like(channel)]
            if self.args.eval_stability:
                channels += [
                    self.eval_label_channel(labels, draw).to(channel.dtype) for draw in range(1, STABILITY_DRAWS)
                ]
            images = pixel_values.repeat(len(channels), 1, 1, 1)
            extra_logits = model(pixel_values=torch.cat([images, torch.cat(channels)], 1)).logits.chunk(len(channels))
        predictions = [predictions_from_logits(x, labels) for x in extra_logits[:2]]
        gathered = self.accelerator.gather_for_metrics((*predictions, labels))
        for metric, prediction in zip(self._reliance.values(), gathered[:2], strict=True):
            metric.update(prediction, gathered[2])
        if self.args.eval_stability:
            stability = noise_stability([logits, *extra_logits[2:]])
            self._stability.append(self.accelerator.gather_for_metrics(stability).cpu())
        return loss, logits, labels
