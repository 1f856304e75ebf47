"""The paper's comparison methods (SKD, IFVD, CIRKD, MasKD): zero where student and teacher agree, gradients to the
student and its projection only, any two resolutions, capped memory at 512x1024, CIRKD's memory queues, MasKD's first
stage, and the trainer around them."""

import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import random_samples, tiny_lad_seg_config, tiny_segformer, trainer_args
from safetensors.torch import load_file
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegForSemanticSegmentation,
    add_label_channel,
)
from lad_hf.distillation import (
    KD_LOSSES,
    CIRKDObjective,
    ContrastMemory,
    DistillationObjective,
    IFVDObjective,
    KDInputs,
    MasKDObjective,
    MaskTokens,
    SKDObjective,
    class_variation_loss,
    cross_image_similarity_loss,
    masked_distillation_loss,
    pairwise_similarity_loss,
    pool_to,
)


K = 3
METHODS = ["skd", "ifvd", "cirkd", "maskd"]
SMALL_CIRKD = dict(
    cirkd_pixel_memory_size=64, cirkd_region_memory_size=8, cirkd_pixel_contrast_size=16, cirkd_region_contrast_size=4
)


def objective(method: str, student_channels: int = 6, teacher_channels: int = 10, num_labels: int = K, **options):
    args = DistillationConfig(output_dir="unused", use_cpu=True, kd_loss=method, **options)
    return args.kd.from_args(args, num_labels, student_channels, teacher_channels)


