"""Making any segmentation model a LAD teacher: one more input channel for the noised label."""

import torch
from torch import nn
from transformers import PreTrainedModel

from .noising import LabelNoiser


__all__ = ["add_label_channel", "build_teacher_inputs"]


def _input_stem(model: nn.Module, num_channels: int) -> tuple[str, nn.Conv2d]:
    """The first convolution that reads the image: the first `Conv2d` in module order with `num_channels` inputs."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == num_channels:
            return name, module
    raise ValueError(
        f"Found no Conv2d with {num_channels} input channels in {type(model).__name__}: add_label_channel widens the "
        "convolution that reads the image, and this model has none it can find."
    )


def add_label_channel(model: PreTrainedModel, noiser: LabelNoiser) -> PreTrainedModel:
    """Widen a segmentation model's input stem by one channel, for the noised label of a LAD teacher (in place).

    The stem convolution keeps its RGB filters and gets zero filters for the new channel, so the widened model's
    outputs equal the original's at step 0 whatever the label channel holds. The config records the new
    `num_channels` (also on its `backbone_config`, if any) and the noiser's settings as `label_noiser`; both survive
    `save_pretrained` / `from_pretrained`, so a loaded teacher rebuilds its noiser with `LabelNoiser.from_config`.

    Works with `LadSegForSemanticSegmentation` and transformers segmentation models whose config has `num_channels`
    (Segformer, MobileNetV2 / DeepLabV3, DPT, BEiT, UperNet ...).

    Args:
        model (`PreTrainedModel`): The model to widen.
        noiser (`LabelNoiser`): The label noising module the teacher will be trained with.

    Returns:
        The same model, widened.
    """
    config = model.config
    old_channels = config.num_channels
    if getattr(config, "label_noiser", None) is not None:
        raise ValueError(f"{type(model).__name__} already has a label channel (config.label_noiser is set).")
    if noiser.num_labels != config.num_labels:
        raise ValueError(
            f"The noiser encodes {noiser.num_labels} classes but the model predicts {config.num_labels}; "
            "build the LabelNoiser with num_labels=model.config.num_labels."
        )
    name, conv = _input_stem(model, old_channels)
    if conv.groups != 1:
        raise ValueError(f"Input stem {name} is a grouped convolution (groups={conv.groups}): it cannot be widened.")
    wide = nn.Conv2d(
        old_channels + 1,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :old_channels] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)

    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, wide)
    # Modules on the way to the stem that check the input's channel count (e.g. ResNet and DINOv2 embeddings).
    path = name.split(".")
    for depth in range(len(path)):
        module = model.get_submodule(".".join(path[:depth]))
        if getattr(module, "num_channels", None) == old_channels:
            module.num_channels = old_channels + 1
    config.num_channels = old_channels + 1
    backbone_config = getattr(config, "backbone_config", None)
    if backbone_config is not None:
        backbone_config.num_channels = old_channels + 1
    config.label_noiser = noiser.to_dict()
    return model


def build_teacher_inputs(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    noiser: LabelNoiser,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The input of a LAD teacher: the image with the noised label concatenated as one more channel.

    Args:
        pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): Normalised images.
        labels (`torch.LongTensor` of shape `(B, H, W)`): Class ids or the noiser's ignore index.
        noiser (`LabelNoiser`): The teacher's noiser, e.g. `LabelNoiser.from_config(teacher.config)`.
        generator (`torch.Generator`, *optional*): For reproducible noise, on the labels' device.

    Returns:
        `torch.FloatTensor` of shape `(B, C + 1, H, W)`, in the dtype of `pixel_values`.
    """
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have shape (batch_size, channels, height, width), got {tuple(pixel_values.shape)}."
        )
    expected = (pixel_values.shape[0], *pixel_values.shape[-2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but images of shape {tuple(pixel_values.shape)} need labels of "
            f"shape {expected}; resize or crop images and labels together (labels with nearest neighbour)."
        )
    channel = noiser(labels.to(pixel_values.device), generator=generator)
    return torch.cat([pixel_values, channel.to(pixel_values.dtype)], dim=1)
