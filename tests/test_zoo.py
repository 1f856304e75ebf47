"""The paper's other two model families: STDC (STDC1, STDC2, STDC-Seg with its detail head) and OCRNet on HRNetV2
(W18-Small, W18, W48), as students, as LAD teachers and under distillation, with their parameter counts."""

from pathlib import Path

import pytest
import torch
from conftest import random_samples, tiny_hrnet, tiny_stdc, trainer_args
from transformers import AutoModelForSemanticSegmentation

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    HrnetBackbone,
    HrnetConfig,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    StdcBackbone,
    add_label_channel,
    build_teacher_inputs,
)
from lad_hf.models.hrnet.configuration_hrnet import HRNET_PRESETS
from lad_hf.models.losses import boundary_targets, detail_aggregation_loss
from lad_hf.models.stdc.configuration_stdc import STDC_PRESETS


def test_stdc_backbone_stages_and_strides():
    config = tiny_stdc()
    config.out_features = [f"stage{i}" for i in range(1, 6)]
    backbone = StdcBackbone(config)
    maps = backbone(torch.randn(2, 3, 64, 96)).feature_maps
    shapes = [(2, 4, 32, 48), (2, 8, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]  # 1/2 ... 1/32
    assert [tuple(m.shape) for m in maps] == shapes and backbone.channels == [4, 8, 32, 64, 128]


def test_hrnet_backbone_branches_and_strides():
    config = tiny_hrnet()
    config.out_features = ["stem", "branch1", "branch2", "branch3", "branch4"]
    maps = HrnetBackbone(config)(torch.randn(2, 3, 64, 96)).feature_maps
    shapes = [(2, 8, 16, 24), (2, 4, 16, 24), (2, 8, 8, 12), (2, 16, 4, 6), (2, 32, 2, 3)]  # 1/4, then 1/4 ... 1/32
    assert [tuple(m.shape) for m in maps] == shapes


def stdc_seg(layers=(1, 1, 1), **kwargs) -> LadSegForSemanticSegmentation:
    return LadSegForSemanticSegmentation(
        LadSegConfig(backbone=tiny_stdc(layers), decode_head="stdc", decode_channels=16, num_labels=3, **kwargs)
    )


def ocr_hrnet(**kwargs) -> LadSegForSemanticSegmentation:
    config = LadSegConfig(backbone=tiny_hrnet(), decode_head="ocr", decode_channels=16, ocr_key_channels=8, **kwargs)
    return LadSegForSemanticSegmentation(config)


def test_stdc_detail_head_trains_and_is_absent_at_inference():
    model = stdc_seg().train()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    output = model(pixel_values, labels=labels)
    assert output.logits.shape == (2, 3, 8, 8) and output.detail_logits.shape == (2, 1, 8, 8)
    output.loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in model.detail_head.parameters())  # the boundary loss trains it
    # At inference it is not run, and the model without it (as deployed) gives the same logits.
    model.eval()
    assert model(pixel_values).detail_logits is None
    deployed = LadSegForSemanticSegmentation(LadSegConfig(**{**model.config.to_dict(), "use_detail_head": False}))
    missing, unexpected = deployed.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("detail_head.") for k in unexpected)
    torch.testing.assert_close(deployed.eval()(pixel_values).logits, model(pixel_values).logits)
    detail = sum(p.numel() for p in model.detail_head.parameters())
    assert deployed.num_parameters() == model.num_parameters() - detail


def test_detail_loss_targets_are_the_label_boundaries():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 2  # a square of class 2
    targets = boundary_targets(labels)[0, 0]
    assert targets[4, 4:12].all() and targets[4:12, 4].all()  # its rim
    assert not targets[6:10, 6:10].any() and not targets[:2].any() and not targets[:, :2].any()  # inside, far away
    perfect = torch.where(boundary_targets(labels) > 0, 20.0, -20.0)
    assert detail_aggregation_loss(perfect, labels) < 0.01 < detail_aggregation_loss(-perfect, labels)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_ocrnet_on_hrnet_forward_and_backward(size):
    model = ocr_hrnet(num_labels=3).train()
    pixel_values, labels = torch.randn(2, 3, *size), torch.randint(0, 3, (2, *size))
    output = model(pixel_values, labels=labels)
    # The heads read the four branches upsampled to 1/4 and concatenated (HRNetV2), 4 + 8 + 16 + 32 channels.
    assert model.config.head_inputs == "concat" and model.auxiliary_head.conv[0].in_channels == 60
    assert output.logits.shape == (2, 3, size[0] // 4, size[1] // 4) and output.auxiliary_logits is not None
    output.loss.backward()
    assert (
        model.backbone.conv1.weight.grad.abs().sum() > 0 and model.decode_head.classifier.weight.grad.abs().sum() > 0
    )


@pytest.mark.parametrize("family", ["stdc", "hrnet"])
def test_widened_teachers_match_before_their_label_filters_train_and_round_trip(tmp_path, family):
    model = (stdc_seg() if family == "stdc" else ocr_hrnet(num_labels=3)).eval()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    before = model(pixel_values).logits
    teacher = add_label_channel(model, LabelNoiser(3))
    inputs = build_teacher_inputs(pixel_values, labels, teacher_noiser := LabelNoiser(3))
    torch.testing.assert_close(teacher(inputs).logits, before, rtol=0, atol=0)  # the label channel reaches the stem
    teacher.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.num_channels == 4 and loaded.config.backbone_config.num_channels == 4
    torch.testing.assert_close(loaded(inputs).logits, teacher(inputs).logits)
    assert teacher_noiser.num_labels == 3


def test_one_distillation_step_from_an_stdc1_lad_teacher_to_an_stdc2_student(tmp_path):
    teacher = add_label_channel(stdc_seg(layers=STDC_PRESETS["stdc1"]["layers"]), LabelNoiser(3)).eval()
    student = stdc_seg(layers=STDC_PRESETS["stdc2"]["layers"])
    args = trainer_args(DistillationConfig, tmp_path, max_steps=1, per_device_train_batch_size=4, logging_steps=1)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=random_samples(4, 64))
    before = [p.detach().clone() for p in student.detail_head.parameters()]
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "loss_kd" in entry)
    assert log["loss_kd"] > 0 and log["loss_task"] > 0
    # The student's task loss includes STDC's detail loss: its detail head trained.
    assert any(not torch.equal(a, b) for a, b in zip(before, student.detail_head.parameters(), strict=True))


