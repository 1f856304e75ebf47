import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lad_hf import channel_wise_divergence, dual_path_consistency, pixel_wise_divergence


def cwd_float64(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """CWD written out directly in float64, channel by channel."""
    s, t = student.double().numpy(), teacher.double().numpy()
    n, c = t.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            ls = s[i, j].ravel() / tau
            lt = t[i, j].ravel() / tau
            log_ps = ls - ls.max() - np.log(np.exp(ls - ls.max()).sum())
            log_pt = lt - lt.max() - np.log(np.exp(lt - lt.max()).sum())
            total += (np.exp(log_pt) * (log_pt - log_ps)).sum()
    return total * tau**2 / (n * c)


def pkd_float64(student: torch.Tensor, teacher: torch.Tensor, tau: float, valid: torch.Tensor) -> float:
    s, t = student.double().numpy() / tau, teacher.double().numpy() / tau
    log_ps = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    log_pt = t - np.log(np.exp(t - t.max(1, keepdims=True)).sum(1, keepdims=True)) - t.max(1, keepdims=True)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(1)
    mask = valid.numpy()
    return kl[mask].mean() * tau**2


@pytest.fixture
def logits():
    return torch.randn(2, 3, 5, 6) * 3, torch.randn(2, 3, 5, 6) * 3


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_float64_reference(logits, tau):
    student, teacher = logits
    assert channel_wise_divergence(student, teacher, tau).item() == pytest.approx(
        cwd_float64(student, teacher, tau), rel=1e-5
    )


def test_losses_are_zero_for_identical_inputs(logits):
    student, _ = logits
    assert channel_wise_divergence(student, student.clone(), 4.0).abs() < 1e-6
    assert pixel_wise_divergence(student, student.clone(), 4.0).abs() < 1e-6
    assert dual_path_consistency(student, student.clone()).abs() < 1e-6
    assert dual_path_consistency(student, student.clone(), symmetric=True).abs() < 1e-6


def test_losses_are_positive_for_different_inputs(logits):
    student, teacher = logits
    assert channel_wise_divergence(student, teacher) > 0.01
    assert pixel_wise_divergence(student, teacher) > 0.01


def test_cwd_is_invariant_to_a_constant_added_to_one_channel(logits):
    student, teacher = logits
    shifted_student, shifted_teacher = student.clone(), teacher.clone()
    shifted_student[:, 1] += 7.0
    shifted_teacher[:, 2] -= 3.0
    assert torch.allclose(
        channel_wise_divergence(shifted_student, shifted_teacher, 2.0),
        channel_wise_divergence(student, teacher, 2.0),
        atol=1e-6,
    )


def test_pixel_kd_is_invariant_to_a_constant_added_at_one_pixel(logits):
    student, teacher = logits
    shifted = student.clone()
    shifted[:, :, 2, 3] += 5.0  # the same shift for every class of that pixel
    assert torch.allclose(pixel_wise_divergence(shifted, teacher), pixel_wise_divergence(student, teacher), atol=1e-6)


def test_temperature_scaling_identity(logits):
    student, teacher = logits
    tau = 3.0
    assert torch.allclose(
        channel_wise_divergence(student, teacher, tau),
        tau**2 * channel_wise_divergence(student / tau, teacher / tau, 1.0),
        rtol=1e-5,
    )
    assert torch.allclose(
        pixel_wise_divergence(student, teacher, tau),
        tau**2 * pixel_wise_divergence(student / tau, teacher / tau, 1.0),
        rtol=1e-5,
    )


def test_high_temperature_limit_is_half_the_variance_of_the_difference(logits):
    # tau^2 KL(softmax(t/tau) || softmax(s/tau)) -> Var_i(t_i - s_i) / 2 as tau grows.
    student, teacher = (x.double() for x in logits)
    difference = (teacher - student).flatten(2)
    expected = 0.5 * difference.var(dim=-1, unbiased=False).mean()
    assert channel_wise_divergence(student, teacher, 1000.0).item() == pytest.approx(expected.item(), rel=1e-3)
    assert channel_wise_divergence(student, teacher, 1.0).item() != pytest.approx(expected.item(), rel=1e-2)


def test_cwd_stays_finite_for_huge_logits():
    student, teacher = torch.randn(2, 3, 4, 4) * 1e4, torch.randn(2, 3, 4, 4) * 1e4
    value = channel_wise_divergence(student, teacher)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(cwd_float64(student, teacher, 1.0), rel=1e-4)
    assert torch.isfinite(pixel_wise_divergence(student, teacher))


def test_student_is_resized_to_the_teacher(logits):
    _, teacher = logits
    student = torch.randn(2, 3, 3, 3)
    resized = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(channel_wise_divergence(student, teacher), channel_wise_divergence(resized, teacher))
    assert torch.allclose(pixel_wise_divergence(student, teacher), pixel_wise_divergence(resized, teacher))


def test_pixel_kd_leaves_out_ignored_pixels(logits):
    student, teacher = logits
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[0, :2] = 255
    value = pixel_wise_divergence(student, teacher, 2.0, labels=labels)
    assert value.item() == pytest.approx(pkd_float64(student, teacher, 2.0, labels != 255), rel=1e-5)
    # Changing the teacher at ignored pixels changes nothing.
    changed = teacher.clone()
    changed[0, :, :2] = torch.randn_like(changed[0, :, :2]) * 10
    assert torch.allclose(pixel_wise_divergence(student, changed, 2.0, labels=labels), value)


def test_mismatched_label_sets_raise(logits):
    student, _ = logits
    with pytest.raises(ValueError, match="number of classes"):
        channel_wise_divergence(student, torch.randn(2, 4, 5, 6))
    with pytest.raises(ValueError, match="temperature"):
        channel_wise_divergence(student, student, temperature=0.0)


def test_symmetric_consistency_stops_the_gradient_of_each_target(logits):
    first, second = (x.clone().requires_grad_(True) for x in logits)
    dual_path_consistency(first, second, symmetric=True).backward()
    reference = logits[0].clone().requires_grad_(True)
    channel_wise_divergence(reference, logits[1]).backward()
    assert torch.allclose(first.grad, reference.grad, atol=1e-7)

    one_way_first, one_way_second = (x.clone().requires_grad_(True) for x in logits)
    dual_path_consistency(one_way_first, one_way_second).backward()
    assert one_way_second.grad.abs().sum() > 0  # the paper's form trains both paths through the target too
