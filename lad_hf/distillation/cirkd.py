"""CIRKD (Yang et al., CVPR 2022), `kd_loss="cirkd"`, as its code runs it: pixel-wise KD (weight 1) + cross-image
pixel-to-pixel similarity distillation within the mini-batch (weight 1, temperature 0.1) + pixel-to-pixel and
pixel-to-region contrastive distillation against a memory of teacher embeddings (weight 0.1 each, temperatures 0.1
and 1): per class a queue of pixel embeddings (16 per class and image enqueued) and of region (class-mean)
embeddings, filled from every process. The student's features reach the teacher's width through a projection head
trained with the student (by its optimizer) and dropped when the student is saved.

Memory: `K x P x D` pixel and `K x R x D` region queues (P = 20000, R = 2000 by default, capped so that the pixel
queue takes at most 512 MB); at most `cirkd_max_anchors` (1024) sampled labelled pixels are contrasted against
`K x 4096` pixel and `K x 1024` region entries; the cross-image maps are pooled to at most 1024 positions (`B^2` maps
of at most 1M entries).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.labels import resize_labels
from .features import pool_to, to_size
from .losses import pixel_wise_divergence
from .objective import DistillationObjective, KDInputs


__all__ = ["CIRKDObjective", "ContrastMemory", "cross_image_similarity_loss"]


def cross_image_similarity_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, temperature: float = 0.1, max_positions: int = 1024
) -> torch.Tensor:
    """CIRKD's mini-batch pixel-to-pixel distillation: for every ordered pair of images `(i, j)` of the batch, the
    similarities of each pixel of `i` to all pixels of `j` (L2-normalised features, average-pooled to at most
    `max_positions` positions) as a distribution at `temperature`; the KL divergence from the teacher's, averaged over
    pixels and pairs.
    """
    student_features = to_size(student_features, teacher_features.shape[-2:])
    student = F.normalize(pool_to(student_features.float(), max_positions, "avg"), dim=1).flatten(2)
    teacher = F.normalize(pool_to(teacher_features.float(), max_positions, "avg"), dim=1).flatten(2)
    batch_size = student.shape[0]
    total = student.new_zeros(())
    for i in range(batch_size):
        # Pixels of image i against the pixels of every image j: (B, N, N), one image's rows at a time.
        log_p_s = F.log_softmax(student[i].T @ student / temperature, dim=-1)
        log_p_t = F.log_softmax(teacher[i].T @ teacher / temperature, dim=-1)
        total = total + (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean(-1).sum()
    return total / batch_size**2


class ContrastMemory(nn.Module):
    """CIRKD's memory of teacher embeddings: per class a queue of `pixel_size` pixel embeddings and of `region_size`
    region (class-mean) embeddings, L2-normalised, started at random as in CIRKD's code. `enqueue` adds, for every
    image and class present (gathered from all processes), the region's mean and up to 16 random pixels, drawn with
    the memory's own generator (`seed`; its state is a buffer: every process fills the same memory, and a resumed run
    continues the draws)."""

    pixels_per_update = 16

    def __init__(
        self, num_labels: int, dim: int, pixel_size: int, region_size: int, ignore_index: int = 255, seed: int = 0
    ):
        super().__init__()
        self.ignore_index = ignore_index
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer(
            "pixel_queue", F.normalize(torch.randn(num_labels, pixel_size, dim, generator=generator), dim=2)
        )
        self.register_buffer(
            "region_queue", F.normalize(torch.randn(num_labels, region_size, dim, generator=generator), dim=2)
        )
        self.register_buffer("pixel_pointer", torch.zeros(num_labels, dtype=torch.long))
        self.register_buffer("region_pointer", torch.zeros(num_labels, dtype=torch.long))
        self.register_buffer("generator_state", generator.get_state())

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor, gather=None) -> None:
        """`features (B, D, h, w)` (normalised teacher embeddings) and `labels (B, h, w)`; `gather` concatenates a
        tensor from all processes (CIRKD fills the queues from every rank)."""
        if gather is not None:
            features, labels = gather(features), gather(labels)
        pixel_size, region_size = self.pixel_queue.shape[1], self.region_queue.shape[1]
        generator = torch.Generator()
        generator.set_state(self.generator_state.cpu())
        for image, image_labels in zip(features.flatten(2), labels.flatten(1), strict=True):
            for label in image_labels.unique().tolist():
                if label == self.ignore_index:
                    continue
                members = (image_labels == label).nonzero().flatten()
                pointer = int(self.region_pointer[label])
                self.region_queue[label, pointer] = F.normalize(image[:, members].mean(1), dim=0)
                self.region_pointer[label] = (pointer + 1) % region_size
                order = torch.randperm(len(members), generator=generator)[: self.pixels_per_update]
                chosen = members[order.to(members.device)]
                count, pointer = len(chosen), int(self.pixel_pointer[label])
                if pointer + count >= pixel_size:  # as CIRKD: the last slots, then back to the start
                    self.pixel_queue[label, -count:] = F.normalize(image[:, chosen].T, dim=1)
                    self.pixel_pointer[label] = 0
                else:
                    self.pixel_queue[label, pointer : pointer + count] = F.normalize(image[:, chosen].T, dim=1)
                    self.pixel_pointer[label] = (pointer + count) % pixel_size
        self.generator_state.copy_(generator.get_state())

    @staticmethod
    def sample(queue: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` entries of every class (the same random slots for all classes), `(K * count, D)`."""
        device = generator.device if generator is not None else queue.device
        index = torch.randperm(queue.shape[1], device=device, generator=generator)[:count]
        return queue[:, index.to(queue.device)].flatten(0, 1)


