"""The LAD paper's segmentation models (FCN, PSPNet, DeepLabV3, OCRNet, STDC-Seg) on any transformers backbone.

Architectures follow the code the paper builds on (CIRKD): dilated ResNets with output stride 8, PSP bins 1/2/3/6,
ASPP rates 12/24/36 with image pooling, and an FCN auxiliary head on the penultimate stage (loss weight 0.4); STDC-Seg
follows its authors' code (see `STDCHead`), OCRNet on HRNetV2 mmsegmentation's (`head_inputs="concat"`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_outputs import SemanticSegmenterOutput

from ...utils.labels import check_labels
from ..input_stem import attach_label_stem
from ..losses import detail_aggregation_loss, segmentation_cross_entropy
from .configuration_lad_seg import LadSegConfig


@dataclass
class LadSegOutput(SemanticSegmenterOutput):
    r"""
    auxiliary_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`, *optional*):
        The auxiliary head's logits, returned in training mode (for losses computed outside the model, as in
        distillation) and by OCR heads, which read them.
    decoder_features (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`, *optional*):
        The decode head's last features, the input of its 1x1 classifier (what feature-based KD losses such as FAKD
        read), returned with `output_hidden_states=True`.
    detail_logits (`torch.FloatTensor` of shape `(batch_size, 1, height, width)`, *optional*):
        The detail head's boundary logits (STDC-Seg), returned in training mode and with labels.
    """

    auxiliary_logits: torch.FloatTensor | None = None
    decoder_features: torch.FloatTensor | None = None
    detail_logits: torch.FloatTensor | None = None


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=dilation * (kernel_size // 2),
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecodeHead(nn.Module):
    """What every head shares: `decode(features)` picks its inputs from the backbone's feature maps (last stage
    first-to-last) and returns the features its 1x1 `classifier` reads (feature-based KD losses read these too);
    `forward` returns the logits.

    `reads_object_regions`: `decode` also takes the auxiliary head's logits as soft object regions (OCR).
    `logits_at_input_size`: the model upsamples the logits to its input (DINOv2's linear evaluation).
    """

    reads_object_regions = False
    logits_at_input_size = False
    classifier: nn.Conv2d

    def decode(self, features: list[torch.Tensor], object_regions: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor], object_regions: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.decode(features, object_regions))


class FCNHead(DecodeHead):
    """3x3 conv, dropout, 1x1 classifier on one feature map (FCN; also the auxiliary head, on the penultimate)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_labels: int,
        dropout: float,
        in_index: int = -1,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.in_index = in_index
        self.conv = ConvBNReLU(in_channels, channels, kernel_size)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_labels, 1)

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "FCNHead":
        return cls(channels[-1], config.decode_channels or channels[-1] // 4, config.num_labels, config.dropout)

    def decode(self, features, object_regions=None):
        return self.dropout(self.conv(features[self.in_index]))


class PyramidPoolingHead(DecodeHead):
    """PSPNet: average-pool to each bin size, 1x1 conv to in/len(bins), upsample, concat with the input, 3x3 conv."""

    def __init__(self, in_channels: int, channels: int, num_labels: int, bins: list[int], dropout: float):
        super().__init__()
        branch_channels = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), ConvBNReLU(in_channels, branch_channels)) for size in bins
        )
        self.bottleneck = ConvBNReLU(in_channels + len(bins) * branch_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_labels, 1)

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "PyramidPoolingHead":
        width = config.decode_channels or channels[-1] // 4
        return cls(channels[-1], width, config.num_labels, config.psp_bins, config.dropout)

    def decode(self, features, object_regions=None):
        last = features[-1]
        size = last.shape[-2:]
        pyramid = [last] + [
            F.interpolate(stage(last), size=size, mode="bilinear", align_corners=False) for stage in self.stages
        ]
        return self.dropout(self.bottleneck(torch.cat(pyramid, dim=1)))


