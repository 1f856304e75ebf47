"""FAKD's closed-form bounds: equal to the plain KD losses without augmentation, never below them, above the
Monte-Carlo average over sampled feature augmentations; and the online class covariance converges."""

import pytest
import torch
from conftest import TinySegConfig, TinySegModel, random_samples, tiny_lad_seg_config, tiny_segformer, trainer_args
from transformers import TrainerCallback

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegForSemanticSegmentation,
    add_label_channel,
    channel_wise_divergence,
    pixel_wise_divergence,
)
from lad_hf.data import SegmentationCollator
from lad_hf.distillation.fakd import (
    ClassFeatureCovariance,
    augmentation_variance,
    cosine_ratio,
    fakd_channel_wise_divergence,
    fakd_pixel_wise_divergence,
)


K, D = 3, 4  # classes, feature channels


def random_covariances(generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    factors = torch.randn(K, D, D, generator=generator, dtype=torch.float64)
    return scale * factors @ factors.transpose(1, 2) / D  # positive semi-definite


def setup(seed: int = 0, size: int = 5):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, D, size, size, generator=generator, dtype=torch.float64)
    weight = torch.randn(K, D, generator=generator, dtype=torch.float64)
    bias = torch.randn(K, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, K, (2, size, size), generator=generator)
    labels[0, 0, :2] = 255
    teacher = 2 * torch.randn(2, K, size, size, generator=generator, dtype=torch.float64)
    return generator, features, weight, bias, labels, teacher


def logits_of(features, weight, bias):
    return torch.einsum("bdhw,kd->bkhw", features, weight) + bias[None, :, None, None]


def bound(kind, student, teacher, variance, tau, labels):
    if kind == "cwd":
        return fakd_channel_wise_divergence(student, teacher, variance, tau)
    return fakd_pixel_wise_divergence(student, teacher, variance, tau, labels)


def plain(kind, student, teacher, tau, labels):
    if kind == "cwd":
        return channel_wise_divergence(student, teacher, tau)
    return pixel_wise_divergence(student, teacher, tau, labels)


@pytest.mark.parametrize("kind", ["cwd", "pixel"])
def test_zero_covariance_gives_the_plain_loss(kind):
    _, features, weight, bias, labels, teacher = setup()
    student = logits_of(features, weight, bias)
    variance = augmentation_variance(weight, torch.zeros(K, D, D, dtype=torch.float64), labels, ratio=1.0)
    assert torch.equal(variance, torch.zeros_like(student))
    torch.testing.assert_close(
        bound(kind, student, teacher, variance, 4.0, labels), plain(kind, student, teacher, 4.0, labels)
    )


@pytest.mark.parametrize("kind", ["cwd", "pixel"])
@pytest.mark.parametrize("seed", range(5))
def test_the_bound_is_never_below_the_plain_loss(kind, seed):
    generator, features, weight, bias, labels, teacher = setup(seed)
    student = logits_of(features, weight, bias)
    variance = augmentation_variance(weight, random_covariances(generator), labels, ratio=0.5)
    assert (variance >= 0).all() and (variance[0, :, 0, :2] == 0).all()  # ignore pixels are not augmented
    for tau in (1.0, 4.0):
        assert bound(kind, student, teacher, variance, tau, labels) >= plain(kind, student, teacher, tau, labels)


@pytest.mark.parametrize("kind", ["cwd", "pixel"])
def test_the_bound_is_above_the_average_loss_over_sampled_augmentations(kind):
    generator, features, weight, bias, labels, teacher = setup(1)
    covariance, ratio, tau = random_covariances(generator, scale=2.0), 1.0, 2.0
    student = logits_of(features, weight, bias)
    upper = bound(kind, student, teacher, augmentation_variance(weight, covariance, labels, ratio), tau, labels)

    # d_i ~ N(0, ratio * S[y_i]) per position, through the classifier: z~ = W (f + d) + b.
    factors = torch.linalg.cholesky(ratio * covariance + 1e-12 * torch.eye(D, dtype=torch.float64))
    position_factor = factors[labels.clamp(max=K - 1)]  # (B, h, w, D, D)
    valid = (labels != 255)[:, None]
    losses = []
    for _ in range(2000):
        noise = torch.randn(*labels.shape, D, generator=generator, dtype=torch.float64)
        delta = torch.einsum("bhwde,bhwe->bdhw", position_factor, noise) * valid
        losses.append(plain(kind, logits_of(features + delta, weight, bias), teacher, tau, labels))
    monte_carlo = torch.stack(losses).mean()
    assert upper >= monte_carlo > plain(kind, student, teacher, tau, labels)


