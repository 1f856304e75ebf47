import pytest
import torch
from transformers import Dinov2Config, ResNetConfig

from lad_hf import LadSegConfig


def tiny_resnet(layer_type: str = "basic") -> ResNetConfig:
    """A 4-stage ResNet a few channels wide, the shape of resnet-18/50."""
    hidden_sizes = [8, 8, 16, 16] if layer_type == "basic" else [16, 16, 32, 32]
    return ResNetConfig(embedding_size=8, hidden_sizes=hidden_sizes, depths=[1, 1, 1, 1], layer_type=layer_type)


def tiny_dinov2() -> Dinov2Config:
    return Dinov2Config(
        image_size=32, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )


def tiny_lad_seg_config(decode_head: str = "aspp", num_labels: int = 3, **kwargs) -> LadSegConfig:
    kwargs.setdefault("decode_channels", 8)
    kwargs.setdefault("ocr_key_channels", 4)
    return LadSegConfig(backbone=tiny_resnet(), decode_head=decode_head, num_labels=num_labels, **kwargs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