class ASPPHead(DecodeHead):
    """DeepLabV3: ASPP (1x1, dilated 3x3 branches, image pooling), 1x1 projection, 3x3 conv, classifier."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_labels: int,
        rates: list[int],
        dropout: float,
        projection_dropout: float,
    ):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, channels)] + [ConvBNReLU(in_channels, channels, 3, rate) for rate in rates]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels))
        self.project = nn.Sequential(ConvBNReLU((len(rates) + 2) * channels, channels), nn.Dropout(projection_dropout))
        self.conv = ConvBNReLU(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_labels, 1)

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "ASPPHead":
        width = config.decode_channels or (128 if channels[-1] <= 512 else 256)
        return cls(channels[-1], width, config.num_labels, config.aspp_rates, config.dropout, config.aspp_dropout)

    def decode(self, features, object_regions=None):
        last = features[-1]
        pooled = self.image_pool(last).expand(-1, -1, *last.shape[-2:])
        aspp = torch.cat([branch(last) for branch in self.branches] + [pooled], dim=1)
        return self.dropout(self.conv(self.project(aspp)))


class ObjectContextHead(DecodeHead):
    """OCRNet: pixels attend to object-region representations pooled with the soft regions of the auxiliary head."""

    reads_object_regions = True

    def __init__(self, in_channels: int, channels: int, key_channels: int, num_labels: int, dropout: float):
        super().__init__()
        self.bottleneck = ConvBNReLU(in_channels, channels, 3)
        self.query = nn.Sequential(ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels))
        self.key = nn.Sequential(ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels))
        self.value = ConvBNReLU(channels, key_channels)
        self.out = ConvBNReLU(key_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_labels, 1)
        self.key_channels = key_channels

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "ObjectContextHead":
        width = config.decode_channels or 512
        return cls(channels[-1], width, config.ocr_key_channels, config.num_labels, config.dropout)

    def decode(self, features, object_regions=None):
        pixels = self.bottleneck(features[-1])
        batch_size, _, height, width = pixels.shape
        if object_regions.shape[-2:] != pixels.shape[-2:]:
            object_regions = F.interpolate(object_regions, size=(height, width), mode="bilinear", align_corners=False)
        region_weights = object_regions.flatten(2).softmax(dim=-1)  # (B, K, HW)
        regions = torch.bmm(region_weights, pixels.flatten(2).transpose(1, 2))  # (B, K, C)
        regions = regions.transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1)
        query = self.query(pixels).flatten(2).transpose(1, 2)  # (B, HW, D)
        key = self.key(regions).flatten(2)  # (B, D, K)
        value = self.value(regions).flatten(2).transpose(1, 2)  # (B, K, D)
        attention = torch.bmm(query, key).div(math.sqrt(self.key_channels)).softmax(dim=-1)  # (B, HW, K)
        context = torch.bmm(attention, value).transpose(1, 2).reshape(batch_size, -1, height, width)
        return self.dropout(self.fuse(torch.cat([self.out(context), pixels], dim=1)))


class AttentionRefinementModule(nn.Module):
    """BiSeNet's ARM: a 3x3 convolution whose channels are re-weighted by an attention from their global average."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return features * self.bn_atten(self.conv_atten(features.mean((2, 3), keepdim=True))).sigmoid()


class FeatureFusionModule(nn.Module):
    """BiSeNet's FFM: the spatial and the context features concatenated, a 1x1 convolution, then a channel attention
    added back to its input."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, 1)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        features = self.convblk(torch.cat([spatial, context], dim=1))
        attention = self.conv2(F.relu(self.conv1(features.mean((2, 3), keepdim=True)))).sigmoid()
        return features * attention + features


class STDCHead(DecodeHead):
    """STDC-Seg's head on the backbone's 1/8, 1/16 and 1/32 stages (Fan et al., CVPR 2021, after BiSeNet): the context
    path refines the 1/32 stage plus its global average (ARM), upsamples it onto the refined 1/16 stage, and that onto
    the 1/8 grid; the feature fusion module joins it with the 1/8 stage; a 3x3 convolution and the classifier follow.
    Widths are STDC-Seg's (context 128, fusion `decode_channels`, 256 by default). Where lad_hf differs: one FCN
    auxiliary head on the 1/16 stage, as for the zoo's other heads, where STDC-Seg puts two on its context path;
    cross-entropy instead of OHEM; dropout before the classifier (`config.dropout`)."""

    def __init__(self, channels: list[int], width: int, num_labels: int, dropout: float, context: int = 128):
        super().__init__()
        c8, c16, c32 = channels
        self.arm16 = AttentionRefinementModule(c16, context)
        self.arm32 = AttentionRefinementModule(c32, context)
        self.conv_head32 = ConvBNReLU(context, context, 3)
        self.conv_head16 = ConvBNReLU(context, context, 3)
        self.conv_avg = ConvBNReLU(c32, context, 1)
        self.ffm = FeatureFusionModule(c8 + context, width)
        self.conv = ConvBNReLU(width, width, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, num_labels, 1)

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "STDCHead":
        return cls(channels[-3:], config.decode_channels or 256, config.num_labels, config.dropout)

    def decode(self, features, object_regions=None):
        f8, f16, f32 = features[-3:]
        f32_sum = self.arm32(f32) + self.conv_avg(f32.mean((2, 3), keepdim=True))
        f32_up = self.conv_head32(F.interpolate(f32_sum, size=f16.shape[-2:], mode="nearest"))
        f16_up = self.conv_head16(F.interpolate(self.arm16(f16) + f32_up, size=f8.shape[-2:], mode="nearest"))
        return self.dropout(self.conv(self.ffm(f8, f16_up)))


class LinearHead(DecodeHead):
    """DINOv2's linear evaluation head: batch norm and a 1x1 classifier over all the feature maps, concatenated."""

    logits_at_input_size = True

    def __init__(self, in_channels: int, num_labels: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_labels, 1)

    @classmethod
    def from_config(cls, config: LadSegConfig, channels: list[int]) -> "LinearHead":
        return cls(sum(channels), config.num_labels, config.dropout)

    def decode(self, features, object_regions=None):
        return self.dropout(self.norm(torch.cat(features, 1)))