class CIRKDObjective(DistillationObjective):
    """CIRKD: pixel-wise KD, cross-image similarity distillation in the mini-batch, and pixel-to-pixel and
    pixel-to-region contrastive distillation against the memory. See the module's docstring for weights and memory."""

    description = (
        "CIRKD: pixel KD + cross-image pixel-to-pixel and memory-based pixel and region contrastive distillation"
    )
    reads_student_features = True
    reads_teacher_features = True
    draws_random = True  # the anchors and the memory entries each step contrasts
    default_weight = 1.0
    default_temperature = 1.0
    kd_weight, minibatch_weight, pixel_memory_weight, region_memory_weight = 1.0, 1.0, 0.1, 0.1
    contrast_temperature, contrast_kd_temperature = 0.1, 1.0
    max_queue_bytes = 512 * 2**20

    def __init__(
        self,
        num_labels: int,
        student_channels: int,
        teacher_channels: int,
        ignore_index: int = 255,
        pixel_memory_size: int = 20000,
        region_memory_size: int = 2000,
        pixel_contrast_size: int = 4096,
        region_contrast_size: int = 1024,
        max_anchors: int = 1024,
        seed: int = 0,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.ignore_index, self.max_anchors, self.temperature = ignore_index, max_anchors, temperature
        self.pixel_contrast_size, self.region_contrast_size = pixel_contrast_size, region_contrast_size
        # The student-to-teacher projection of CIRKD's code, trained with the student.
        self.project = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
        )
        pixel_memory_size = min(pixel_memory_size, self.max_queue_bytes // (4 * num_labels * teacher_channels))
        self.memory = ContrastMemory(
            num_labels, teacher_channels, pixel_memory_size, region_memory_size, ignore_index, seed
        )

    def student_parameters(self) -> list[nn.Parameter]:
        return list(self.project.parameters())

    @classmethod
    def from_args(cls, args, num_labels: int, student_channels: int, teacher_channels: int) -> "CIRKDObjective":
        return cls(
            num_labels,
            student_channels,
            teacher_channels,
            args.ignore_index,
            args.cirkd_pixel_memory_size,
            args.cirkd_region_memory_size,
            args.cirkd_pixel_contrast_size,
            args.cirkd_region_contrast_size,
            args.cirkd_max_anchors,
            args.seed,
            args.kd_temperature,
        )

    def card_settings(self) -> dict:
        return {
            "CIRKD memory per class (pixels, regions)": f"{self.memory.pixel_queue.shape[1]}, "
            f"{self.memory.region_queue.shape[1]}",
            "CIRKD contrast per class (pixels, regions)": f"{self.pixel_contrast_size}, {self.region_contrast_size}",
            "CIRKD anchors per step": self.max_anchors,
        }

    def _contrast(self, student, teacher, negatives) -> torch.Tensor:
        tau = self.contrast_kd_temperature
        # The temperatures scale the (anchors, D) embeddings, not the (anchors, memory) similarities: the same
        # logits without two divisions of the largest tensor of the step (and their backward).
        scale = 1.0 / (self.contrast_temperature * tau)
        log_p_s = F.log_softmax((student * scale) @ negatives.T, dim=1)
        log_p_t = F.log_softmax((teacher * scale) @ negatives.T, dim=1)
        return F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) / len(student) * tau**2

    def forward(self, inputs: KDInputs):
        student_logits, teacher_logits, labels = inputs.student_logits, inputs.teacher_logits, inputs.labels
        teacher_features, generator = inputs.teacher_features, inputs.generator
        student_features = to_size(inputs.student_features, teacher_features.shape[-2:])
        terms = {
            "loss_pixel_kd": self.kd_weight * pixel_wise_divergence(student_logits, teacher_logits, self.temperature),
            "loss_cross_image": self.minibatch_weight
            * cross_image_similarity_loss(student_features, teacher_features, self.contrast_temperature),
        }
        teacher = F.normalize(teacher_features.float(), dim=1)
        projected = F.normalize(self.project(student_features).float(), dim=1)
        labels = resize_labels(labels, teacher.shape[-2:])
        self.memory.enqueue(teacher, labels, inputs.gather)
        valid = (labels != self.ignore_index).flatten()
        anchors = valid.nonzero().flatten()
        if len(anchors) > self.max_anchors:
            device = generator.device if generator is not None else anchors.device
            chosen = torch.randperm(len(anchors), device=device, generator=generator)[: self.max_anchors]
            anchors = anchors[chosen.to(anchors.device)]
        student = projected.permute(0, 2, 3, 1).flatten(0, 2)[anchors]
        teacher = teacher.permute(0, 2, 3, 1).flatten(0, 2)[anchors]
        pixels = self.memory.sample(self.memory.pixel_queue, self.pixel_contrast_size, generator)
        regions = self.memory.sample(self.memory.region_queue, self.region_contrast_size, generator)
        if len(anchors) == 0:  # no labelled pixel: no contrast, but the projection stays in the graph
            zero = 0.0 * projected.sum()
            return {**terms, "loss_pixel_memory": zero, "loss_region_memory": zero}
        terms["loss_pixel_memory"] = self.pixel_memory_weight * self._contrast(student, teacher, pixels)
        terms["loss_region_memory"] = self.region_memory_weight * self._contrast(student, teacher, regions)
        return terms
