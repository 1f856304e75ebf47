import pytest
import torch
from torch import nn
from transformers import (
    Dinov2Config,
    PretrainedConfig,
    PreTrainedModel,
    ResNetConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
)
from transformers.modeling_outputs import SemanticSegmenterOutput

from lad_hf import HrnetConfig, LadSegConfig, LadSegForSemanticSegmentation, StdcConfig, segmentation_cross_entropy


def tiny_resnet(layer_type: str = "basic") -> ResNetConfig:
    """A 4-stage ResNet a few channels wide, the shape of resnet-18/50."""
    hidden_sizes = [8, 8, 16, 16] if layer_type == "basic" else [16, 16, 32, 32]
    return ResNetConfig(embedding_size=8, hidden_sizes=hidden_sizes, depths=[1, 1, 1, 1], layer_type=layer_type)


def tiny_stdc(layers=(1, 1, 1)) -> StdcConfig:
    """STDCNet with stages 8-128 channels wide (STDC1 has `layers` (2, 2, 2), STDC2 (4, 5, 3))."""
    return StdcConfig(base_channels=8, layers=list(layers))


def tiny_hrnet() -> HrnetConfig:
    """HRNet with one module of one block per branch, branches 4-32 channels wide."""
    return HrnetConfig(
        stem_channels=8,
        stage_modules=[1, 1, 1, 1],
        stage_blocks=[[1], [1, 1], [1, 1, 1], [1, 1, 1, 1]],
        stage_channels=[[8], [4, 8], [4, 8, 16], [4, 8, 16, 32]],
    )


def tiny_dinov2() -> Dinov2Config:
    return Dinov2Config(
        image_size=32, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )


def tiny_lad_seg_config(decode_head: str = "aspp", num_labels: int = 3, **kwargs) -> LadSegConfig:
    kwargs.setdefault("decode_channels", 8)
    kwargs.setdefault("ocr_key_channels", 4)
    return LadSegConfig(backbone=tiny_resnet(), decode_head=decode_head, num_labels=num_labels, **kwargs)


def tiny_segformer() -> SegformerForSemanticSegmentation:
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        num_attention_heads=[1, 2],
        decoder_hidden_size=16,
        num_labels=3,
    )
    return SegformerForSemanticSegmentation(config)


def trainer_args(config_class, output_dir, **overrides):
    """Training arguments for a quick CPU run that writes nothing but what a test asks for."""
    settings = dict(
        output_dir=str(output_dir), save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0
    )
    return config_class(**{**settings, **overrides})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def split_scenes(num_samples: int, size: int = 48, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """A task where the label's grouping helps: two classes split by a vertical boundary at a random column.

    Only the outer 6 columns of each side show their class's colour; the rest of the image is noise. An image-only
    model must guess the boundary; a teacher that reads its noised label sees where the two regions meet.
    """
    generator = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [1.0, -1.0, 0.0]])
    columns = torch.arange(size)
    samples = []
    for _ in range(num_samples):
        boundary = int(torch.randint(10, size - 10, (1,), generator=generator))
        left = int(torch.randint(0, 3, (1,), generator=generator))
        right = (left + 1 + int(torch.randint(0, 2, (1,), generator=generator))) % 3
        labels = torch.where(columns < boundary, left, right).expand(size, size).clone()
        image = torch.randn(3, size, size, generator=generator)
        image[:, :, :6] += colours[left][:, None, None]
        image[:, :, -6:] += colours[right][:, None, None]
        samples.append({"pixel_values": image, "labels": labels})
    return samples


def random_samples(num_samples: int = 8, size: int = 32) -> list[dict[str, torch.Tensor]]:
    """Random images and 3-class label maps, for runs that check mechanics rather than learning."""
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(3, size, size, generator=generator),
            "labels": torch.randint(0, 3, (size, size), generator=generator),
        }
        for _ in range(num_samples)
    ]


def small_lad_seg(num_channels: int = 3) -> LadSegForSemanticSegmentation:
    """A DeepLabV3 a few channels wide, big enough to learn `split_scenes` in a few hundred steps."""
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], layer_type="basic")
    config = LadSegConfig(
        backbone=backbone, num_labels=3, num_channels=num_channels, decode_channels=32, aspp_rates=[2, 4, 6]
    )
    return LadSegForSemanticSegmentation(config)


class TinySegConfig(PretrainedConfig):
    model_type = "tiny_seg"
    num_channels: int = 3
    label_noiser: dict | None = None


class TinySegModel(PreTrainedModel):
    """Two convolutions and no batch statistics, so that a batch's loss does not depend on how it is split."""

    config_class = TinySegConfig
    accepts_loss_kwargs = False

    def __init__(self, config: TinySegConfig):
        super().__init__(config)
        self.conv = nn.Conv2d(config.num_channels, 8, 3, stride=2, padding=1)
        self.classifier = nn.Conv2d(8, config.num_labels, 1)
        self.post_init()

    def forward(self, pixel_values, labels=None):
        logits = self.classifier(torch.relu(self.conv(pixel_values)))
        loss = segmentation_cross_entropy(logits, labels) if labels is not None else None
        return SemanticSegmenterOutput(loss=loss, logits=logits)


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A local Hub (see `hub_server.py`) that huggingface_hub, datasets, transformers and peft talk to.

    Function-scoped: each test gets an empty server on a free port of 127.0.0.1, its repos under
    `tmp_path / "hub-storage"` and fresh HF caches under `tmp_path / "hf-home"`. The environment variables are set
    too, so a subprocess started by the test uses the same hub. Yields the `LocalHub`: `.endpoint`, `.token` (also
    in `HF_TOKEN`, so writes need no `token=`), `.root` (the storage), `.requests` (every request served) and
    `.unhandled` (requests the server has no route for or failed on). In this process, resolving any host other than
    127.0.0.1 fails at once, and fails the test at teardown.
    """
    from hub_server import LocalHub, point_clients_at

    with LocalHub(tmp_path / "hub-storage") as hub:
        outside = point_clients_at(hub, monkeypatch, tmp_path / "hf-home")
        yield hub
    assert not outside, f"a test using local_hub tried to reach {sorted(set(outside))}"
