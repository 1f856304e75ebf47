import copy

import pytest
import torch
from conftest import TinySegConfig, TinySegModel, small_lad_seg, split_scenes, tiny_lad_seg_config, trainer_args
from transformers import AutoModelForSemanticSegmentation

from lad_hf import (
    LabelNoiser,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    SegmentationConfig,
    SegmentationTrainer,
    add_label_channel,
    channel_wise_divergence,
    segmentation_cross_entropy,
)


def args(tmp_path, config_class=LadTeacherConfig, **kwargs):
    settings = dict(per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=3e-3, logging_steps=50)
    return trainer_args(config_class, tmp_path, **{**settings, **kwargs})


def teacher_of(model, **noiser_kwargs):
    return add_label_channel(model, LabelNoiser(model.config.num_labels, **noiser_kwargs))


def test_teacher_reads_its_label_and_beats_the_image_only_model(tmp_path):
    train, val = split_scenes(512, seed=0), split_scenes(64, seed=1)
    torch.manual_seed(0)
    image_only = SegmentationTrainer(
        model=small_lad_seg(), args=args(tmp_path, SegmentationConfig, max_steps=300), train_dataset=train
    )
    image_only.train()
    baseline = image_only.evaluate(val)["eval_mean_iou"]

    # The paper's noiser and lambda = 1, with lad_hf's separate label stem so that the unit-scale channel is read.
    torch.manual_seed(0)
    teacher = add_label_channel(small_lad_seg(), LabelNoiser(num_labels=3), label_stem_channels=8)
    trainer = LadTeacherTrainer(
        model=teacher, args=args(tmp_path, max_steps=300, consistency_weight=1.0), train_dataset=train
    )
    trainer.train()
    metrics = trainer.evaluate(val)
    print(f"image-only {baseline:.3f}, teacher {metrics}")
    assert metrics["eval_mean_iou"] > baseline + 0.03
    # The label-reliance diagnostic: without its true label the teacher falls back to about the image-only level.
    assert metrics["eval_mean_iou"] > metrics["eval_mean_iou_shuffled_label"] + 0.03
    assert metrics["eval_mean_iou"] > metrics["eval_mean_iou_zero_label"] + 0.03


def test_consistency_lowers_the_stability_metric(tmp_path):
    # From the same teacher, one that already reads its label, the same steps with lambda = 1 or 0. (Teachers trained
    # apart are not comparable: one that ignores its label is trivially stable.)
    train, val = split_scenes(512, seed=0), split_scenes(64, seed=1)
    torch.manual_seed(0)
    teacher = teacher_of(small_lad_seg(), scale=10.0)
    settings = dict(eval_stability=True)
    LadTeacherTrainer(
        model=teacher, args=args(tmp_path, max_steps=300, consistency_weight=0.0, **settings), train_dataset=train
    ).train()
    metrics = {}
    for weight in (0.0, 1.0):
        trainer = LadTeacherTrainer(
            model=copy.deepcopy(teacher),
            args=args(tmp_path, max_steps=100, learning_rate=1e-3, consistency_weight=weight, **settings),
            train_dataset=train,
        )
        trainer.train()
        metrics[weight] = trainer.evaluate(val)
    print(
        {
            weight: {k: round(v, 4) for k, v in m.items() if "mean_iou" in k or "stability" in k}
            for weight, m in metrics.items()
        }
    )
    for m in metrics.values():  # both still read their label
        assert m["eval_mean_iou"] > m["eval_mean_iou_shuffled_label"] + 0.1
    assert metrics[1.0]["eval_stability_kl"] < 0.75 * metrics[0.0]["eval_stability_kl"]