def inputs(batch: int = 2, size=(16, 24), student_channels: int = 6, teacher_channels: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    return dict(
        student_logits=torch.randn(batch, K, height // 2, width // 2, generator=generator, requires_grad=True),
        teacher_logits=torch.randn(batch, K, height, width, generator=generator),
        student_features=torch.randn(
            batch, student_channels, height // 2, width // 2, generator=generator, requires_grad=True
        ),
        teacher_features=torch.randn(batch, teacher_channels, height, width, generator=generator),
        labels=torch.randint(0, K, (batch, 4 * height, 4 * width), generator=generator),
    )


# -- Zero where the method says student and teacher agree -----------------------------------------------------------


def test_each_term_is_zero_when_student_and_teacher_agree():
    features = torch.randn(2, 8, 12, 16)
    logits = torch.randn(2, K, 12, 16)
    labels = torch.randint(0, K, (2, 48, 64))
    labels[0, :10] = 255
    assert pairwise_similarity_loss(features, features.clone()) == 0
    assert class_variation_loss(features, features.clone(), labels, K) == 0
    assert cross_image_similarity_loss(features, features.clone()) < 1e-6
    tokens = MaskTokens(K)
    assert masked_distillation_loss(logits, logits.clone(), tokens(logits)) == 0
    # The similarity losses compare relations, not values: a student of other width and scale that keeps the
    # teacher's relations has nothing to learn.
    projection = torch.randn(16, 8)
    wider = torch.einsum("dc,bchw->bdhw", projection.T @ projection, features)  # not the same relations...
    assert pairwise_similarity_loss(wider, features) > 0
    assert pairwise_similarity_loss(3.0 * features, features) < 1e-10  # ...scaled ones are


@pytest.mark.parametrize("method", METHODS)
def test_objectives_vanish_when_the_student_is_the_teacher(method):
    # Same channels, logits and features: every term is zero, except CIRKD's memory contrast, which reads the
    # student through its projection head (zero once that head maps the student's features onto the teacher's).
    torch.manual_seed(0)
    module = objective(method, 10, 10, skd_adversarial=False, **(SMALL_CIRKD if method == "cirkd" else {}))
    data = inputs(student_channels=10, teacher_channels=10)
    data["student_logits"] = data["teacher_logits"].clone()
    data["student_features"] = data["teacher_features"].clone()
    terms = module(KDInputs(**data))
    for name, value in terms.items():
        if name in ("loss_pixel_memory", "loss_region_memory"):
            continue
        assert value.abs() < 1e-6, (name, value)
    if method == "cirkd":
        student = F.normalize(torch.randn(5, 10), dim=1)
        negatives = F.normalize(torch.randn(7, 10), dim=1)
        assert module._contrast(student, student.clone(), negatives) < 1e-6
        assert module._contrast(student, F.normalize(torch.randn(5, 10), dim=1), negatives) > 0


# -- Gradients, resolutions, memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [(16, 24), (33, 47)])
def test_objectives_take_any_resolution_and_differentiate_only_the_student_side(method, size):
    module = objective(method, **(SMALL_CIRKD if method == "cirkd" else {}))
    data = inputs(size=size)
    data["teacher_logits"].requires_grad_(True)
    data["teacher_features"].requires_grad_(True)
    terms = module(KDInputs(**data))
    assert all(value.ndim == 0 and torch.isfinite(value) for value in terms.values())
    total = sum(terms.values())
    total.backward()
    assert data["student_logits"].grad.abs().sum() > 0
    if method != "maskd":  # MasKD reads logits only
        assert data["student_features"].grad.abs().sum() > 0
    # Teacher-side tensors are targets: any gradient on them would be discarded, as the teacher is frozen; here
    # only SKD's and IFVD's similarity targets and the pixel KD reach them, never a module of the student side.
    for parameter in module.student_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates while it is active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


@pytest.mark.parametrize("method", METHODS)
def test_a_512x1024_batch_never_builds_a_full_affinity(method):
    # Cityscapes' crop with 19 classes and stride-8 features: 2 x 64 x 128 = 16,384 positions in the batch, whose full
    # affinity would hold 268M entries (over the pixels at full resolution, 2.7e11). The largest tensor of forward and
    # backward must stay well below: SKD's pooled maps are 2 x 2,048^2 = 8.4M entries; CIRKD's contrast of 1,024
    # anchors with 19 x 4,096 memory entries is 80M.
    torch.manual_seed(0)
    num_labels, channels, height, width = 19, 32, 64, 128
    module = objective(method, channels, channels, num_labels=num_labels)
    student_features = torch.randn(2, channels, height, width, requires_grad=True)
    student_logits = torch.randn(2, num_labels, height, width, requires_grad=True)
    data = dict(
        student_logits=student_logits,
        teacher_logits=torch.randn(2, num_labels, height, width),
        student_features=student_features,
        teacher_features=torch.randn(2, channels, height, width),
        labels=torch.randint(0, num_labels, (2, 512, 1024)),
    )
    with LargestTensor() as mode:
        sum(module(KDInputs(**data)).values()).backward()
    full_affinity = (2 * height * width) ** 2
    assert mode.largest < full_affinity / 3, mode.largest
    assert pool_to(student_features, 4096, factor=2).shape[-2:].numel() <= 4096


# -- CIRKD's memory ---------------------------------------------------------------------------------------------------


def test_cirkd_memory_fills_per_class_and_wraps():
    memory = ContrastMemory(num_labels=2, dim=4, pixel_size=40, region_size=3)
    features = torch.zeros(1, 4, 10, 10)
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[:, :, 5:] = 1
    labels[:, 0, :] = 255  # never enqueued
    features[:, 0, :, :5] = 1.0  # class 0 points along the first axis, class 1 along the second
    features[:, 1, :, 5:] = 1.0
    features += 0.01 * torch.randn_like(features)
    before = memory.pixel_queue.clone()
    memory.enqueue(features, labels)
    assert memory.pixel_pointer.tolist() == [16, 16] and memory.region_pointer.tolist() == [1, 1]
    assert (memory.pixel_queue[0, :16, 0] > 0.99).all() and (memory.pixel_queue[1, :16, 1] > 0.99).all()
    assert torch.equal(memory.pixel_queue[:, 16:], before[:, 16:])  # the rest untouched
    assert memory.region_queue[0, 0, 0] > 0.99 and memory.region_queue[1, 0, 1] > 0.99
    memory.enqueue(features, labels)
    memory.enqueue(features, labels)  # 32 + 16 > 40: the last 16 slots, then back to the start (CIRKD's rule)
    assert memory.pixel_pointer.tolist() == [0, 0] and memory.region_pointer.tolist() == [0, 0]
    assert (memory.pixel_queue[0, -16:, 0] > 0.99).all()
    assert (memory.pixel_queue[0, :, 0] > 0.99).all()  # every slot now holds a class-0 pixel
    only_class_1 = torch.ones(1, 10, 10, dtype=torch.long)
    memory.enqueue(features, only_class_1)
    assert memory.pixel_pointer.tolist() == [0, 16] and memory.region_pointer.tolist() == [0, 1]


def test_cirkd_contrast_is_the_kl_of_the_temperature_scaled_similarities():
    # CIRKD's code: KL(teacher || student) of the softmaxes of similarities / (T * tau), per anchor, mean, * tau^2.
    torch.manual_seed(0)
    module = CIRKDObjective(
        num_labels=3,
        student_channels=8,
        teacher_channels=8,
        **{k.removeprefix("cirkd_"): v for k, v in SMALL_CIRKD.items()},
    )
    module.contrast_kd_temperature = 2.0
    student = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1).requires_grad_()
    teacher = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    negatives = F.normalize(torch.randn(40, 8, dtype=torch.float64), dim=1)
    scale = module.contrast_temperature * module.contrast_kd_temperature
    log_p_s = F.log_softmax(student @ negatives.T / scale, dim=1)
    log_p_t = F.log_softmax(teacher @ negatives.T / scale, dim=1)
    expected = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean() * module.contrast_kd_temperature**2
    (expected_grad,) = torch.autograd.grad(expected, student)
    loss = module._contrast(student, teacher, negatives)
    (grad,) = torch.autograd.grad(loss, student)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_cirkd_memory_is_capped():
    module = CIRKDObjective(num_labels=19, student_channels=8, teacher_channels=2048, pixel_memory_size=20000)
    assert module.memory.pixel_queue.numel() * 4 <= CIRKDObjective.max_queue_bytes
    assert module.memory.pixel_queue.shape[1] < 20000


# -- The trainer around them ----------------------------------------------------------------------------------------


def tensors(state: dict) -> dict:
    """The tensors of a state dict, copied (an objective's state also holds its own optimizer's, as extra state)."""
    return {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}


def lad_teacher():
    torch.manual_seed(1)
    return add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")), LabelNoiser(K)).eval()


def distill(tmp_path, method: str, student=None, **settings):
    student = student if student is not None else LadSegForSemanticSegmentation(tiny_lad_seg_config())
    settings = {**dict(max_steps=2, per_device_train_batch_size=4, maskd_mask_steps=3, **SMALL_CIRKD), **settings}
    args = trainer_args(DistillationConfig, tmp_path, kd_loss=method, **settings)
    return DistillationTrainer(model=student, teacher_model=lad_teacher(), args=args, train_dataset=random_samples())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("student_kind", ["lad_seg", "segformer"])
def test_training_moves_the_student_and_what_trains_with_it_never_the_teacher(tmp_path, method, student_kind):
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config()) if student_kind == "lad_seg" else tiny_segformer()
    trainer = distill(tmp_path, method, student, logging_steps=1)
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    objective_before = tensors(trainer.kd_objective.state_dict())
    trainer.train()
    assert all(torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in trainer.teacher.parameters())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())
    changed = {
        k for k, v in tensors(trainer.kd_objective.state_dict()).items() if not torch.equal(v, objective_before[k])
    }
    logged = trainer.state.log_history[-2]
    if method in ("skd", "ifvd"):  # the discriminator trained by its own steps
        assert any(k.startswith("adversarial.discriminator.") for k in changed)
        assert "loss_discriminator" in logged and "loss_adversarial" in logged
    if method == "cirkd":  # the projection head trained with the student, the memory filled
        assert {"project.0.weight", "memory.pixel_queue", "memory.region_queue"} <= changed
        assert trainer.optimizer.param_groups[-1]["params"][0] is trainer.kd_objective.project[0].weight
    if method == "maskd":
        assert trainer.kd_objective.tokens_trained and "tokens.tokens" in changed
    assert {"loss_task", "loss_kd"} <= set(logged) and sum(k.startswith("loss_") for k in logged) > 3 - (
        method == "maskd"
    )
    # Saving keeps the student only: no projection, discriminator or tokens in its weights.
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert not set(saved) & set(trainer.kd_objective.state_dict())
    assert len(saved) == len(student.state_dict())


