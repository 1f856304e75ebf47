"""FAKD's closed-form bounds: equal to the plain KD losses without augmentation, never below them, above the
Monte-Carlo average over sampled feature augmentations; and the online class covariance converges."""

import pytest
import torch

from lad_hf import channel_wise_divergence, pixel_wise_divergence
from lad_hf.fakd import (
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
