"""STDC backbones (STDCNet, Fan et al., CVPR 2021), the backbone of STDC-Seg, as transformers backbones.

Module names follow the public STDC-Seg code (`features.<i>.conv_list.<j>.conv ...`), so that its ImageNet weights
map onto `StdcBackbone` by their `features.*` keys.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_stdc import StdcConfig


__all__ = ["StdcBackbone", "StdcPreTrainedModel"]


class ConvX(nn.Module):
    """Convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """The STDC module: `block_num` convolutions, each reading the one before and half as wide (the first a 1x1 to
    half the output width, the last as wide as the one before it), their outputs concatenated. With stride 2, the
    first output is downsampled by a depthwise 3x3 stride-2 convolution for the next, and average-pooled for the
    concatenation."""

    def __init__(self, in_channels: int, out_channels: int, block_num: int, stride: int):
        super().__init__()
        if block_num < 2:
            raise ValueError(f"An STDC module needs at least 2 convolutions, got block_num={block_num}.")
        self.stride = stride
        half = out_channels // 2
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False), nn.BatchNorm2d(half)
            )
            self.skip = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        widths = [half] + [out_channels // 2 ** (i + 1) for i in range(1, block_num - 1)]
        widths.append(widths[-1])  # the last convolution keeps the width of the one before
        if block_num == 2:
            widths = [half, half]
        self.conv_list = nn.ModuleList(
            [ConvX(in_channels, widths[0], kernel_size=1)]
            + [ConvX(widths[i - 1], widths[i]) for i in range(1, block_num)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        outputs = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            outputs.append(out)
        if self.stride == 2:
            first = self.skip(first)
        return torch.cat([first, *outputs], dim=1)


class StdcPreTrainedModel(PreTrainedModel):
    config: StdcConfig
    base_model_prefix = "stdc"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module):
        # As the STDC code: Kaiming (fan-out) convolutions, unit batch norms.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)  # batch norms: unit weights, zero bias, fresh running statistics


class StdcBackbone(BackboneMixin, StdcPreTrainedModel):
    """STDCNet as a transformers backbone: `feature_maps` of the stages named by `config.out_features` (`stage1` at
    1/2 ... `stage5` at 1/32 of the input)."""

    has_attentions = False

    def __init__(self, config: StdcConfig):
        super().__init__(config)
        base = config.base_channels
        features = [ConvX(config.num_channels, base // 2, 3, 2), ConvX(base // 2, base, 3, 2)]
        self.stage_ends = [1, 2]  # features[:end] produce each stage
        in_channels = base
        for stage, count in enumerate(config.layers):
            out_channels = base * 4 * 2**stage
            for index in range(count):
                stride = 2 if index == 0 else 1
                features.append(CatBottleneck(in_channels, out_channels, config.block_num, stride))
                in_channels = out_channels
            self.stage_ends.append(len(features))
        self.features = nn.Sequential(*features)
        self.num_features = config.hidden_sizes
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict=None, **kwargs
    ):
        hidden_states, start, x = [], 0, pixel_values
        for end in self.stage_ends:
            for module in self.features[start:end]:
                x = module(x)
            hidden_states.append(x)
            start = end
        feature_maps = tuple(hidden_states[self.config.stage_names.index(name)] for name in self.out_features)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=tuple(hidden_states) if output_hidden_states else None
        )