def deployed_millions(model) -> float:
    training_only = [model.auxiliary_head, model.detail_head]
    return (
        model.num_parameters() - sum(p.numel() for m in training_only if m is not None for p in m.parameters())
    ) / 1e6


def test_parameter_counts_match_the_published_ones():
    with torch.device("meta"):
        stdc = {
            name: LadSegForSemanticSegmentation(LadSegConfig(backbone=name, decode_head="stdc", num_labels=19))
            for name in STDC_PRESETS
        }
        hrnets = {name: HrnetBackbone(HrnetConfig(**settings)) for name, settings in HRNET_PRESETS.items()}
    # STDC-Seg at 19 classes, without the training-only heads: 8.4M and 12.5M (STDC's paper).
    assert deployed_millions(stdc["stdc1"]) == pytest.approx(8.4, rel=0.02)
    assert deployed_millions(stdc["stdc2"]) == pytest.approx(12.5, rel=0.02)
    # HRNetV2 as published counts it for segmentation: the backbone plus its 1x1 head over the concatenated branches.
    for name, published in (("hrnet-w18-small", 4.0), ("hrnet-w18", 9.6), ("hrnet-w48", 65.9)):
        width = sum(HRNET_PRESETS[name]["stage_channels"][-1])
        head = width * width + 2 * width + width * 19 + 19  # 1x1 conv, batch norm, 1x1 classifier
        assert (hrnets[name].num_parameters() + head) / 1e6 == pytest.approx(published, rel=0.025)


def test_pretrained_stdc_and_hrnet_weights_load_by_hub_id(local_hub):
    for backbone in (StdcBackbone(tiny_stdc()), HrnetBackbone(tiny_hrnet())):
        repo = f"user/{backbone.config.model_type}-imagenet"
        backbone.push_to_hub(repo)
        head = "stdc" if isinstance(backbone, StdcBackbone) else "ocr"
        config = LadSegConfig(backbone=repo, use_pretrained_backbone=True, decode_head=head, num_labels=3)
        model = LadSegForSemanticSegmentation(config)
        for name, tensor in backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[name], tensor), name


def test_the_authors_imagenet_checkpoints_convert_key_for_key(tmp_path, monkeypatch):
    """`scripts/convert_backbone_weights.py`: a checkpoint saved as STDC-Seg's and HRNet's code save theirs (a
    `state_dict`, DataParallel's `module.` prefix, the classification head's weights beside the backbone's) becomes a
    backbone folder that a LadSeg model loads with `use_pretrained_backbone`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert", Path(__file__).parents[1] / "scripts" / "convert_backbone_weights.py"
    )
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    # Small stand-ins for the published networks, so that the test builds them in a blink.
    monkeypatch.setitem(convert.STDC_PRESETS, "stdc1", {**tiny_stdc().to_dict()})
    monkeypatch.setitem(convert.HRNET_PRESETS, "hrnet-w18", {**tiny_hrnet().to_dict()})
    for name, backbone, head, extra in (
        (
            "stdc1",
            StdcBackbone(tiny_stdc()),
            "stdc",
            {"conv_last.conv.weight": torch.zeros(2), "linear.weight": torch.zeros(2)},
        ),
        (
            "hrnet-w18",
            HrnetBackbone(tiny_hrnet()),
            "ocr",
            {"final_layer.0.weight": torch.zeros(2), "classifier.weight": torch.zeros(2)},
        ),
    ):
        weights = {f"module.{key}": value for key, value in backbone.state_dict().items()}
        torch.save({"epoch": 300, "state_dict": {**weights, **extra}}, tmp_path / f"{name}.tar")
        convert.main([name, str(tmp_path / f"{name}.tar"), str(tmp_path / name)])
        config = LadSegConfig(
            backbone=str(tmp_path / name), use_pretrained_backbone=True, decode_head=head, num_labels=3
        )
        model = LadSegForSemanticSegmentation(config)
        for key, tensor in backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[key], tensor), key
    torch.save({"state_dict": {"fc.weight": torch.zeros(2)}}, tmp_path / "other.tar")
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["stdc1", str(tmp_path / "other.tar"), str(tmp_path / "other")])
    assert exit_info.value.code == 2