def test_two_paths_are_one_forward_and_the_loss_is_eq_7(tmp_path):
    model = teacher_of(LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")))
    trainer = LadTeacherTrainer(model=model, args=args(tmp_path, consistency_weight=0.7))
    calls = []
    model.register_forward_pre_hook(lambda module, a, kw: calls.append(kw["pixel_values"].shape), with_kwargs=True)
    labels = torch.randint(0, 3, (2, 32, 32))
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": labels}
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)

    assert calls == [torch.Size([4, 4, 32, 32])]  # one forward of 2B images with their label channel
    labels_twice = torch.cat([labels, labels])
    ce = segmentation_cross_entropy(outputs.logits, labels_twice)
    aux = segmentation_cross_entropy(outputs.auxiliary_logits, labels_twice)
    first, second = outputs.logits.chunk(2)
    expected = 2 * (ce + 0.4 * aux) + 0.7 * channel_wise_divergence(first, second, temperature=4.0)
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert not torch.allclose(first, second)  # the two paths saw independent noisings


def test_noise_is_seeded_and_differs_per_step_and_process(tmp_path, monkeypatch):
    trainer = LadTeacherTrainer(model=teacher_of(TinySegModel(TinySegConfig(num_labels=3))), args=args(tmp_path))
    labels = torch.randint(0, 3, (2, 8, 8))

    def draw(step):
        trainer.state.global_step = step
        trainer._generator_step = -1
        return trainer.noiser(labels, generator=trainer.step_generator(labels.device))

    assert torch.equal(draw(3), draw(3))
    assert not torch.allclose(draw(3), draw(4))
    first_rank = draw(3)
    monkeypatch.setattr(LadTeacherConfig, "process_index", property(lambda self: 1))
    assert not torch.allclose(first_rank, draw(3))


def test_consistency_warmup_ramps_lambda(tmp_path):
    model = teacher_of(TinySegModel(TinySegConfig(num_labels=3)))
    trainer = LadTeacherTrainer(model=model, args=args(tmp_path, consistency_weight=2.0, consistency_warmup_steps=10))
    ramp = []
    for step in (0, 5, 10, 20):
        trainer.state.global_step = step
        ramp.append(trainer.ramped_consistency_weight())
    assert ramp == [0.0, 1.0, 2.0, 2.0]


def test_logs_loss_parts_and_per_class_iou_and_records_the_noiser(tmp_path):
    model = teacher_of(LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn")), alpha=0.05)
    model.config.id2label = {0: "road", 1: "car", 2: "sky"}
    data = [{"pixel_values": s["pixel_values"][:, :32, :32], "labels": s["labels"][:32, :32]} for s in split_scenes(8)]
    trainer = LadTeacherTrainer(
        model=model,
        args=args(tmp_path, max_steps=2, logging_steps=1, per_device_train_batch_size=2),
        train_dataset=data,
        eval_dataset=data,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all({"loss_seg", "loss_consistency"} <= set(entry) for entry in logged)
    metrics = trainer.evaluate()
    assert {"eval_iou_road", "eval_iou_car", "eval_iou_sky", "eval_mean_iou_zero_label"} <= set(metrics)

    trainer.save_model(tmp_path / "teacher")
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "teacher")
    assert LabelNoiser.from_config(loaded.config).alpha == 0.05


def test_a_model_without_label_channel_or_noiser_is_refused(tmp_path):
    with pytest.raises(ValueError, match="add_label_channel"):
        LadTeacherTrainer(model=TinySegModel(TinySegConfig(num_labels=3)), args=args(tmp_path))
    # A model built with 4 channels but no recorded noiser cannot be given its label: the one message says so.
    with pytest.raises(ValueError, match="4 input channels.*records no label noiser.*config.label_noiser = "):
        LadTeacherTrainer(model=TinySegModel(TinySegConfig(num_labels=3, num_channels=4)), args=args(tmp_path))
    with pytest.raises(ValueError, match="ignore_index=0"):
        LadTeacherTrainer(
            model=teacher_of(TinySegModel(TinySegConfig(num_labels=3))), args=args(tmp_path, ignore_index=0)
        )
    with pytest.raises(ValueError, match="consistency_loss"):
        args(tmp_path, consistency_loss="l2")
    with pytest.raises(ValueError, match="class_noise=False"):
        LabelNoiser(3, fixed_codes="official")
