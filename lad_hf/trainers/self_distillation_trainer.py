r"""Self-Decoupling and Ensemble Distillation (SDES, Liu et al., AAAI 2023): self-distillation without a teacher.

Only the paper's abstract is public; this is lad_hf's reading of it. The choices that are lad_hf's own:
- Experts: `num_experts` copies of the student's decode head, each re-initialised, on the student's encoder (its
  last backbone stage), trained with cross-entropy like the main decoder.
- DPED (decoder prediction ensemble distillation): the experts' softened predictions are averaged per pixel
  (`p_ens = mean_e softmax(z_e / tau)`, no gradient) and distilled into the main decoder with pixel-wise KD at `tau`.
- DFED (decoder feature ensemble distillation): the experts' head features (the input of their classifiers, no
  gradient) are ensembled per channel with importance weights `softmax_e(mean_hw |F_e[c]|)` per image, and the
  encoder's last features, through a 1x1 adapter, are pulled to that ensemble with a mean squared error.
- The experts and the adapter exist only in training: the saved and deployed model is the student alone, with the
  baseline's parameter count and outputs.

    L = L_student (CE + auxiliary) + sum_e CE(z_e, y) + dped_weight * PKD(z, p_ens) + dfed_weight * MSE(A(f), F_ens)
"""

import torch
import torch.nn.functional as F

from ..distillation.losses import pixel_kl
from ..distillation.sdes import SelfDecouplingStudent, feature_ensemble
from ..models.losses import at_least_float32, segmentation_cross_entropy
from .segmentation_trainer import SegmentationTrainer
from .self_distillation_config import SelfDistillationConfig


__all__ = ["SelfDistillationTrainer"]


class SelfDistillationTrainer(SegmentationTrainer):
    r"""SDES self-distillation (see this module's docstring): the student learns from its own expert decoders'
    ensembles.

    `loss_student`, `loss_experts`, `loss_dped` and `loss_dfed` are logged apart. `save_model` and checkpoints write
    the student alone; checkpoints also hold the experts and the adapter (beside the optimizer's state), so that a
    resumed run repeats the uninterrupted one.

    Args:
        model (`LadSegForSemanticSegmentation`): The student, with an FCN, PSP or ASPP head.
        args (`SelfDistillationConfig`): Training arguments.
        **kwargs: Passed on to `Trainer`.
    """

    method = (
        "Self-distillation after SDES (Liu et al., AAAI 2023; lad_hf's reading of its abstract): expert decoders on "
        "the student's encoder, whose prediction ensemble distils into the main decoder and whose channel-weighted "
        "feature ensemble distils into the encoder; the experts are dropped after training."
    )
    method_tag = "self-distillation"

    def __init__(self, model=None, args: SelfDistillationConfig | None = None, **kwargs):
        args = args if args is not None else SelfDistillationConfig(output_dir="trainer_output")
        if not isinstance(args, SelfDistillationConfig):
            raise TypeError(f"SelfDistillationTrainer takes a SelfDistillationConfig, got {type(args).__name__}.")
        super().__init__(model=SelfDecouplingStudent(model, args.num_experts), args=args, **kwargs)

    def card_settings(self) -> dict:
        return {
            "experts": self.args.num_experts,
            "DPED weight": self.args.dped_weight,
            "DFED weight": self.args.dfed_weight,
            "temperature": self.args.sdes_temperature,
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, ignore_index, tau = inputs["labels"], self.args.ignore_index, self.args.sdes_temperature
        outputs = model(pixel_values=inputs["pixel_values"], labels=labels)
        if not model.training:  # evaluation: the student alone, its own loss
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        loss_student = outputs.loss
        loss_experts = sum(segmentation_cross_entropy(z, labels, ignore_index) for z in outputs["expert_logits"])
        # DPED: the experts' averaged soft predictions are the main decoder's target distribution.
        ensemble = torch.stack([(at_least_float32(z.detach()) / tau).softmax(1) for z in outputs["expert_logits"]])
        log_p_ensemble = ensemble.mean(0).clamp_min(1e-12).log()
        log_p_student = F.log_softmax(at_least_float32(outputs.logits) / tau, dim=1)
        loss_dped = pixel_kl(log_p_student, log_p_ensemble, tau, labels, ignore_index)
        # DFED: the encoder, through the adapter, towards the channel-weighted ensemble of the experts' features.
        target = feature_ensemble([f.detach() for f in outputs["expert_features"]])
        adapted = outputs["adapted_features"]
        if adapted.shape[-2:] != target.shape[-2:]:
            adapted = F.interpolate(adapted, size=target.shape[-2:], mode="bilinear", align_corners=False)
        loss_dfed = F.mse_loss(adapted, target)
        # Each term's share of the accumulated batch: CE is a mean over labelled pixels, DPED over labelled pixels of
        # the logits' grid, DFED over features.
        dped_share = self.pixel_share(labels, num_items_in_batch, outputs.logits.shape[-2:])
        loss = (
            (loss_student + loss_experts) * self.pixel_share(labels, num_items_in_batch)
            + self.args.dped_weight * loss_dped * dped_share
            + self.args.dfed_weight * loss_dfed * self.image_share(labels, num_items_in_batch)
        )
        self.log_loss_components(
            loss_student=loss_student, loss_experts=loss_experts, loss_dped=loss_dped, loss_dfed=loss_dfed
        )
        return (loss, outputs) if return_outputs else loss

    def training_state(self) -> dict[str, torch.Tensor]:
        # The experts and the adapter are not the deployed model, but a resumed run needs them as they were.
        model = self.accelerator.unwrap_model(self.model)
        parts = {"experts": model.experts, "adapter": model.adapter}
        return {f"{name}.{k}": v for name, part in parts.items() for k, v in part.state_dict().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        model = self.accelerator.unwrap_model(self.model)
        for name in ("experts", "adapter"):
            part = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
            getattr(model, name).load_state_dict(part)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # Checkpoints hold the student as the deployed model (the experts are in the training state).
        super()._load_from_checkpoint(resume_from_checkpoint, self.accelerator.unwrap_model(self.model).student)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # The deployed model is the student alone: the experts and the adapter are training-time parts.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        self.accelerator.unwrap_model(self.model).student.save_pretrained(output_dir)