# The class of each head `LadSegConfig.decode_head` names.
HEAD_CLASSES = {
    "fcn": FCNHead,
    "psp": PyramidPoolingHead,
    "aspp": ASPPHead,
    "ocr": ObjectContextHead,
    "stdc": STDCHead,
    "linear": LinearHead,
}


def dilate_resnet(backbone: nn.Module, output_stride: int) -> None:
    """Give a transformers `ResNetBackbone` an output stride of 8 or 16 by dilating its last stages in place.

    As in the paper's dilated ResNets: a dilated stage's strides become 1 and its 3x3 convs get dilation 2 (stride 16
    stage) or 4 (stride 32 stage), except the first 3x3 of its first block, which keeps the previous dilation.
    Weights are untouched, so pretrained weights stay valid.
    """
    current_stride, dilation = 4, 1  # the stem: a stride-2 conv and a stride-2 max pool
    for stage in backbone.encoder.stages:
        convs = [module for module in stage.modules() if isinstance(module, nn.Conv2d)]
        stage_stride = max(conv.stride[0] for conv in convs)
        if current_stride * stage_stride <= output_stride:
            current_stride *= stage_stride
            continue
        previous, dilation = dilation, dilation * stage_stride
        first_3x3 = True
        for conv in convs:
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                rate = previous if first_3x3 else dilation
                conv.dilation, conv.padding = (rate, rate), (rate, rate)
                first_3x3 = False


