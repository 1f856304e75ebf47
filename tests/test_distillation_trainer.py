import pytest
import torch
from conftest import TinySegConfig, TinySegModel, tiny_lad_seg_config, tiny_segformer, trainer_args

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    add_label_channel,
    build_teacher_inputs,
    channel_wise_divergence,
    pixel_wise_divergence,
    segmentation_cross_entropy,
)


def random_data(num_samples: int = 8, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        labels = torch.randint(0, 3, (size, size), generator=generator)
        labels[:2] = 255
        samples.append({"pixel_values": torch.randn(3, size, size, generator=generator), "labels": labels})
    return samples


def args(tmp_path, config_class=DistillationConfig, **kwargs):
    return trainer_args(
        config_class, tmp_path, **{"max_steps": 2, "per_device_train_batch_size": 2, "logging_steps": 1, **kwargs}
    )


def lad_teacher(head: str = "aspp"):
    return add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config(head)), LabelNoiser(3)).eval()


def test_teacher_is_frozen_and_the_student_sees_only_the_image(tmp_path):
    teacher = lad_teacher()
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("psp"))
    student_calls, teacher_calls = [], []
    student.register_forward_pre_hook(lambda m, a, kw: student_calls.append((a, dict(kw))), with_kwargs=True)
    teacher.register_forward_pre_hook(
        lambda m, a, kw: teacher_calls.append(kw["pixel_values"].shape), with_kwargs=True
    )

    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args(tmp_path, max_steps=3), train_dataset=random_data()
    )
    trainer.train()
    trainer.evaluate(random_data(4, seed=1))

    assert student_calls and all(not a and set(kw) == {"pixel_values"} for a, kw in student_calls)
    assert all(kw["pixel_values"].shape[1] == 3 for _, kw in student_calls)
    assert teacher_calls and all(shape[1] == 4 for shape in teacher_calls)  # image + the recorded noiser's label
    after = teacher.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit-identical, BN statistics too
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all({"loss_task", "loss_kd"} <= set(entry) for entry in logged)


@pytest.mark.parametrize("kd_loss", ["cwd", "pixel_kd"])
def test_loss_is_weighted_task_plus_kd(tmp_path, kd_loss):
    # A LAD teacher whose label channel has no randomness (fixed codes, no pixel noise), so that its logits can be
    # computed here independently of the trainer.
    noiser = LabelNoiser(3, alpha=0.0, class_noise=False)
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp")), noiser).eval()
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn"))
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path, kd_loss=kd_loss, kd_weight=2.5, task_weight=0.5, kd_temperature=2.0),
    )
    batch = random_data(2)
    inputs = {key: torch.stack([s[key] for s in batch]) for key in ("pixel_values", "labels")}
    loss, outputs = trainer.compute_loss(student, inputs, return_outputs=True)

    labels = inputs["labels"]
    with torch.no_grad():
        teacher_logits = teacher(build_teacher_inputs(inputs["pixel_values"], labels, noiser)).logits
    task = segmentation_cross_entropy(outputs.logits, labels) + 0.4 * segmentation_cross_entropy(
        outputs.auxiliary_logits, labels
    )
    if kd_loss == "cwd":
        kd = channel_wise_divergence(outputs.logits, teacher_logits, 2.0)
    else:
        kd = pixel_wise_divergence(outputs.logits, teacher_logits, 2.0, labels)
    assert torch.allclose(loss, 0.5 * task + 2.5 * kd, rtol=1e-5)


def test_conventional_teacher_of_another_architecture_and_resolution(tmp_path):
    teacher = tiny_segformer().eval()  # logits at 1/4, no label channel
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))  # logits at 1/8
    calls = []
    teacher.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["pixel_values"].shape[1]), with_kwargs=True)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args(tmp_path), train_dataset=random_data()
    )
    trainer.train()
    assert calls and set(calls) == {3}
    assert trainer.teacher_noiser is None


def test_different_label_sets_raise_before_training(tmp_path):
    with pytest.raises(ValueError, match="predicts 4 classes and the teacher 3"):
        DistillationTrainer(
            model=LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=4)),
            teacher_model=lad_teacher(),
            args=args(tmp_path),
        )
    teacher = lad_teacher()
    teacher.config.id2label = {0: "road", 1: "car", 2: "sky"}
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config())
    student.config.id2label = {0: "road", 1: "sky", 2: "car"}
    with pytest.raises(ValueError, match="name their classes differently"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_path))
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationTrainer(model=student, args=args(tmp_path))
    with pytest.raises(ValueError, match="kd_loss"):
        args(tmp_path, kd_loss="mse")


