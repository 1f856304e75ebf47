"""HRNetV2 backbones (Wang et al., TPAMI 2020) as transformers backbones, for OCRNet on HRNet.

Module names follow the public HRNet code (`conv1`, `bn1`, `layer1`, `transition1`, `stage2.<m>.branches ...`,
`fuse_layers`), so that its ImageNet weights map onto `HrnetBackbone` key for key. Where branches of different
resolutions are fused, the coarser ones are upsampled bilinearly to the finer one's size, as the segmentation code
does (the classification code uses nearest neighbour).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_hrnet import HrnetConfig


__all__ = ["HrnetBackbone", "HrnetPreTrainedModel"]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = False):
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


def _blocks(block, in_channels: int, channels: int, count: int) -> nn.Sequential:
    """`count` blocks; the first projects its shortcut when the width changes."""
    downsample = None
    if in_channels != channels * block.expansion:
        downsample = _conv_bn(in_channels, channels * block.expansion, 1)
    layers = [block(in_channels, channels, downsample=downsample)]
    layers += [block(channels * block.expansion, channels) for _ in range(1, count)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks, then each output branch sums every input branch brought to its resolution
    and width (1x1 convolution and upsampling from coarser ones, strided 3x3 convolutions from finer ones)."""

    def __init__(self, in_channels: list[int], blocks: list[int], channels: list[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            _blocks(BasicBlock, in_channels[i], channels[i], blocks[i]) for i in range(len(blocks))
        )
        count = len(channels)
        self.fuse_layers = None
        if count > 1:
            rows = []
            for i in range(count):
                row = []
                for j in range(count):
                    if j > i:
                        row.append(_conv_bn(channels[j], channels[i], 1))
                    elif j == i:
                        row.append(None)
                    else:
                        steps = [_conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                        row.append(nn.Sequential(*steps, _conv_bn(channels[j], channels[i], 3, 2)))
                rows.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(rows)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(x_i) for branch, x_i in zip(self.branches, x, strict=True)]
        if self.fuse_layers is None:
            return x
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = x[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(x[j])
                if j > i:
                    z = F.interpolate(z, size=x[i].shape[-2:], mode="bilinear", align_corners=False)
                y = y + z
            fused.append(self.relu(y))
        return fused


def _transition(previous: list[int], current: list[int]) -> nn.ModuleList:
    """From one stage's branches to the next's: a 3x3 convolution where a width changes, and each new branch made
    from the coarsest one by stride-2 3x3 convolutions."""
    layers = []
    for i, width in enumerate(current):
        if i < len(previous):
            layers.append(_conv_bn(previous[i], width, 3, relu=True) if previous[i] != width else None)
        else:
            steps = [
                _conv_bn(previous[-1], width if k == i - len(previous) else previous[-1], 3, 2, relu=True)
                for k in range(i + 1 - len(previous))
            ]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HrnetPreTrainedModel(PreTrainedModel):
    config: HrnetConfig
    base_model_prefix = "hrnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module):
        # As the HRNet code: convolutions from N(0, 0.001), unit batch norms.
        if isinstance(module, nn.Conv2d):
            init.normal_(module.weight, std=0.001)
        else:
            super()._init_weights(module)  # batch norms: unit weights, zero bias, fresh running statistics


class HrnetBackbone(BackboneMixin, HrnetPreTrainedModel):
    """HRNetV2 as a transformers backbone: `feature_maps` of `config.out_features`, among `stem` and the last stage's
    four branches (`branch1` at 1/4 ... `branch4` at 1/32 of the input)."""

    has_attentions = False

    def __init__(self, config: HrnetConfig):
        super().__init__(config)
        stem = config.stem_channels
        self.conv1 = nn.Conv2d(config.num_channels, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        (first,) = config.stage_channels[0]
        self.layer1 = _blocks(Bottleneck, stem, first, config.stage_blocks[0][0])
        previous = [first * Bottleneck.expansion]
        for stage in (2, 3, 4):
            channels = config.stage_channels[stage - 1]
            setattr(self, f"transition{stage - 1}", _transition(previous, channels))
            modules = [
                HighResolutionModule(channels, config.stage_blocks[stage - 1], channels)
                for _ in range(config.stage_modules[stage - 1])
            ]
            setattr(self, f"stage{stage}", nn.Sequential(*modules))
            previous = channels
        self.num_features = config.hidden_sizes
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict=None, **kwargs
    ):
        stem = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(pixel_values))))))
        branches = [self.layer1(stem)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            branches = [
                branches[min(i, len(branches) - 1)] if layer is None else layer(branches[min(i, len(branches) - 1)])
                for i, layer in enumerate(transition)
            ]
            branches = getattr(self, f"stage{stage}")(branches)
        hidden_states = (stem, *branches)
        feature_maps = tuple(hidden_states[self.config.stage_names.index(name)] for name in self.out_features)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states if output_hidden_states else None)