class LadSegPreTrainedModel(PreTrainedModel):
    config: LadSegConfig
    base_model_prefix = "lad_seg"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The model computes its own loss; the Trainer must not rescale it for gradient accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class LadSegForSemanticSegmentation(LadSegPreTrainedModel):
    """A transformers backbone with one decode head of the LAD paper's zoo and an optional FCN auxiliary head.

    `forward(pixel_values, labels=None)` returns a `LadSegOutput` (a `SemanticSegmenterOutput`) whose `logits` have
    the resolution of the last backbone stage (1/8 of the input for the default dilated ResNets), like Segformer's;
    upsample them for predictions. The `"linear"` head's logits are upsampled to the input already. ViT backbones
    (DINOv2) get their input resized to the nearest multiple of their patch size. With `labels`, `loss` is the
    cross-entropy of the upsampled logits plus `auxiliary_loss_weight` times that of the auxiliary head, and, for
    STDC-Seg, `detail_loss_weight` times its detail loss (`losses.detail_aggregation_loss`).
    """

    def __init__(self, config: LadSegConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        if config.output_stride is not None and config.output_stride < 32:
            dilate_resnet(self.backbone, config.output_stride)
        # ViT backbones read patches: inputs are resized to a multiple of the patch size.
        self.patch_size = getattr(config.backbone_config, "patch_size", None)
        channels = list(self.backbone.channels)
        if config.head_inputs == "concat":  # one map: every stage at the finest resolution (HRNetV2's)
            channels = [sum(channels)]
        self.decode_head = HEAD_CLASSES[config.decode_head].from_config(config, channels)
        self.auxiliary_head = None
        if config.use_auxiliary_head and config.head_inputs == "concat":  # as mmsegmentation's OCRNet on HRNet
            self.auxiliary_head = FCNHead(channels[-1], channels[-1], config.num_labels, config.dropout, kernel_size=1)
        elif config.use_auxiliary_head:
            self.auxiliary_head = FCNHead(
                channels[-2], channels[-2] // 4, config.num_labels, config.dropout, in_index=-2
            )
        # STDC-Seg's detail head on the 1/8 stage: 3x3 convolution to 64, 1x1 to one boundary logit.
        self.detail_head = (
            nn.Sequential(ConvBNReLU(channels[-3], 64, 3), nn.Conv2d(64, 1, 1, bias=False))
            if config.use_detail_head
            else None
        )
        self.post_init()
        if config.label_stem_channels is not None:
            attach_label_stem(self.backbone, config.num_channels, config.num_channels - 1, config.label_stem_channels)
        if config.use_pretrained_backbone:
            self._load_pretrained_backbone()

    def _load_pretrained_backbone(self) -> None:
        # The backbone's own class: AutoBackbone.from_pretrained takes any id it cannot find on the Hub, local
        # folders included, for a timm model name.
        pretrained = type(self.backbone).from_pretrained(
            self.config.backbone, out_features=self.config.backbone_config.out_features
        )
        if self.config.num_channels != pretrained.config.num_channels:
            raise ValueError(
                f"The pretrained backbone takes {pretrained.config.num_channels} input channels, this model "
                f"{self.config.num_channels}. Build the model with the backbone's channels, then widen it with "
                "`lad_hf.add_label_channel`."
            )
        self.backbone.load_state_dict(pretrained.state_dict())
        # The weights are now the model's own: a saved copy must not load them again over its trained weights.
        self.config.use_pretrained_backbone = False

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> LadSegOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images; a LAD teacher takes the noised label as a 4th channel.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class ids in `[0, num_labels)` or `config.loss_ignore_index`.
            output_hidden_states (`bool`, *optional*): Return the backbone feature maps the heads read
                (`hidden_states`) and the decode head's classifier input (`decoder_features`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch_size, {self.config.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}. A LAD teacher takes the image plus the noised label channel: build its "
                "input with `lad_hf.build_teacher_inputs`."
            )
        if labels is not None:
            check_labels(
                labels,
                self.config.num_labels,
                self.config.loss_ignore_index,
                spatial_size=pixel_values.shape[-2:],
                batch_size=pixel_values.shape[0],
            )
        size = pixel_values.shape[-2:]
        if self.patch_size is not None and (size[0] % self.patch_size or size[1] % self.patch_size):
            snapped = [max(1, round(side / self.patch_size)) * self.patch_size for side in size]
            pixel_values = F.interpolate(pixel_values, size=snapped, mode="bilinear", align_corners=False)
        features = list(self.backbone(pixel_values).feature_maps)
        hidden_states = tuple(features)
        if self.config.head_inputs == "concat":
            features = [
                torch.cat(
                    [
                        F.interpolate(f, size=features[0].shape[-2:], mode="bilinear", align_corners=False)
                        for f in features
                    ],
                    dim=1,
                )
            ]
        auxiliary_logits = detail_logits = None
        # Inference skips the auxiliary head unless the decode head reads it (OCR) or a loss needs it.
        if self.auxiliary_head is not None and (
            self.training or labels is not None or self.decode_head.reads_object_regions
        ):
            auxiliary_logits = self.auxiliary_head(features)
        if self.detail_head is not None and (self.training or labels is not None):  # training only, as the auxiliary
            detail_logits = self.detail_head(features[-3])
        decoder_features = self.decode_head.decode(features, auxiliary_logits)
        logits = self.decode_head.classifier(decoder_features)
        if self.decode_head.logits_at_input_size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

        loss = None
        if labels is not None:
            ignore_index = self.config.loss_ignore_index
            loss = segmentation_cross_entropy(logits, labels, ignore_index)
            if auxiliary_logits is not None:
                weight = self.config.auxiliary_loss_weight
                loss = loss + weight * segmentation_cross_entropy(auxiliary_logits, labels, ignore_index)
            if detail_logits is not None:
                loss = loss + self.config.detail_loss_weight * detail_aggregation_loss(detail_logits, labels)

        output = LadSegOutput(
            loss=loss,
            logits=logits,
            hidden_states=hidden_states if output_hidden_states else None,
            auxiliary_logits=auxiliary_logits,
            decoder_features=decoder_features if output_hidden_states else None,
            detail_logits=detail_logits,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["HEAD_CLASSES", "DecodeHead", "LadSegForSemanticSegmentation", "LadSegOutput", "LadSegPreTrainedModel"]
