"""SDES's parts (Liu et al., AAAI 2023; see `lad_hf.trainers.self_distillation_trainer`): the training-time model, a
lad_hf student with expert decoders and a feature adapter on its encoder, and the channel-weighted feature ensemble."""

import copy

import torch
from torch import nn


__all__ = ["EXPERT_HEADS", "SelfDecouplingStudent", "feature_ensemble"]

EXPERT_HEADS = ("fcn", "psp", "aspp")


class SelfDecouplingStudent(nn.Module):
    """A `LadSegForSemanticSegmentation` student with SDES's training-time experts and feature adapter.

    The experts are copies of the student's decode head, re-initialised, reading the student's backbone features; the
    adapter is a 1x1 convolution from the encoder's last features to the head's width. In evaluation mode the model is
    the student. In training mode `forward` returns the student's outputs plus what the SDES losses read:
    `expert_logits`, `expert_features` (each expert's classifier input), `head_features` (the student head's
    classifier input) and `adapted_features` (the encoder's last features through the adapter). Everything comes back
    in the outputs: no hooks stay on the student.
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

    def num_parameters(self) -> int:
        """The deployed student's parameter count (the experts and the adapter are not deployed)."""
        return self.student.num_parameters()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        if not self.training:
            return self.student(pixel_values=pixel_values, labels=labels)
        outputs = self.student(pixel_values=pixel_values, labels=labels, output_hidden_states=True)
        features = list(outputs.hidden_states)
        expert_features = [expert.decode(features) for expert in self.experts]
        outputs["expert_logits"] = [
            expert.classifier(feature) for expert, feature in zip(self.experts, expert_features, strict=True)
        ]
        outputs["expert_features"] = expert_features
        outputs["head_features"] = outputs.decoder_features
        outputs["adapted_features"] = self.adapter(features[-1])
        return outputs


def feature_ensemble(features: list[torch.Tensor]) -> torch.Tensor:
    """Channel-importance-weighted ensemble of `E` feature maps `(B, C, h, w)`: weights `softmax_e(mean_hw |F_e|)`."""
    stacked = torch.stack(features)  # (E, B, C, h, w)
    importance = stacked.abs().mean(dim=(-2, -1), keepdim=True).softmax(dim=0)
    return (importance * stacked).sum(0)
