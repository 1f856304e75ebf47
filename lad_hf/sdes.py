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

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .losses import pixel_wise_divergence, segmentation_cross_entropy
from .segmentation_trainer import SegmentationConfig, SegmentationTrainer


__all__ = ["SelfDecouplingStudent", "SelfDistillationConfig", "SelfDistillationTrainer"]

EXPERT_HEADS = ("fcn", "psp", "aspp")


@dataclass
class SelfDistillationConfig(SegmentationConfig):
    """Arguments of [`SelfDistillationTrainer`] (SDES)."""

    num_experts: int = field(default=2, metadata={"help": "Expert decoders on the student's encoder."})
    dped_weight: float = field(default=1.0, metadata={"help": "Weight of the prediction-ensemble distillation."})
    dfed_weight: float = field(default=1.0, metadata={"help": "Weight of the feature-ensemble distillation."})
    sdes_temperature: float = field(default=4.0, metadata={"help": "Temperature of the prediction ensemble and KD."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}.")
        if self.sdes_temperature <= 0:
            raise ValueError(f"sdes_temperature must be > 0, got {self.sdes_temperature}.")
        for name in ("dped_weight", "dfed_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


class SelfDecouplingStudent(nn.Module):
    """A `LadSegForSemanticSegmentation` student with SDES's training-time experts and feature adapter.

    In evaluation mode it is the student. In training mode `forward` returns the student's outputs plus what the SDES
    losses read: `expert_logits`, `expert_features`, `head_features` (the main head's classifier input) and
    `adapted_features` (the encoder's last features through the adapter).
    """

    def __init__(self, student: nn.Module, num_experts: int):
        super().__init__()
        if student.config.decode_head not in EXPERT_HEADS:
            raise ValueError(
                f"SDES builds its experts from the student's decode head, one of {EXPERT_HEADS}; this student's is "
                f"{student.config.decode_head!r}."
            )
        self.student, self.config = student, student.config
        self.experts = nn.ModuleList(copy.deepcopy(student.decode_head) for _ in range(num_experts))
        for expert in self.experts:
            expert.apply(student._init_weights)
            for module in expert.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_parameters()
        width = student.decode_head.classifier.in_channels
        self.adapter = nn.Conv2d(student.backbone.channels[-1], width, 1)
        self._captured: list[torch.Tensor] = []
        for head in (student.decode_head, *self.experts):
            head.classifier.register_forward_pre_hook(lambda module, inputs: self._captured.append(inputs[0]))

    def num_parameters(self) -> int:
        """The deployed student's parameter count (the experts and the adapter are not deployed)."""
        return self.student.num_parameters()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        self._captured.clear()
        if not self.training:
            return self.student(pixel_values=pixel_values, labels=labels)
        outputs = self.student(pixel_values=pixel_values, labels=labels, output_hidden_states=True)
        encoder = outputs.hidden_states[-1]
        outputs["expert_logits"] = [expert(encoder) for expert in self.experts]
        outputs["head_features"], *expert_features = self._captured
        outputs["expert_features"] = expert_features
        outputs["adapted_features"] = self.adapter(encoder)
        return outputs


def feature_ensemble(features: list[torch.Tensor]) -> torch.Tensor:
    """Channel-importance-weighted ensemble of `E` feature maps `(B, C, h, w)`: weights `softmax_e(mean_hw |F_e|)`."""
    stacked = torch.stack(features)  # (E, B, C, h, w)
    importance = stacked.abs().mean(dim=(-2, -1), keepdim=True).softmax(dim=0)
    return (importance * stacked).sum(0)


class SelfDistillationTrainer(SegmentationTrainer):
    r"""SDES self-distillation (see `lad_hf.sdes`): the student learns from its own expert decoders' ensembles.

    `loss_student`, `loss_experts`, `loss_dped` and `loss_dfed` are logged apart. `save_model` and checkpoints write
    the student alone (a resumed run starts its experts afresh).

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
        # DPED: the experts' averaged soft predictions, as log-probabilities, are the main decoder's target.
        ensemble = torch.stack([(z.detach() / tau).softmax(1) for z in outputs["expert_logits"]]).mean(0)
        loss_dped = pixel_wise_divergence(
            outputs.logits, ensemble.clamp_min(1e-12).log() * tau, tau, labels, ignore_index
        )
        # DFED: the encoder, through the adapter, towards the channel-weighted ensemble of the experts' features.
        target = feature_ensemble([f.detach() for f in outputs["expert_features"]])
        adapted = outputs["adapted_features"]
        if adapted.shape[-2:] != target.shape[-2:]:
            adapted = F.interpolate(adapted, size=target.shape[-2:], mode="bilinear", align_corners=False)
        loss_dfed = F.mse_loss(adapted, target)
        loss = loss_student + loss_experts + self.args.dped_weight * loss_dped + self.args.dfed_weight * loss_dfed
        self.log_loss_components(
            loss_student=loss_student, loss_experts=loss_experts, loss_dped=loss_dped, loss_dfed=loss_dfed
        )
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # The deployed model is the student alone: the experts and the adapter are training-time parts.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        self.accelerator.unwrap_model(self.model).student.save_pretrained(output_dir)
