import pytest
import torch

from lad_hf import LabelNoiser


def two_region_labels(batch_size: int, size: int = 16, ignore_index: int = 255) -> torch.Tensor:
    """Left half class 1, right half class 2, bottom rows ignore."""
    labels = torch.ones(batch_size, size, size, dtype=torch.long)
    labels[:, :, size // 2 :] = 2
    labels[:, -2:, :] = ignore_index
    return labels


def region_values(noised: torch.Tensor, labels: torch.Tensor, value: int) -> torch.Tensor:
    """Per image, the mean of the noised channel over the pixels labelled `value`: shape (B,)."""
    mask = (labels == value).float()
    return (noised[:, 0] * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


def test_output_shape_and_dtype():
    labels = two_region_labels(3)
    noised = LabelNoiser(num_labels=4)(labels)
    assert noised.shape == (3, 1, 16, 16)
    assert noised.dtype == torch.float32


def test_constant_inside_a_class_up_to_alpha():
    alpha = 0.01
    labels = two_region_labels(4)
    noised = LabelNoiser(num_labels=4, alpha=alpha)(labels)
    for value in (1, 2, 255):
        mask = labels == value
        for image in range(4):
            pixels = noised[image, 0][mask[image]]
            spread = pixels - pixels.mean()
            assert spread.abs().max() < 6 * alpha
            assert 0.5 * alpha < spread.std() < 1.5 * alpha


def test_without_pixel_noise_regions_are_exactly_constant():
    labels = two_region_labels(2)
    noised = LabelNoiser(num_labels=4, alpha=0.0)(labels)
    for value in (1, 2, 255):
        mask = labels[0] == value
        assert torch.unique(noised[0, 0][mask]).numel() == 1


def test_codes_differ_across_images_and_calls():
    noiser = LabelNoiser(num_labels=4)
    labels = two_region_labels(8)
    first, second = noiser(labels), noiser(labels)
    codes = region_values(first, labels, 1)
    assert torch.unique(codes.round(decimals=3)).numel() == 8  # every image its own draw
    assert not torch.allclose(codes, region_values(second, labels, 1), atol=0.1)


def test_class_codes_are_standard_normal_over_many_draws():
    num_images = 4000
    labels = two_region_labels(num_images, size=8)
    noised = LabelNoiser(num_labels=4)(labels, generator=torch.Generator().manual_seed(0))
    codes = torch.cat([region_values(noised, labels, value) for value in (1, 2, 255)])
    assert abs(codes.mean()) < 0.05
    assert abs(codes.std() - 1.0) < 0.05
    # Classes are drawn independently of each other.
    correlation = torch.corrcoef(torch.stack([region_values(noised, labels, 1), region_values(noised, labels, 2)]))
    assert abs(correlation[0, 1]) < 0.06


def test_ignore_pixels_get_their_own_random_code():
    labels = two_region_labels(500, size=8)
    noised = LabelNoiser(num_labels=4, alpha=0.0)(labels)
    ignore_codes = region_values(noised, labels, 255)
    assert not torch.allclose(ignore_codes, region_values(noised, labels, 1))
    assert 0.85 < ignore_codes.std() < 1.15


def test_ignore_encoding_zero():
    labels = two_region_labels(3)
    noised = LabelNoiser(num_labels=4, alpha=0.0, ignore_encoding="zero")(labels)
    assert torch.equal(noised[:, 0][labels == 255], torch.zeros(int((labels == 255).sum())))


def test_generator_makes_draws_reproducible():
    noiser = LabelNoiser(num_labels=4)
    labels = two_region_labels(2)
    a = noiser(labels, generator=torch.Generator().manual_seed(7))
    b = noiser(labels, generator=torch.Generator().manual_seed(7))
    c = noiser(labels, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_without_class_noise_labels_are_standardized():
    num_labels = 5
    noiser = LabelNoiser(num_labels=num_labels, alpha=0.0, class_noise=False)
    labels = torch.arange(num_labels).view(1, 1, num_labels).expand(2, 3, num_labels)
    noised = noiser(labels)
    codes = noised[0, 0, 0]
    assert torch.allclose(codes.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(codes.std(unbiased=False), torch.tensor(1.0), atol=1e-6)
    assert torch.all(codes[1:] > codes[:-1])  # order preserved: the class identity leaks, as in paper Table 9
    assert torch.equal(noised[0], noised[1])  # the same for every image


def test_official_variants():
    labels = torch.tensor([[[0, 11, 12, 255]]])
    distill = LabelNoiser.official(num_labels=19, stage="distill")
    values = distill(labels, generator=torch.Generator().manual_seed(0))[0, 0, 0]
    expected = torch.tensor([-1.1, 0.0, 0.1, (19 - 11) / 10]) * 100
    assert torch.allclose(values, expected, atol=100 * 0.02 * 5)
    teacher = LabelNoiser.official(num_labels=19, stage="teacher")
    assert (teacher.alpha, teacher.scale, teacher.class_noise) == (0.03, 100.0, True)
    with pytest.raises(ValueError, match="stage"):
        LabelNoiser.official(num_labels=19, stage="student")


def test_scale_multiplies_the_output():
    labels = two_region_labels(2)
    base = LabelNoiser(num_labels=4)(labels, generator=torch.Generator().manual_seed(1))
    scaled = LabelNoiser(num_labels=4, scale=100.0)(labels, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(scaled, 100 * base)


def test_settings_round_trip_through_a_dict():
    noiser = LabelNoiser(num_labels=7, alpha=0.05, ignore_index=0, class_noise=False, fixed_codes="official")
    assert LabelNoiser(**noiser.to_dict()).to_dict() == noiser.to_dict()
    assert list(noiser.parameters()) == []


def test_bad_labels_raise_clear_errors():
    noiser = LabelNoiser(num_labels=4)
    with pytest.raises(ValueError, match=r"\[4, 7\].*\[0, 4\)"):
        noiser(torch.tensor([[[0, 4, 7, 255]]]))
    with pytest.raises(TypeError, match="integer class ids"):
        noiser(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(batch_size, height, width\)"):
        noiser(torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_impossible_options_raise():
    with pytest.raises(ValueError, match="alpha"):
        LabelNoiser(num_labels=4, alpha=-1)
    with pytest.raises(ValueError, match="class_noise=False"):
        LabelNoiser(num_labels=4, fixed_codes="official")
    with pytest.raises(ValueError, match="ignore_encoding"):
        LabelNoiser(num_labels=4, ignore_encoding="mean")
