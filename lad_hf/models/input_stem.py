"""The convolution that reads a model's input, and the ways a LAD teacher widens it for the label channel."""

import torch
from torch import nn


__all__ = ["LabelStemConv", "attach_label_stem", "find_input_stem", "widen_input_stem"]


def find_input_stem(model: nn.Module, num_channels: int) -> tuple[str, nn.Conv2d]:
    """The first `Conv2d` in module order that reads `num_channels` channels: the convolution that reads the image."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == num_channels:
            if module.groups != 1:
                raise ValueError(f"The input stem {name} is a grouped convolution: it cannot take a label channel.")
            return name, module
    raise ValueError(
        f"Found no Conv2d with {num_channels} input channels in {type(model).__name__}: a label channel is added to "
        "the convolution that reads the image, and this model has none that can be found."
    )


def _conv_like(conv: nn.Conv2d, in_channels: int, bias: bool | None = None) -> nn.Conv2d:
    """A convolution with `conv`'s geometry (kernel, stride, padding, dilation) reading `in_channels` channels; with a
    bias where `conv` has one, unless `bias` says."""
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None if bias is None else bias,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def _replace(model: nn.Module, name: str, module: nn.Module, image_channels: int) -> None:
    """Put `module` at `name`; modules on the way that check the input's channel count now expect one more."""
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, module)
    path = name.split(".")
    for depth in range(len(path)):
        ancestor = model.get_submodule(".".join(path[:depth]))
        if getattr(ancestor, "num_channels", None) == image_channels:
            ancestor.num_channels = image_channels + 1


def widen_input_stem(model: nn.Module, image_channels: int) -> None:
    """Give the input convolution one more input channel whose filters are zero (outputs unchanged), in place."""
    name, conv = find_input_stem(model, image_channels)
    wide = _conv_like(conv, image_channels + 1)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :image_channels] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    _replace(model, name, wide, image_channels)


class LabelStemConv(nn.Module):
    """An input convolution with a separate small stem for the label channel (an addition of lad_hf, not the paper's).

    `image_conv` reads the image channels as the original stem did; `label_stem` (3x3 conv, batch norm, ReLU, then a
    conv with the original stem's kernel and stride) reads the label channel, and the two outputs are summed. The batch
    norm puts the label features on a learned scale whatever the channel's scale, and the last conv starts at zero, so
    outputs are unchanged at step 0.
    """

    def __init__(self, image_conv: nn.Conv2d, hidden_channels: int):
        super().__init__()
        self.image_conv = image_conv
        self.label_stem = nn.Sequential(
            nn.Conv2d(1, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            _conv_like(image_conv, hidden_channels, bias=False),
        )
        self.reset_label_stem_output()

    def reset_label_stem_output(self) -> None:
        with torch.no_grad():
            self.label_stem[-1].weight.zero_()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.image_conv(inputs[:, :-1]) + self.label_stem(inputs[:, -1:])


def attach_label_stem(model: nn.Module, stem_channels: int, image_channels: int, hidden_channels: int) -> None:
    """Replace the input convolution, which reads `stem_channels`, by a `LabelStemConv`, in place.

    The stem reads the image only (`stem_channels == image_channels`, when a model is made a teacher) or already the
    label channel too (when a teacher is built from its config); its image filters are kept.
    """
    name, conv = find_input_stem(model, stem_channels)
    image_conv = _conv_like(conv, image_channels)
    with torch.no_grad():
        image_conv.weight.copy_(conv.weight[:, :image_channels])
        if conv.bias is not None:
            image_conv.bias.copy_(conv.bias)
    _replace(model, name, LabelStemConv(image_conv, hidden_channels), image_channels)
