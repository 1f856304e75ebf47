import pytest
import torch
from conftest import TinySegConfig, TinySegModel
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput

from lad_hf.inference import TTASegmenter, segment, sliding_window_logits


class PixelwiseModel(nn.Module):
    """A 1x1 convolution: every pixel's logits depend on that pixel only, so any tiling gives the same logits."""

    def __init__(self, num_labels: int = 4):
        super().__init__()
        self.classifier = nn.Conv2d(3, num_labels, 1)

    def forward(self, pixel_values):
        return SemanticSegmenterOutput(logits=self.classifier(pixel_values))


def test_sliding_windows_of_a_pixelwise_model_equal_the_whole_image():
    model, images = PixelwiseModel(), torch.randn(2, 3, 37, 53)
    whole = model(images).logits
    for window, stride in [((16, 16), (10, 12)), ((37, 53), (37, 53)), ((64, 64), (32, 32))]:  # overlap, one, padded
        tiled = sliding_window_logits(model, images, window, stride)
        assert tiled.shape == whole.shape
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_windows_cover_every_pixel_once_or_more():
    calls = []

    class Recorder(PixelwiseModel):
        def forward(self, pixel_values):
            calls.append(tuple(pixel_values.shape[-2:]))
            return super().forward(pixel_values)

    sliding_window_logits(Recorder(), torch.randn(1, 3, 50, 70), (32, 32), (21, 21))
    assert calls == [(32, 32)] * 6  # rows at 0, 18 (flush with the end); columns at 0, 21, 38


def test_flip_and_scales_average_probabilities():
    model, images = PixelwiseModel(), torch.randn(2, 3, 24, 24)
    probabilities = segment(model, images)
    torch.testing.assert_close(probabilities, model(images).logits.softmax(1))
    # A pixel-wise model is flip-equivariant: flip testing changes nothing.
    torch.testing.assert_close(segment(model, images, flip=True), probabilities, atol=1e-6, rtol=1e-5)
    averaged = segment(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    assert averaged.shape == (2, 4, 24, 24)
    torch.testing.assert_close(averaged.sum(1), torch.ones(2, 24, 24))


def test_test_time_segmenter_scores_like_the_model_at_scale_one():
    tiny = TinySegModel(TinySegConfig(num_labels=3))
    images, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    wrapped = TTASegmenter(tiny)
    outputs = wrapped(images, labels=labels)
    reference = torch.nn.functional.interpolate(tiny(pixel_values=images).logits, size=(16, 16), mode="bilinear")
    assert torch.equal(outputs.logits.argmax(1), reference.argmax(1))
    assert outputs.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(reference, labels).item(), rel=1e-4)
    assert wrapped.config is tiny.config
