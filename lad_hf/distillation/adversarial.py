"""The holistic adversarial term of SKD and IFVD (CIRKD's code): a discriminator on the logits, trained by its own
optimizer step after each student step; and the objective shape the two methods share."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .losses import pixel_wise_divergence
from .objective import DistillationObjective, KDInputs


__all__ = ["AdversarialTerm", "Discriminator", "PixelKDAdversarialObjective", "SelfAttention"]


class Discriminator(nn.Module):
    """The SAGAN-style discriminator of SKD, on logits (CIRKD's code): a batch norm, four spectrally normalised 4x4
    stride-2 convolutions (64, 128, 256, 512, leaky ReLU 0.1) with self-attention after the last two, and a 4x4
    convolution to one score per window. Logits smaller than 64 on a side are upsampled to 64 first (lad_hf's
    choice, so that small images still leave a map for the last convolution)."""

    def __init__(self, num_labels: int, width: int = 64):
        super().__init__()
        self.preprocess = nn.BatchNorm2d(num_labels)
        channels = [num_labels, width, 2 * width, 4 * width, 8 * width]
        self.layers = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(channels[i], channels[i + 1], 4, 2, 1)), nn.LeakyReLU(0.1))
            for i in range(4)
        )
        self.attention = nn.ModuleList([SelfAttention(channels[3]), SelfAttention(channels[4])])
        self.last = nn.Conv2d(channels[4], 1, 4)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if min(logits.shape[-2:]) < 64:
            logits = F.interpolate(logits, size=[max(64, s) for s in logits.shape[-2:]], mode="bilinear")
        x = self.preprocess(logits.float())
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index >= 2:
                x = self.attention[index - 2](x)
        return self.last(x)


class SelfAttention(nn.Module):
    """SAGAN's self-attention: `x + gamma * attention(x)`, gamma starting at 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        attention = (query @ self.key(x).flatten(2)).softmax(dim=-1)  # (B, N, N)
        out = (self.value(x).flatten(2) @ attention.transpose(1, 2)).view(batch_size, channels, height, width)
        return self.gamma * out + x


class AdversarialTerm(nn.Module):
    """The holistic adversarial term of SKD (and IFVD, in CIRKD's code): the discriminator, its own optimizer and the
    hinge losses."""

    generator_weight = 0.001
    discriminator_weight = 0.1

    def __init__(self, num_labels: int):
        super().__init__()
        self.discriminator = Discriminator(num_labels)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=4e-4, betas=(0.9, 0.99))

    def get_extra_state(self) -> dict:
        return self.optimizer.state_dict()  # in the objective's state_dict, so in every checkpoint

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def generator_loss(self, student_logits: torch.Tensor) -> torch.Tensor:
        return -self.discriminator(student_logits).mean() * self.generator_weight

    def discriminator_step(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduce=None) -> float:
        """One optimizer step of the discriminator on detached logits: the teacher's are real, the student's fake
        (hinge loss). `reduce` averages its gradients over processes."""
        self.optimizer.zero_grad(set_to_none=True)
        real = self.discriminator(teacher_logits.detach())
        fake = self.discriminator(student_logits.detach())
        loss = self.discriminator_weight * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        loss.backward()
        if reduce is not None:
            for parameter in self.discriminator.parameters():
                if parameter.grad is not None:
                    parameter.grad = reduce(parameter.grad)
        self.optimizer.step()
        return loss.detach()


class PixelKDAdversarialObjective(DistillationObjective):
    """Pixel-wise KD (weight 1, tau 1) + the method's feature terms (`feature_terms`) + (optionally) the adversarial
    term, whose discriminator takes its own step after each training step: SKD's and IFVD's shape in CIRKD's code."""

    reads_student_features = True
    reads_teacher_features = True
    default_weight = 1.0
    default_temperature = 1.0
    pixel_kd_weight = 1.0

    def __init__(self, num_labels: int, adversarial: bool = True, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.adversarial = AdversarialTerm(num_labels) if adversarial else None
        self._last_logits = None  # the step's (student, teacher) logits, for the discriminator's step

    def feature_terms(self, inputs: KDInputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, inputs: KDInputs):
        student_logits, teacher_logits = inputs.student_logits, inputs.teacher_logits
        terms = {
            "loss_pixel_kd": self.pixel_kd_weight
            * pixel_wise_divergence(student_logits, teacher_logits, self.temperature),
            **self.feature_terms(inputs),
        }
        if self.adversarial is not None:
            terms["loss_adversarial"] = self.adversarial.generator_loss(student_logits)
            self._last_logits = (student_logits.detach(), teacher_logits)
        return terms

    def after_backward(self, reduce):
        if self._last_logits is None:
            return {}
        student_logits, teacher_logits = self._last_logits
        self._last_logits = None
        return {"loss_discriminator": self.adversarial.discriminator_step(student_logits, teacher_logits, reduce)}

    def card_settings(self) -> dict:
        return {"adversarial term": self.adversarial is not None}
