import json

import numpy as np
import pytest
import torch
from transformers import ResNetConfig

from lad_hf import LadSegConfig, LadSegForSemanticSegmentation
from lad_hf.benchmark.digit_scenes import compose_digit, load_mnist_digits, split_digits
from lad_hf.benchmark.pretraining import DigitRenders, pretrain_digit_backbone


def tiny_backbone() -> ResNetConfig:
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], layer_type="basic")


def test_digit_renders_come_from_the_train_pool_only():
    digits, labels = load_mnist_digits()
    pools = split_digits(labels)
    renders = DigitRenders("train", size=48, seed=0, limit=20)
    assert len(renders.digits) == len(pools["train"])
    assert np.array_equal(renders.digits, digits[pools["train"]])
    samples = list(renders)
    assert len(samples) == 20
    assert samples[0]["pixel_values"].shape == (3, 48, 48) and samples[0]["pixel_values"].dtype == torch.float32
    assert {s["labels"] for s in samples} <= set(range(10)) and len({s["labels"] for s in samples}) > 3
    # The same seed draws the same renders; another seed others.
    again = list(DigitRenders("train", size=48, seed=0, limit=3))
    other = list(DigitRenders("train", size=48, seed=1, limit=3))
    assert torch.equal(again[0]["pixel_values"], samples[0]["pixel_values"])
    assert not torch.equal(other[0]["pixel_values"], samples[0]["pixel_values"])
    with pytest.raises(TypeError, match="max_steps"):
        len(DigitRenders("train"))


def test_compose_digit_draws_the_digit_it_names():
    digits, labels = load_mnist_digits()
    pool = digits[:50]
    image, index = compose_digit(pool, np.random.default_rng(0), size=48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and 0 <= index < 50
    # A blank digit leaves only the background and the clutter: the named digit is what adds ink.
    blank = np.zeros_like(pool)
    without, _ = compose_digit(blank[:1].repeat(50, 0), np.random.default_rng(0), size=48)
    assert np.abs(image.astype(int) - without.astype(int)).sum() > 0


def test_pretrained_backbone_loads_through_use_pretrained_backbone(tmp_path):
    out = tmp_path / "digits-resnet"
    results = pretrain_digit_backbone(
        tiny_backbone(), out, steps=3, batch_size=8, eval_renders=16, show_progress=False
    )
    assert 0.0 <= results["accuracy"] <= 1.0 and results["settings"]["digit_pool"] == "train"
    assert (out / "model.safetensors").exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert json.loads((out / "pretrain_results.json").read_text())["accuracy"] == results["accuracy"]

    # Loaded as a user loads microsoft/resnet-18: the backbone's weights are the pretrained ones.
    config = LadSegConfig(backbone=str(out), use_pretrained_backbone=True, decode_head="aspp", num_labels=3)
    model = LadSegForSemanticSegmentation(config)
    from transformers import ResNetForImageClassification

    classifier = ResNetForImageClassification.from_pretrained(out)
    for name, tensor in classifier.resnet.state_dict().items():
        if name.startswith(("embedder", "encoder")):
            assert torch.equal(model.backbone.state_dict()[name], tensor), name
    scratch = LadSegForSemanticSegmentation(LadSegConfig(backbone=tiny_backbone(), num_labels=3))
    assert not torch.equal(
        scratch.backbone.embedder.embedder.convolution.weight, classifier.resnet.embedder.embedder.convolution.weight
    )

    # Asked again with the same settings it is reused; with other settings it refuses to overwrite.
    assert pretrain_digit_backbone(tiny_backbone(), out, steps=3, batch_size=8, eval_renders=16) == results
    with pytest.raises(FileExistsError, match="other settings"):
        pretrain_digit_backbone(tiny_backbone(), out, steps=4, batch_size=8, eval_renders=16)
