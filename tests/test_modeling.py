import pytest
import torch
from conftest import tiny_dinov2, tiny_lad_seg_config, tiny_resnet
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSemanticSegmentation,
    ConvNextConfig,
    ResNetForImageClassification,
    SwinConfig,
)
from transformers.modeling_outputs import SemanticSegmenterOutput

from lad_hf import LadSegConfig, LadSegForSemanticSegmentation
from lad_hf.models.lad_seg.configuration_lad_seg import DECODE_HEADS
from lad_hf.models.lad_seg.modeling_lad_seg import HEAD_CLASSES


HEADS = ["fcn", "psp", "aspp", "ocr"]


def tiny_backbones() -> dict[str, object]:
    return {
        "resnet_basic": tiny_resnet("basic"),
        "resnet_bottleneck": tiny_resnet("bottleneck"),
        "convnext": ConvNextConfig(hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1]),
        "swin": SwinConfig(
            image_size=32, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=2, patch_size=2
        ),
        "dinov2": tiny_dinov2(),
    }


def batch(num_labels: int = 3, size: int = 32, batch_size: int = 2, channels: int = 3):
    labels = torch.randint(0, num_labels, (batch_size, size, size))
    labels[:, :3] = 255
    return torch.randn(batch_size, channels, size, size), labels


@pytest.mark.parametrize("head", HEADS)
def test_forward_loss_and_backward(head):
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config(head))
    pixel_values, labels = batch()
    output = model(pixel_values, labels=labels)
    assert isinstance(output, SemanticSegmenterOutput)
    assert output.logits.shape == (2, 3, 4, 4)  # output stride 8
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.decode_head.classifier.weight.grad.abs().sum() > 0
    assert model.auxiliary_head.classifier.weight.grad.abs().sum() > 0
    assert model(pixel_values).loss is None


def test_loss_is_cross_entropy_plus_weighted_auxiliary_loss():
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config("psp", auxiliary_loss_weight=0.4)).eval()
    pixel_values, labels = batch()
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        features = model.backbone(pixel_values).feature_maps
        aux = model.auxiliary_head(list(features))  # the auxiliary head reads the penultimate stage

    def ce(logits):
        up = nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return nn.functional.cross_entropy(up, labels, ignore_index=255)

    assert torch.allclose(output.loss, ce(output.logits) + 0.4 * ce(aux), atol=1e-6)


def test_all_ignore_labels_give_zero_loss_not_nan():
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn"))
    pixel_values, _ = batch()
    loss = model(pixel_values, labels=torch.full((2, 32, 32), 255)).loss
    assert loss.item() == 0.0


# The stride of each tiny backbone's last stage: ResNets dilated to 8, ConvNeXt 32, Swin 16 (patches of 2), DINOv2 4.
BACKBONE_STRIDES = {"resnet_basic": 8, "resnet_bottleneck": 8, "convnext": 32, "swin": 16, "dinov2": 4}


@pytest.mark.parametrize("name", list(tiny_backbones()))
def test_transformers_backbones(name):
    config = LadSegConfig(backbone=tiny_backbones()[name], decode_head="psp", decode_channels=8, num_labels=3)
    model = LadSegForSemanticSegmentation(config)
    pixel_values, labels = batch()
    output = model(pixel_values, labels=labels, output_hidden_states=True)
    assert torch.isfinite(output.loss)
    # The heads read the last two stages: the decode head the last, the auxiliary head the one before.
    penultimate, last = output.hidden_states
    assert (penultimate.shape[1], last.shape[1]) == tuple(model.backbone.channels[-2:])
    size = 32 // BACKBONE_STRIDES[name]
    assert last.shape[-2:] == (size, size) and output.logits.shape == (2, 3, size, size)
    assert output.auxiliary_logits.shape == (2, 3, *penultimate.shape[-2:])
    assert output.decoder_features.shape == (2, 8, size, size)  # the classifier's input, decode_channels wide


