import pytest
import torch
from conftest import tiny_dinov2, tiny_lad_seg_config, tiny_segformer
from transformers import (
    AutoModelForSemanticSegmentation,
    MobileNetV2Config,
    MobileNetV2ForSemanticSegmentation,
)

from lad_hf import (
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    add_label_channel,
    build_teacher_inputs,
)


def lad_seg():
    return LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))


def lad_seg_dinov2():
    return LadSegForSemanticSegmentation(LadSegConfig(backbone=tiny_dinov2(), decode_head="fcn", num_labels=3))


def mobilenet_deeplab():
    config = MobileNetV2Config(depth_multiplier=0.25, image_size=32, aspp_out_channels=16, num_labels=3)
    return MobileNetV2ForSemanticSegmentation(config)


MODELS = {
    "lad_seg": lad_seg,
    "lad_seg_dinov2": lad_seg_dinov2,
    "segformer": tiny_segformer,
    "mobilenet_v2": mobilenet_deeplab,
}


def images_and_labels():
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[:, :4] = 255
    return torch.randn(2, 3, 32, 32), labels


@pytest.mark.parametrize("name", list(MODELS))
def test_widening_leaves_outputs_identical(name):
    model = MODELS[name]().eval()
    pixel_values, labels = images_and_labels()
    with torch.no_grad():
        before = model(pixel_values).logits
        noiser = LabelNoiser(num_labels=3)
        add_label_channel(model, noiser)
        assert model.config.num_channels == 4
        after = model(build_teacher_inputs(pixel_values, labels, noiser)).logits
        after_other_label = model(build_teacher_inputs(pixel_values, labels.roll(1, 0), noiser)).logits
    assert torch.equal(before, after)
    assert torch.equal(before, after_other_label)


@pytest.mark.parametrize("name", list(MODELS))
def test_label_channel_and_noiser_survive_save_and_load(tmp_path, name):
    model = MODELS[name]().eval()
    noiser = LabelNoiser(num_labels=3, alpha=0.03, scale=100.0)
    add_label_channel(model, noiser)
    with torch.no_grad():  # make the label channel matter, as after training
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 4)
        stem.weight[:, 3].normal_()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.num_channels == 4
    assert LabelNoiser.from_config(loaded.config).to_dict() == noiser.to_dict()
    pixel_values, labels = images_and_labels()
    inputs = build_teacher_inputs(pixel_values, labels, noiser, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, loaded(inputs).logits)


def test_label_channel_filters_learn():
    model = lad_seg()
    noiser = LabelNoiser(num_labels=3)
    add_label_channel(model, noiser)
    pixel_values, labels = images_and_labels()
    model(build_teacher_inputs(pixel_values, labels, noiser), labels=labels).loss.backward()
    stem = model.backbone.embedder.embedder.convolution
    assert stem.weight.grad[:, 3].abs().sum() > 0


def test_teacher_inputs_concatenate_the_noised_label():
    noiser = LabelNoiser(num_labels=3)
    pixel_values, labels = images_and_labels()
    inputs = build_teacher_inputs(pixel_values, labels, noiser, generator=torch.Generator().manual_seed(3))
    assert inputs.shape == (2, 4, 32, 32)
    assert torch.equal(inputs[:, :3], pixel_values)
    assert torch.equal(inputs[:, 3:], noiser(labels, generator=torch.Generator().manual_seed(3)))


def test_bad_input_raises():
    noiser = LabelNoiser(num_labels=3)
    pixel_values, labels = images_and_labels()
    with pytest.raises(ValueError, match=r"need labels of shape \(2, 32, 32\)"):
        build_teacher_inputs(pixel_values, labels[:, :16], noiser)
    with pytest.raises(ValueError, match="predicts 3"):
        add_label_channel(lad_seg(), LabelNoiser(num_labels=5))
    model = add_label_channel(lad_seg(), noiser)
    with pytest.raises(ValueError, match="already has a label channel"):
        add_label_channel(model, noiser)
    with pytest.raises(ValueError, match="not made a LAD teacher"):
        LabelNoiser.from_config(lad_seg().config)


def test_separate_label_stem_starts_neutral_learns_and_round_trips(tmp_path):
    model = lad_seg().eval()
    noiser = LabelNoiser(num_labels=3)
    pixel_values, labels = images_and_labels()
    inputs = build_teacher_inputs(pixel_values, labels, noiser)
    with torch.no_grad():
        before = model(pixel_values).logits
        add_label_channel(model, noiser, label_stem_channels=4)
        assert torch.equal(before, model(inputs).logits)
    assert model.config.label_stem_channels == 4

    model.train()
    model(inputs, labels=labels).loss.backward()
    stem = model.backbone.embedder.embedder.convolution
    assert stem.label_stem[-1].weight.grad.abs().sum() > 0

    with torch.no_grad():
        stem.label_stem[-1].weight.normal_()
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, loaded(inputs).logits)
    built = LadSegForSemanticSegmentation(tiny_lad_seg_config(num_channels=4, label_stem_channels=4))
    assert set(built.state_dict()) == set(model.state_dict())


def test_separate_label_stem_needs_a_lad_seg_model():
    with pytest.raises(ValueError, match="label_stem_channels needs"):
        add_label_channel(tiny_segformer(), LabelNoiser(num_labels=3), label_stem_channels=4)
