"""Configuration of `LadSegForSemanticSegmentation`: the LAD paper's segmentation zoo on transformers backbones."""

import copy
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig, ResNetConfig
from transformers.configuration_utils import SubConfigSpec

from ..hrnet.configuration_hrnet import HRNET_PRESETS, HrnetConfig
from ..stdc.configuration_stdc import STDC_PRESETS, StdcConfig


# transformers' ResNet configs matching microsoft/resnet-{18,34,50,101}, so no download is needed to build them.
RESNET_BACKBONES = {
    "resnet-18": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]},
    "resnet-34": {"layer_type": "basic", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512]},
    "resnet-50": {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048]},
    "resnet-101": {"layer_type": "bottleneck", "depths": [3, 4, 23, 3], "hidden_sizes": [256, 512, 1024, 2048]},
}
# Every backbone a name builds without a download: the ResNets, STDC1/2 (STDCNet813/1446) and HRNetV2 W18-Small,
# W18 and W48.
NAMED_BACKBONES = {
    **{name: (ResNetConfig, settings) for name, settings in RESNET_BACKBONES.items()},
    **{name: (StdcConfig, settings) for name, settings in STDC_PRESETS.items()},
    **{name: (HrnetConfig, settings) for name, settings in HRNET_PRESETS.items()},
}
DECODE_HEADS = ("fcn", "psp", "aspp", "ocr", "stdc", "linear")
HEAD_INPUTS = ("last", "concat")
LINEAR_HEAD_LAYERS = 4  # DINOv2's linear evaluation reads the last 4 layers
OUTPUT_STRIDES = (8, 16, 32)


