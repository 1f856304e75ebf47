"""Making any segmentation model a LAD teacher: one more input channel for the noised label."""

import torch
from transformers import PreTrainedModel

from ..models.input_stem import attach_label_stem, widen_input_stem
from ..models.lad_seg.modeling_lad_seg import LadSegForSemanticSegmentation
from .noising import LabelNoiser, is_lad_teacher


__all__ = ["add_label_channel", "build_teacher_inputs"]


def add_label_channel(
    model: PreTrainedModel, noiser: LabelNoiser, label_stem_channels: int | None = None
) -> PreTrainedModel:
    """Give a segmentation model one more input channel, for the noised label of a LAD teacher (in place).

    The input convolution keeps its image filters and gets zero filters for the new channel, so the widened model's
    outputs equal the original's at step 0 whatever the label channel holds. The config records the new
    `num_channels` (also on its `backbone_config`, if any) and the noiser's settings as `label_noiser`; both survive
    `save_pretrained` / `from_pretrained`, so a loaded teacher rebuilds its noiser with `LabelNoiser.from_config`.

    Works with `LadSegForSemanticSegmentation` and transformers segmentation models whose config has `num_channels`
    (Segformer, MobileNetV2 / DeepLabV3, DPT, BEiT, UperNet ...).

    Args:
        model (`PreTrainedModel`): The model to widen.
        noiser (`LabelNoiser`): The label noising module the teacher will be trained with.
        label_stem_channels (`int`, *optional*): Read the label channel with a separate small stem of this width
            (`LabelStemConv`, an addition of lad_hf, not the paper's) instead of one more filter channel of the
            input convolution. `LadSegForSemanticSegmentation` only, whose config rebuilds it.

    Returns:
        The same model, widened.
    """
    config = model.config
    image_channels = config.num_channels
    if is_lad_teacher(config):
        raise ValueError(f"{type(model).__name__} already has a label channel (config.label_noiser is set).")
    if noiser.num_labels != config.num_labels:
        raise ValueError(
            f"The noiser encodes {noiser.num_labels} classes but the model predicts {config.num_labels}; "
            "build the LabelNoiser with num_labels=model.config.num_labels."
        )
    if label_stem_channels is None:
        widen_input_stem(model, image_channels)
    elif isinstance(model, LadSegForSemanticSegmentation):
        attach_label_stem(model.backbone, image_channels, image_channels, label_stem_channels)
        config.label_stem_channels = label_stem_channels
    else:
        raise ValueError(
            f"label_stem_channels needs a model whose config rebuilds the label stem (LadSegForSemanticSegmentation); "
            f"{type(model).__name__} can take the label channel as one more input channel (label_stem_channels=None)."
        )
    config.num_channels = image_channels + 1
    backbone_config = getattr(config, "backbone_config", None)
    if backbone_config is not None:
        backbone_config.num_channels = image_channels + 1
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