@pytest.mark.parametrize("trainer_name", ["teacher", "distillation"])
def test_resume_continues_with_the_same_loss(tmp_path, trainer_name):
    lad_teacher().save_pretrained(tmp_path / "teacher")

    def run(output_dir, resume=None):
        torch.manual_seed(0 if resume is None else 1)  # a resumed model starts from the checkpoint's weights
        settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
        if trainer_name == "teacher":
            model = lad_teacher().train()
            config = args(output_dir, LadTeacherConfig, **settings)
            trainer = LadTeacherTrainer(model=model, args=config, train_dataset=random_data(16))
        else:  # the teacher is reloaded from its folder: checkpoints do not hold it
            student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
            config = args(output_dir, teacher_model_name_or_path=str(tmp_path / "teacher"), **settings)
            trainer = DistillationTrainer(model=student, args=config, train_dataset=random_data(16))
        trainer.train(resume_from_checkpoint=resume)
        return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}

    uninterrupted = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    assert set(resumed) == {1, 2, 3, 4}  # steps 1 and 2 come from the checkpoint's trainer state
    assert resumed[3] == pytest.approx(uninterrupted[3], rel=1e-6)
    assert resumed[4] == pytest.approx(uninterrupted[4], rel=1e-6)


def train_one_step(tmp_path, trainer_name, batch_size, accumulation):
    """One SGD step on the same 4 images, as one batch or accumulated; returns the logged loss and the weights."""
    torch.manual_seed(0)
    settings = dict(
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
    )
    # Models without batch statistics, and a label channel without randomness: fixed codes and no pixel noise.
    if trainer_name == "teacher":
        model = TinySegModel(TinySegConfig(num_labels=3, num_channels=4))
        model.config.label_noiser = LabelNoiser(3, alpha=0.0, class_noise=False).to_dict()
        config = args(tmp_path, LadTeacherConfig, **settings)
        trainer = LadTeacherTrainer(model=model, args=config, train_dataset=random_data(8, size=16))
    else:
        model = TinySegModel(TinySegConfig(num_labels=3))
        teacher = TinySegModel(TinySegConfig(num_labels=3, num_channels=4))
        teacher.config.label_noiser = LabelNoiser(3, alpha=0.0, class_noise=False).to_dict()
        trainer = DistillationTrainer(
            model=model, teacher_model=teacher, args=args(tmp_path, **settings), train_dataset=random_data(8, size=16)
        )
    trainer.train()
    loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return loss, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("trainer_name", ["teacher", "distillation"])
def test_gradient_accumulation_matches_a_bigger_batch(tmp_path, trainer_name):
    loss_big, weights_big = train_one_step(tmp_path / "big", trainer_name, batch_size=4, accumulation=1)
    loss_accumulated, weights_accumulated = train_one_step(tmp_path / "ga", trainer_name, batch_size=2, accumulation=2)
    assert loss_accumulated == pytest.approx(loss_big, rel=1e-5)
    assert torch.allclose(weights_accumulated, weights_big, atol=1e-6)


@pytest.mark.parametrize("trainer_name", ["teacher", "distillation"])
def test_bf16_autocast(tmp_path, trainer_name):
    trained = (
        lad_teacher().train()
        if trainer_name == "teacher"
        else LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn"))
    )
    dtypes = []  # what the trained model's classifier computes in, inside the training forward
    trained.decode_head.classifier.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    if trainer_name == "teacher":
        trainer = LadTeacherTrainer(
            model=trained, args=args(tmp_path, LadTeacherConfig, bf16=True), train_dataset=random_data()
        )
    else:
        trainer = DistillationTrainer(
            model=trained, teacher_model=lad_teacher(), args=args(tmp_path, bf16=True), train_dataset=random_data()
        )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert dtypes and set(dtypes) == {torch.bfloat16}  # bf16 was on, not silently off


def test_channels_last_keeps_student_and_teacher_weights_channels_last(tmp_path):
    teacher, student = lad_teacher(), LadSegForSemanticSegmentation(tiny_lad_seg_config())
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args(tmp_path, channels_last=True), train_dataset=random_data()
    )
    trainer.train()
    for model in (student, teacher):
        weight = model.backbone.embedder.embedder.convolution.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert trainer.state.global_step == 2