def test_online_covariance_converges_to_the_true_class_covariance():
    generator = torch.Generator().manual_seed(0)
    true_covariance = random_covariances(generator) + 0.1 * torch.eye(D, dtype=torch.float64)
    true_mean = 3 * torch.randn(K, D, generator=generator, dtype=torch.float64)
    factors = torch.linalg.cholesky(true_covariance)
    estimator = ClassFeatureCovariance(K, D)
    for _ in range(200):  # batches with uneven class counts and ignored pixels
        labels = torch.randint(0, K + 1, (2, 8, 8), generator=generator)
        labels[labels == K] = 255
        noise = torch.randn(2, 8, 8, D, generator=generator, dtype=torch.float64)
        samples = true_mean[labels.clamp(max=K - 1)] + torch.einsum(
            "bhwde,bhwe->bhwd", factors[labels.clamp(max=K - 1)], noise
        )
        estimator.update(samples.permute(0, 3, 1, 2).float(), labels)
    assert estimator.count.sum() == pytest.approx(200 * 128 * 3 / 4, rel=0.05)
    torch.testing.assert_close(estimator.mean, true_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(estimator.covariance, true_covariance, atol=0.1, rtol=0)


def test_cosine_ratio_warms_up_from_zero_to_the_ratio():
    assert cosine_ratio(0, 100) == 0.0 and cosine_ratio(100, 100) == pytest.approx(1.0)
    assert cosine_ratio(50, 100, max_ratio=0.5) == pytest.approx(0.25) and cosine_ratio(500, 100) == pytest.approx(1.0)


def test_distillation_with_fakd_estimates_the_student_covariance_and_bounds_cwd(tmp_path):
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), LabelNoiser(3)).eval()
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config())
    data = random_samples()
    trainers = {
        kd_loss: DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=trainer_args(
                DistillationConfig, tmp_path / kd_loss, max_steps=3, per_device_train_batch_size=4, kd_loss=kd_loss
            ),
            train_dataset=data,
        )
        for kd_loss in ("cwd", "fakd_cwd")
    }
    batch = SegmentationCollator()(data[:4])
    student.eval()  # no dropout: the two losses see the same student outputs
    trainers["fakd_cwd"].state.global_step, trainers["fakd_cwd"].state.max_steps = 0, 3  # ratio 0: plain CWD
    losses = {name: trainer.compute_loss(student, batch).item() for name, trainer in trainers.items()}
    assert losses["fakd_cwd"] == pytest.approx(losses["cwd"], rel=1e-6)

    trainer = trainers["fakd_cwd"]
    trainer.train()
    covariance = trainer.kd_objective.feature_covariance
    assert covariance.count.sum() > 0 and covariance.covariance.abs().sum() > 0
    width = student.decode_head.classifier.in_channels
    assert covariance.covariance.shape == (3, width, width)
    trainer.state.global_step = 3  # after the warm-up: the full ratio, a bound above plain CWD
    with torch.no_grad():
        assert trainer.compute_loss(student, batch).item() > trainers["cwd"].compute_loss(student, batch).item()


def test_fakd_needs_a_student_classifier(tmp_path):
    teacher = TinySegModel(TinySegConfig(num_labels=3))
    args = trainer_args(DistillationConfig, tmp_path, kd_loss="fakd_pixel")
    with pytest.raises(ValueError, match="a 1x1 Conv2d at decode_head.classifier"):
        DistillationTrainer(model=TinySegModel(TinySegConfig(num_labels=3)), teacher_model=teacher, args=args)


@pytest.mark.parametrize("student_kind", ["lad_seg", "segformer"])
def test_fakd_features_come_from_the_outputs_or_a_hook_that_is_removed_after_training(tmp_path, student_kind):
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), LabelNoiser(3)).eval()
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config()) if student_kind == "lad_seg" else tiny_segformer()
    args = trainer_args(DistillationConfig, tmp_path, max_steps=2, per_device_train_batch_size=4, kd_loss="fakd_cwd")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=random_samples())
    # lad_hf models return their classifier's input; a transformers model's is read by a hook while training runs.
    assert trainer.student_returns_features == (student_kind == "lad_seg")
    hooks_during_training = []
    trainer.add_callback(_HookCounter(student.decode_head.classifier, hooks_during_training))
    trainer.train()
    assert trainer.kd_objective.feature_covariance.count.sum() > 0  # the features reached the covariance estimate
    assert hooks_during_training == ([0] if student_kind == "lad_seg" else [1])
    assert not student.decode_head.classifier._forward_pre_hooks  # the student keeps no hook


class _HookCounter(TrainerCallback):
    def __init__(self, module, counts: list[int]):
        self.module, self.counts = module, counts

    def on_train_begin(self, args, state, control, **kwargs):
        self.counts.append(len(self.module._forward_pre_hooks))