@pytest.mark.parametrize("head", [*HEADS, "linear"])
def test_decoder_features_are_the_classifier_input(head):
    backbone = tiny_dinov2() if head == "linear" else tiny_resnet()
    config = LadSegConfig(backbone=backbone, decode_head=head, decode_channels=8, ocr_key_channels=4, num_labels=3)
    model = LadSegForSemanticSegmentation(config).eval()
    seen = []
    model.decode_head.classifier.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    pixel_values, _ = batch()
    output = model(pixel_values, output_hidden_states=True)
    (classifier_input,) = seen
    assert torch.equal(output.decoder_features, classifier_input)
    assert model(pixel_values).decoder_features is None  # only when asked for


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride(output_stride):
    for layer_type in ("basic", "bottleneck"):
        config = LadSegConfig(backbone=tiny_resnet(layer_type), num_labels=3, output_stride=output_stride)
        logits = LadSegForSemanticSegmentation(config)(torch.randn(2, 3, 64, 64)).logits
        assert logits.shape[-2:] == (64 // output_stride, 64 // output_stride)


def test_dilation_follows_the_papers_resnets():
    model = LadSegForSemanticSegmentation(LadSegConfig(backbone="resnet-18", num_labels=19))
    stage3, stage4 = model.backbone.encoder.stages[2:]

    def dilations(layer):
        convs = [conv for conv in layer.modules() if isinstance(conv, nn.Conv2d)]
        return [conv.dilation[0] for conv in convs if conv.kernel_size == (3, 3)]

    # The first 3x3 of a dilated stage keeps the previous stage's dilation.
    assert dilations(stage3.layers[0]) == [1, 2] and dilations(stage3.layers[1]) == [2, 2]
    assert dilations(stage4.layers[0]) == [2, 4] and dilations(stage4.layers[1]) == [4, 4]
    strides = {conv.stride for stage in (stage3, stage4) for conv in stage.modules() if isinstance(conv, nn.Conv2d)}
    assert strides == {(1, 1)}


@pytest.mark.parametrize(
    ("head", "backbone", "paper_millions"),
    [("aspp", "resnet-18", 13.6), ("psp", "resnet-18", 12.9), ("aspp", "resnet-101", 61.1)],
)
def test_parameter_counts_match_the_paper(head, backbone, paper_millions):
    model = LadSegForSemanticSegmentation(LadSegConfig(backbone=backbone, decode_head=head, num_labels=19))
    millions = model.num_parameters() / 1e6
    print(f"{head}-{backbone}: {millions:.2f}M parameters (paper {paper_millions}M)")
    assert abs(millions - paper_millions) / paper_millions < 0.05


@pytest.mark.parametrize("head", HEADS)
def test_save_and_load_round_trip(tmp_path, head):
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config(head)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is LadSegForSemanticSegmentation
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LadSegConfig)
    pixel_values, _ = batch()
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)


@pytest.mark.parametrize("name", ["resnet_bottleneck", "convnext", "swin", "dinov2"])
def test_save_and_load_round_trip_other_backbones(tmp_path, name):
    config = LadSegConfig(backbone=tiny_backbones()[name], decode_head="fcn", num_labels=3)
    model = LadSegForSemanticSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    loaded = LadSegForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone_config.model_type == config.backbone_config.model_type
    pixel_values, _ = batch()
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)


def test_pretrained_backbone_is_loaded_from_a_checkpoint(tmp_path):
    # A local folder stands in for a Hub id such as "microsoft/resnet-18": both go through from_pretrained.
    classifier = ResNetForImageClassification(tiny_resnet())
    classifier.save_pretrained(tmp_path / "resnet")
    config = LadSegConfig(backbone=str(tmp_path / "resnet"), use_pretrained_backbone=True, num_labels=3)
    model = LadSegForSemanticSegmentation(config)
    expected = classifier.resnet.embedder.embedder.convolution.weight
    assert torch.equal(model.backbone.embedder.embedder.convolution.weight, expected)
    assert model.config.use_pretrained_backbone is False  # the weights now belong to the model

    model.save_pretrained(tmp_path / "seg")
    (tmp_path / "resnet" / "model.safetensors").unlink()  # a saved model no longer needs the backbone checkpoint
    loaded = LadSegForSemanticSegmentation.from_pretrained(tmp_path / "seg")
    assert torch.equal(loaded.backbone.embedder.embedder.convolution.weight, expected)


def test_default_config_is_deeplabv3_r18():
    config = LadSegConfig(num_labels=19)
    assert (config.backbone, config.decode_head, config.output_stride) == ("resnet-18", "aspp", 8)
    assert config.backbone_config.out_features == ["stage3", "stage4"]
    assert config.num_labels == 19


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="decode_head"):
        LadSegConfig(decode_head="unet")
    with pytest.raises(ValueError, match="output_stride"):
        LadSegConfig(output_stride=4)
    with pytest.raises(ValueError, match="ResNet backbones only"):
        LadSegConfig(backbone=tiny_backbones()["dinov2"], output_stride=8)
    with pytest.raises(ValueError, match="auxiliary head"):
        LadSegConfig(decode_head="ocr", use_auxiliary_head=False)
    with pytest.raises(ValueError, match="Hub id"):
        LadSegConfig(backbone="resnet-18", use_pretrained_backbone=True)


def test_bad_inputs_raise_clear_errors():
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn"))
    pixel_values, labels = batch()
    with pytest.raises(ValueError, match=r"\[3, 9\].*\[0, 3\)"):
        model(pixel_values, labels=labels.masked_fill(labels == 0, 9).index_fill(1, torch.tensor([5]), 3))
    with pytest.raises(TypeError, match="integer class ids"):
        model(pixel_values, labels=labels.float())
    with pytest.raises(ValueError, match="spatial size"):
        model(pixel_values, labels=labels[:, :16])
    with pytest.raises(ValueError, match="batch of 2"):
        model(pixel_values, labels=labels[:1])
    with pytest.raises(ValueError, match=r"\(batch_size, 3, height, width\)"):
        model(torch.randn(2, 4, 32, 32))


def test_trains_with_the_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
    samples = []
    for _ in range(8):
        pixel_values, labels = batch(batch_size=1)
        samples.append({"pixel_values": pixel_values[0], "labels": labels[0]})
    args = TrainingArguments(
        tmp_path,
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
    )
    before = model.decode_head.classifier.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=samples)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    assert not torch.equal(before, model.decode_head.classifier.weight)


def test_every_head_the_config_names_has_a_class():
    assert set(HEAD_CLASSES) == set(DECODE_HEADS)