def test_maskd_first_stage_trains_the_tokens_on_the_frozen_teacher_then_freezes_them(tmp_path):
    trainer = distill(tmp_path, "maskd", maskd_mask_steps=4)
    tokens = trainer.kd_objective.tokens.tokens
    initial = tokens.detach().clone()
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    random_state = torch.random.get_rng_state()
    trainer.kd_objective.train_tokens(trainer)
    assert not torch.equal(tokens, initial) and not tokens.requires_grad
    assert torch.equal(torch.random.get_rng_state(), random_state)  # the student's run is not disturbed
    assert all(torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in teacher_before.items())
    trained = tokens.detach().clone()
    trainer.train()  # the first stage is done: the tokens stay as they are
    assert torch.equal(tokens, trained)


def test_a_resumed_maskd_run_takes_its_tokens_from_the_checkpoint(tmp_path, monkeypatch):
    trainer = distill(tmp_path, "maskd", max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    tokens = trainer.kd_objective.tokens.tokens.detach().clone()
    resumed = distill(tmp_path, "maskd", max_steps=3, save_strategy="steps", save_steps=1)

    def no_first_stage(trainer):
        raise AssertionError("the first stage ran again")

    monkeypatch.setattr(resumed.kd_objective, "train_tokens", no_first_stage)
    resumed.train(resume_from_checkpoint=True)
    assert torch.equal(resumed.kd_objective.tokens.tokens, tokens)


def test_method_defaults_and_options(tmp_path):
    assert DistillationConfig(output_dir=str(tmp_path), use_cpu=True).kd_weight == 3.0
    skd = DistillationConfig(output_dir=str(tmp_path), use_cpu=True, kd_loss="skd")
    assert (skd.kd_weight, skd.kd_temperature) == (1.0, 1.0)
    assert DistillationConfig(output_dir=str(tmp_path), use_cpu=True, kd_loss="skd", kd_weight=2.0).kd_weight == 2.0
    with pytest.raises(ValueError, match="cirkd_max_anchors must be at least 1"):
        DistillationConfig(output_dir=str(tmp_path), use_cpu=True, kd_loss="cirkd", cirkd_max_anchors=0)
    assert isinstance(objective("skd"), SKDObjective) and objective("skd", skd_adversarial=False).adversarial is None
    assert isinstance(objective("ifvd"), IFVDObjective) and isinstance(objective("maskd"), MasKDObjective)


def test_feature_methods_need_a_classifier_on_both_sides(tmp_path):
    from conftest import TinySegConfig, TinySegModel

    args = trainer_args(DistillationConfig, tmp_path, kd_loss="cirkd")
    with pytest.raises(ValueError, match="teacher's classifier, a 1x1 Conv2d at decode_head.classifier"):
        DistillationTrainer(
            model=LadSegForSemanticSegmentation(tiny_lad_seg_config()),
            teacher_model=TinySegModel(TinySegConfig(num_labels=K)),
            args=args,
        )


# -- A new method is one file and one table entry ---------------------------------------------------------------------


class ToyObjective(DistillationObjective):
    """A method with every part a method may carry: a loss of its own, a parameter trained with the student, a
    parameter trained by its own optimizer after each step, statistics, and a first stage before training."""

    description = "toy: scaled logits matched by MSE"
    default_weight, default_temperature = 0.5, 1.0
    first_stages = 0

    def __init__(self, num_labels: int):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(num_labels))  # trained by the student's optimizer
        self.own = torch.nn.Parameter(torch.zeros(num_labels))  # trained by the method's own optimizer
        self.optimizer = torch.optim.SGD([self.own], lr=0.1, momentum=0.9)
        self.register_buffer("own_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("first_stage_done", torch.tensor(False))
        self._teacher_logits = None

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels):
        return cls(num_labels)

    def get_extra_state(self):
        return self.optimizer.state_dict()

    def set_extra_state(self, state):
        self.optimizer.load_state_dict(state)

    def forward(self, inputs):
        student = F.interpolate(inputs.student_logits, size=inputs.teacher_logits.shape[-2:], mode="bilinear")
        self._teacher_logits = inputs.teacher_logits
        return {"loss_toy": F.mse_loss(student * self.scale[:, None, None], inputs.teacher_logits)}

    def student_parameters(self):
        return [self.scale]

    def before_training(self, trainer):
        if not self.first_stage_done:
            type(self).first_stages += 1
            self.first_stage_done.fill_(True)

    def after_backward(self, reduce):
        loss = (self.own[None, :, None, None] - self._teacher_logits.detach()).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.own_steps += 1
        return {"loss_own": loss.detach()}

    def card_settings(self):
        return {"toy scale": [round(v, 3) for v in self.scale.tolist()]}