@strict
class LadSegConfig(PreTrainedConfig):
    r"""Configuration of [`LadSegForSemanticSegmentation`]: a transformers backbone, one decode head of the LAD paper's
    zoo, and an optional FCN auxiliary head on the penultimate backbone stage.

    Args:
        backbone (`str` or `PreTrainedConfig`, *optional*, defaults to `"resnet-18"`):
            `"resnet-18"`, `"resnet-34"`, `"resnet-50"` or `"resnet-101"` (transformers ResNet configs), `"stdc1"` or
            `"stdc2"` (`StdcConfig`), `"hrnet-w18-small"`, `"hrnet-w18"` or `"hrnet-w48"` (`HrnetConfig`), all built
            without a download; a backbone config object (e.g. `Dinov2Config()`, `ConvNextConfig()`); or a Hub id
            or local folder whose config is read with `AutoConfig` (its weights too with
            `use_pretrained_backbone=True`).
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            The resolved backbone config; filled from `backbone` and saved with the model.
        use_pretrained_backbone (`bool`, *optional*, defaults to `False`):
            Load the backbone's weights from the `backbone` Hub id when the model is built. Set back to `False` once
            loaded, so that a saved model does not load them again over its own trained weights.
        output_stride (`int`, *optional*):
            8, 16 or 32 for ResNet backbones, reached by dilating the last stages as in the paper's dilated ResNets
            (default 8). Other backbones keep their native stride and take `None`.
        decode_head (`str`, *optional*, defaults to `"aspp"`):
            `"fcn"` (FCN), `"psp"` (PSPNet pyramid pooling), `"aspp"` (DeepLabV3 ASPP with image pooling), `"ocr"`
            (OCRNet object-contextual head, which reads its soft object regions from the auxiliary head), `"stdc"`
            (STDC-Seg: attention refinement on the last two stages, a context path, and a feature fusion module with
            the 1/8 stage; for STDC backbones), or `"linear"` (DINOv2's linear evaluation head: batch norm and a 1x1
            convolution over the concatenated last 4 layers, its logits upsampled to the input; for ViT backbones
            such as DINOv2).
        decode_channels (`int`, *optional*):
            Width of the decode head. Defaults follow the paper's code: ASPP 128 on backbones of at most 512 channels
            (R18/R34), else 256; PSP and FCN a quarter of the input channels; OCR 512.
        aspp_rates (`list[int]`, *optional*, defaults to `(12, 24, 36)`): Dilation rates of the ASPP 3x3 branches.
        psp_bins (`list[int]`, *optional*, defaults to `(1, 2, 3, 6)`): Pooled grid sizes of the PSP head.
        ocr_key_channels (`int`, *optional*, defaults to 256): Width of the OCR attention.
        dropout (`float`, *optional*, defaults to 0.1): Dropout before each classifier.
        aspp_dropout (`float`, *optional*, defaults to 0.5): Dropout after the ASPP projection (DeepLabV3's).
        use_auxiliary_head (`bool`, *optional*): FCN head on the penultimate stage; default `True`, except with the
            `"linear"` head, which has none.
        auxiliary_loss_weight (`float`, *optional*, defaults to 0.4): Weight of its cross-entropy.
        head_inputs (`str`, *optional*): `"last"`: the decode head reads the last stage, the auxiliary head the one
            before. `"concat"`: both read all stages, upsampled to the finest and concatenated (HRNetV2's
            representation; the default for HRNet backbones).
        use_detail_head (`bool`, *optional*): STDC-Seg's training-only detail head on the 1/8 stage (default: with
            the `"stdc"` head), trained on the Laplacian boundaries of the labels (`detail_aggregation_loss`) and
            skipped at inference like the auxiliary head.
        detail_loss_weight (`float`, *optional*, defaults to 1.0): Weight of its loss.
        num_channels (`int`, *optional*, defaults to 3): Input channels; a LAD teacher has 4 (image + label channel).
        label_noiser (`dict`, *optional*): The `LabelNoiser` settings a LAD teacher was trained with.
        label_stem_channels (`int`, *optional*): A LAD teacher reads its label channel (the last input channel) with
            a separate small stem of this width (`LabelStemConv`, an addition of lad_hf); `None` reads it as one
            more channel of the input convolution, as the paper does.
        loss_ignore_index (`int`, *optional*, defaults to 255): Label id left out of the loss.

    Example:
        ```python
        >>> from lad_hf import LadSegConfig, LadSegForSemanticSegmentation
        >>> config = LadSegConfig(backbone="resnet-18", decode_head="aspp", num_labels=19)  # DeepLabV3-R18
        >>> model = LadSegForSemanticSegmentation(config)
        ```
    """

    model_type = "lad_seg"
    # The Trainer leaves these out of the predictions it gathers at evaluation.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "hidden_states",
        "auxiliary_logits",
        "decoder_features",
        "detail_logits",
    ]
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet")}

    backbone: str | PreTrainedConfig | None = None
    backbone_config: dict | PreTrainedConfig | None = None
    use_pretrained_backbone: bool = False
    output_stride: int | None = None
    decode_head: str = "aspp"
    decode_channels: int | None = None
    aspp_rates: list[int] | tuple[int, ...] = (12, 24, 36)
    psp_bins: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    ocr_key_channels: int = 256
    dropout: float = 0.1
    aspp_dropout: float = 0.5
    use_auxiliary_head: bool | None = None
    auxiliary_loss_weight: float = 0.4
    head_inputs: str | None = None
    use_detail_head: bool | None = None
    detail_loss_weight: float = 1.0
    num_channels: int = 3
    label_noiser: dict | None = None
    label_stem_channels: int | None = None
    loss_ignore_index: int = 255

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone, PreTrainedConfig):
            self.backbone_config, self.backbone = copy.deepcopy(self.backbone), None
        elif isinstance(self.backbone_config, PreTrainedConfig):
            self.backbone_config = copy.deepcopy(self.backbone_config)
        elif self.backbone_config is None:
            self.backbone = self.backbone or "resnet-18"
            if self.backbone in NAMED_BACKBONES:
                config_class, settings = NAMED_BACKBONES[self.backbone]
                self.backbone_config = config_class(**settings)
            else:
                self.backbone_config = AutoConfig.from_pretrained(self.backbone)
        super().__post_init__(**kwargs)
        if self.decode_head not in DECODE_HEADS:
            raise ValueError(f"decode_head must be one of {DECODE_HEADS}, got {self.decode_head!r}.")
        if self.use_auxiliary_head is None:
            self.use_auxiliary_head = self.decode_head != "linear"
        if self.decode_head == "linear" and self.use_auxiliary_head:
            raise ValueError("decode_head='linear' has no auxiliary head: leave use_auxiliary_head unset (or False).")
        if self.decode_head == "ocr" and not self.use_auxiliary_head:
            raise ValueError(
                "decode_head='ocr' reads its object regions from the auxiliary head: keep use_auxiliary_head=True."
            )
        if self.use_detail_head is None:
            self.use_detail_head = self.decode_head == "stdc"
        if self.use_detail_head and self.decode_head != "stdc":
            raise ValueError("The detail head is STDC-Seg's: use_detail_head=True needs decode_head='stdc'.")
        if self.head_inputs is None:
            self.head_inputs = "concat" if self.backbone_config.model_type == "lad_hrnet" else "last"
        if self.head_inputs not in HEAD_INPUTS:
            raise ValueError(f"head_inputs must be one of {HEAD_INPUTS}, got {self.head_inputs!r}.")
        if self.head_inputs == "concat" and self.decode_head in ("stdc", "linear"):
            raise ValueError(f"decode_head='{self.decode_head}' picks its own inputs: leave head_inputs unset.")
        if self.use_pretrained_backbone and self.backbone in (None, *NAMED_BACKBONES):
            raise ValueError(
                "use_pretrained_backbone=True needs `backbone` to name a Hub id or a local folder with weights, "
                f"e.g. 'microsoft/resnet-18', got {self.backbone!r}."
            )
        is_resnet = self.backbone_config.model_type == "resnet"
        if is_resnet and self.output_stride is None:
            self.output_stride = 8
        if is_resnet and self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {OUTPUT_STRIDES} for ResNet backbones, got {self.output_stride}."
            )
        if not is_resnet and self.output_stride is not None:
            raise ValueError(
                "output_stride applies to ResNet backbones only; a "
                f"{self.backbone_config.model_type} backbone keeps its own stride. Leave output_stride=None."
            )
        if self.label_stem_channels is not None and self.num_channels < 2:
            raise ValueError("label_stem_channels needs the label as the last of at least 2 input channels.")
        # The heads read the last stage, the auxiliary head the one before it; the linear head the last 4 layers; the
        # STDC head the last 3 (1/8, 1/16, 1/32); with head_inputs="concat", every stage.
        stages = self.backbone_config.stage_names
        outputs = [s for s in stages if s != "stem"]
        if self.decode_head == "linear":
            self.backbone_config.out_features = outputs[-LINEAR_HEAD_LAYERS:]
        elif self.decode_head == "stdc":
            self.backbone_config.out_features = outputs[-3:]
        elif self.head_inputs == "concat":
            self.backbone_config.out_features = outputs
        else:
            self.backbone_config.out_features = stages[-2:]
        self.backbone_config.num_channels = self.num_channels


__all__ = ["LadSegConfig"]
