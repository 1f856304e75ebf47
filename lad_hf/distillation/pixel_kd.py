"""Pixel-wise knowledge distillation (Hinton KD at every pixel), `kd_loss="pixel_kd"`."""

from .losses import pixel_wise_divergence
from .objective import DistillationObjective, KDInputs


__all__ = ["PixelKDObjective"]


class PixelKDObjective(DistillationObjective):
    """`pixel_wise_divergence(student, teacher, tau)` over the labelled pixels of the teacher's grid."""

    description = "pixel-wise KL divergence"
    mean_over_labelled_pixels = True

    def __init__(self, temperature: float = 4.0, ignore_index: int = 255):
        super().__init__()
        self.temperature, self.ignore_index = temperature, ignore_index

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels) -> "PixelKDObjective":
        return cls(args.kd_temperature, args.ignore_index)

    def forward(self, inputs: KDInputs):
        loss = pixel_wise_divergence(
            inputs.student_logits, inputs.teacher_logits, self.temperature, inputs.labels, self.ignore_index
        )
        return {"loss_kd": loss}

    def check(self, inputs: KDInputs) -> None:
        self(inputs)