def test_a_new_method_is_a_class_and_a_table_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(KD_LOSSES, "toy", ToyObjective)
    monkeypatch.setattr(ToyObjective, "first_stages", 0)
    assert DistillationConfig(output_dir=str(tmp_path), use_cpu=True, kd_loss="toy").kd_weight == 0.5
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config())
    trainer = distill(tmp_path, "toy", student, max_steps=3, logging_steps=1, save_strategy="steps", save_steps=1)
    toy = trainer.kd_objective
    scale, own = toy.scale.detach().clone(), toy.own.detach().clone()
    trainer.train()
    assert not torch.equal(toy.scale, scale) and not torch.equal(toy.own, own)
    assert toy.own_steps == 3 and ToyObjective.first_stages == 1
    logged = trainer.state.log_history[-2]
    assert {"loss_task", "loss_kd", "loss_toy", "loss_own"} <= set(logged)
    trainer.save_model(str(tmp_path / "saved"))
    assert not {k for k in load_file(tmp_path / "saved" / "model.safetensors") if "scale" in k or "own" in k}
    trainer.create_model_card()
    assert "toy scale" in (tmp_path / "README.md").read_text()

    # Resumed from step 2: the method's state as the checkpoint left it, its first stage not run again, its own
    # optimizer continuing, so that the resumed run repeats the uninterrupted one.
    shutil.rmtree(tmp_path / "checkpoint-3")
    resumed = distill(tmp_path, "toy", LadSegForSemanticSegmentation(tiny_lad_seg_config()), max_steps=3)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.kd_objective.own_steps == 3 and ToyObjective.first_stages == 1
    torch.testing.assert_close(resumed.kd_objective.own, toy.own, rtol=0, atol=0)
    torch.testing.assert_close(resumed.kd_objective.scale, toy.scale, rtol=0, atol=0)
