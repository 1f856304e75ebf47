r"""The LAD paper's comparison methods (its Table 1) as distillation objectives of `DistillationTrainer`:
`kd_loss="skd"`, `"ifvd"`, `"cirkd"` or `"maskd"`. The terms and their weights follow CIRKD's code (which
reimplements SKD and IFVD, and on which the LAD code builds) and MasKD's segmentation code.

Every objective reads the student's and the teacher's logits, their decoder features (the input of their 1x1
classifiers, `decoder_features`: after the ASPP / PSP block, where CIRKD's code reads `x_feat_after_aspp`) and the
labels, and returns its weighted terms by name. Features of another size than the teacher's are resized to it;
channels may differ (the losses compare similarities, except CIRKD's memory contrast, which projects the student's
features to the teacher's width with a head trained with the student and dropped when it is saved).

- **SKD** (Liu et al., TPAMI 2020): pixel-wise KD (weight 1, temperature 1) + pair-wise similarity distillation
  (weight 10): features max-pooled 2x2, L2-normalised, the `N x N` cosine-similarity maps of each image matched by
  MSE; + the holistic adversarial term (`skd_adversarial`): a discriminator on the logits (spectrally normalised
  convolutions and self-attention, as CIRKD's SAGAN one) trained with a hinge loss (weight 0.1, Adam 4e-4) by its own
  optimizer step after each student step, and the student pushed by `-D(student)` (weight 0.001).
- **IFVD** (Wang et al., ECCV 2020): pixel-wise KD (weight 1) + intra-class feature variation (weight 20): each
  pixel's cosine similarity to its class's mean feature in its image, matched by MSE (pixels without a label count as
  similarity 1 on both sides, as in CIRKD's code); + the same adversarial term.
- **CIRKD** (Yang et al., CVPR 2022): pixel-wise KD (weight 1) + cross-image pixel-to-pixel similarity distillation
  within the mini-batch (weight 1, temperature 0.1) + pixel-to-pixel and pixel-to-region contrastive distillation
  against a memory of teacher embeddings (weight 0.1 each, temperatures 0.1 and 1): per class a queue of pixel
  embeddings (16 per class and image enqueued) and of region (class-mean) embeddings, filled from every process.
- **MasKD** (Huang et al., ICLR 2023), as its segmentation code runs it on the logits: learnable receptive tokens
  (8) give soft masks from the teacher's logits; a first stage trains them on the frozen teacher (`maskd_mask_steps`
  steps, SGD at 0.1 with polynomial decay: the teacher's cross-entropy through the masks plus a Dice diversity loss);
  the student is then trained on the mask-weighted MSE between its logits and the teacher's (weight 1, times 0.5).

Memory (what each stores and the caps): SKD builds `B` maps of `N x N` similarities with `N` at most
`max_positions` (4096: pooled further when needed, never all pixels of a 512x1024 batch; 64 MB per map in float32);
IFVD builds `B x K x C` class means; CIRKD keeps `K x P x D` pixel and `K x R x D` region queues (P = 20000, R =
2000 by default, capped so that the pixel queue takes at most 512 MB), contrasts at most `cirkd_max_anchors` (1024)
sampled labelled pixels against `K x 4096` pixel and `K x 1024` region entries, and pools the cross-image maps to at
most 1024 positions (`B^2` maps of at most 1M entries); MasKD holds `T x K` tokens.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .labels import resize_labels
from .losses import pixel_wise_divergence


__all__ = [
    "CIRKDObjective",
    "ContrastMemory",
    "Discriminator",
    "DistillationObjective",
    "IFVDObjective",
    "MasKDObjective",
    "MaskTokens",
    "SKDObjective",
    "class_variation_loss",
    "cross_image_similarity_loss",
    "masked_distillation_loss",
    "pairwise_similarity_loss",
    "pool_to",
]


def pool_to(features: torch.Tensor, max_positions: int, mode: str = "max", factor: int = 1) -> torch.Tensor:
    """Pool `(B, C, h, w)` features by `factor`, then by the smallest larger factor that leaves at most
    `max_positions` positions (ceil mode: no pixel is dropped)."""
    height, width = features.shape[-2:]
    while math.ceil(height / factor) * math.ceil(width / factor) > max_positions:
        factor += 1
    if factor == 1:
        return features
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    return pool(features, kernel_size=factor, stride=factor, ceil_mode=True)


def _to_size(features: torch.Tensor, size) -> torch.Tensor:
    if features.shape[-2:] == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def pairwise_similarity_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, max_positions: int = 4096
) -> torch.Tensor:
    """SKD's pair-wise distillation (CIRKD's form): both feature maps max-pooled 2x2 (and further, to at most
    `max_positions` positions), L2-normalised over channels; the MSE between the students' and the teachers' `N x N`
    cosine-similarity maps of each image.

    Args:
        student_features (`torch.Tensor` of shape `(B, C_s, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_features (`torch.Tensor` of shape `(B, C_t, H, W)`).
        max_positions (`int`, *optional*, defaults to 4096): Cap of `N`.
    """
    student_features = _to_size(student_features, teacher_features.shape[-2:])
    maps = []
    for features in (student_features, teacher_features):
        pooled = F.normalize(pool_to(features.float(), max_positions, factor=2), dim=1).flatten(2)  # (B, C, N)
        maps.append(pooled.transpose(1, 2) @ pooled)  # (B, N, N)
    return F.mse_loss(maps[0], maps[1])


def class_variation_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    ignore_index: int = 255,
) -> torch.Tensor:
    """IFVD's intra-class feature variation distillation: each pixel's cosine similarity to the mean feature of its
    class in its image, for the student and the teacher, matched by MSE over all pixels (a pixel without a label is
    its own centre on both sides: similarity 1, no error, as in CIRKD's code).

    Args:
        student_features (`torch.Tensor` of shape `(B, C_s, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_features (`torch.Tensor` of shape `(B, C_t, H, W)`).
        labels (`torch.LongTensor` of shape `(B, H', W')`): Resized to `(H, W)` by nearest neighbour.
    """
    student_features = _to_size(student_features, teacher_features.shape[-2:])
    labels = resize_labels(labels, teacher_features.shape[-2:]).flatten(1)  # (B, N)
    valid = labels != ignore_index
    one_hot = F.one_hot(labels.where(valid, 0), num_labels).float() * valid[..., None]  # (B, N, K)
    similarities = []
    for features in (student_features, teacher_features):
        flat = features.float().flatten(2)  # (B, C, N)
        centres = (flat @ one_hot) / (one_hot.sum(1, keepdim=True) + 1e-6)  # (B, C, K)
        own = torch.gather(centres, 2, labels.where(valid, 0)[:, None].expand(-1, flat.shape[1], -1))
        own = torch.where(valid[:, None], own, flat)  # an unlabelled pixel is its own centre
        similarities.append(F.cosine_similarity(flat, own, dim=1))  # (B, N)
    return F.mse_loss(similarities[0], similarities[1])


def cross_image_similarity_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, temperature: float = 0.1, max_positions: int = 1024
) -> torch.Tensor:
    """CIRKD's mini-batch pixel-to-pixel distillation: for every ordered pair of images `(i, j)` of the batch, the
    similarities of each pixel of `i` to all pixels of `j` (L2-normalised features, average-pooled to at most
    `max_positions` positions) as a distribution at `temperature`; the KL divergence from the teacher's, averaged over
    pixels and pairs.
    """
    student_features = _to_size(student_features, teacher_features.shape[-2:])
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


def masked_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """MasKD's masked distillation: `0.5 * mean over images, masks and channels of sum_hw (m * (s - t))^2 / sum_hw m`.

    Args:
        student_logits (`(B, C, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_logits (`(B, C, H, W)`).
        masks (`(B, T, H, W)`): The receptive tokens' soft masks.
    """
    student_logits = _to_size(student_logits, teacher_logits.shape[-2:])
    difference = (student_logits.float() - teacher_logits.float())[:, None] * masks[:, :, None]  # (B, T, C, H, W)
    loss = difference.pow(2).sum((3, 4)) / (masks.sum((2, 3))[..., None] + 1e-5)
    return 0.5 * loss.mean()


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


class DistillationObjective(nn.Module):
    """A distillation method of several terms: `forward(student_logits, teacher_logits, student_features,
    teacher_features, labels, temperature)` returns its weighted terms by name; `student_parameters()` are trained
    with the student (by its optimizer) and are not part of it; `adversarial`, where set, is a discriminator trained
    by its own step after each student step."""

    def __init__(self):
        super().__init__()
        self.adversarial = None

    def student_parameters(self) -> list[nn.Parameter]:
        return []


class _AdversarialTerm(nn.Module):
    """The holistic adversarial term of SKD (and IFVD, in CIRKD's code): the discriminator, its own optimizer and the
    hinge losses."""

    generator_weight = 0.001
    discriminator_weight = 0.1

    def __init__(self, num_labels: int):
        super().__init__()
        self.discriminator = Discriminator(num_labels)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=4e-4, betas=(0.9, 0.99))

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


class SKDObjective(DistillationObjective):
    """SKD: pixel-wise KD + pair-wise similarity distillation + (optionally) the adversarial term. See the module's
    docstring for the weights."""

    kd_weight, pairwise_weight = 1.0, 10.0

    def __init__(self, num_labels: int, adversarial: bool = True, max_positions: int = 4096):
        super().__init__()
        self.max_positions = max_positions
        self.adversarial = _AdversarialTerm(num_labels) if adversarial else None

    @classmethod
    def from_args(cls, args, num_labels: int, student_channels: int, teacher_channels: int) -> "SKDObjective":
        return cls(num_labels, adversarial=args.skd_adversarial)

    def forward(
        self,
        student_logits,
        teacher_logits,
        student_features,
        teacher_features,
        labels,
        temperature=1.0,
        generator=None,
    ):
        terms = {
            "loss_pixel_kd": self.kd_weight * pixel_wise_divergence(student_logits, teacher_logits, temperature),
            "loss_pairwise": self.pairwise_weight
            * pairwise_similarity_loss(student_features, teacher_features, self.max_positions),
        }
        if self.adversarial is not None:
            terms["loss_adversarial"] = self.adversarial.generator_loss(student_logits)
        return terms


class IFVDObjective(DistillationObjective):
    """IFVD: pixel-wise KD + intra-class feature variation distillation + (optionally) the adversarial term."""

    kd_weight, variation_weight = 1.0, 20.0

    def __init__(self, num_labels: int, ignore_index: int = 255, adversarial: bool = True):
        super().__init__()
        self.num_labels, self.ignore_index = num_labels, ignore_index
        self.adversarial = _AdversarialTerm(num_labels) if adversarial else None

    @classmethod
    def from_args(cls, args, num_labels: int, student_channels: int, teacher_channels: int) -> "IFVDObjective":
        return cls(num_labels, args.ignore_index, adversarial=args.skd_adversarial)

    def forward(
        self,
        student_logits,
        teacher_logits,
        student_features,
        teacher_features,
        labels,
        temperature=1.0,
        generator=None,
    ):
        terms = {
            "loss_pixel_kd": self.kd_weight * pixel_wise_divergence(student_logits, teacher_logits, temperature),
            "loss_variation": self.variation_weight
            * class_variation_loss(student_features, teacher_features, labels, self.num_labels, self.ignore_index),
        }
        if self.adversarial is not None:
            terms["loss_adversarial"] = self.adversarial.generator_loss(student_logits)
        return terms


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
    ):
        super().__init__()
        self.ignore_index, self.max_anchors = ignore_index, max_anchors
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
        self.gather = None  # set by the trainer under several processes

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
        )

    def _contrast(self, student, teacher, negatives) -> torch.Tensor:
        tau = self.contrast_kd_temperature
        # The temperatures scale the (anchors, D) embeddings, not the (anchors, memory) similarities: the same
        # logits without two divisions of the largest tensor of the step (and their backward).
        scale = 1.0 / (self.contrast_temperature * tau)
        log_p_s = F.log_softmax((student * scale) @ negatives.T, dim=1)
        log_p_t = F.log_softmax((teacher * scale) @ negatives.T, dim=1)
        return F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) / len(student) * tau**2

    def forward(
        self,
        student_logits,
        teacher_logits,
        student_features,
        teacher_features,
        labels,
        temperature=1.0,
        generator=None,
    ):
        student_features = _to_size(student_features, teacher_features.shape[-2:])
        terms = {
            "loss_pixel_kd": self.kd_weight * pixel_wise_divergence(student_logits, teacher_logits, temperature),
            "loss_cross_image": self.minibatch_weight
            * cross_image_similarity_loss(student_features, teacher_features, self.contrast_temperature),
        }
        teacher = F.normalize(teacher_features.float(), dim=1)
        projected = F.normalize(self.project(student_features).float(), dim=1)
        labels = resize_labels(labels, teacher.shape[-2:])
        self.memory.enqueue(teacher, labels, self.gather)
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


class MaskTokens(nn.Module):
    """MasKD's receptive tokens: `T` learnable vectors over the logits' `C` channels; each gives a soft mask
    `sigmoid(token . logits)` over the positions."""

    def __init__(self, channels: int, num_tokens: int = 8):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_tokens, channels) * 0.01)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> masks `(B, T, H, W)`."""
        return torch.einsum("tc,bchw->bthw", self.tokens, logits.float()).sigmoid()

    @staticmethod
    def diversity_loss(masks: torch.Tensor) -> torch.Tensor:
        """MasKD's Dice coefficient between every two different masks of an image, averaged: low when the tokens look
        at different regions."""
        flat = masks.flatten(2)  # (B, T, N)
        products = flat @ flat.transpose(1, 2)  # (B, T, T)
        squares = flat.pow(2).sum(-1) + 1e-12
        dice = 2 * products / (squares[:, :, None] + squares[:, None, :])
        off_diagonal = ~torch.eye(masks.shape[1], dtype=torch.bool, device=masks.device)
        return dice[:, off_diagonal].mean()


class MasKDObjective(DistillationObjective):
    """MasKD on the logits: the mask-weighted MSE between the student's and the teacher's logits, the masks from the
    teacher's logits by tokens trained in a first stage (`train_tokens_step`)."""

    kd_weight = 1.0

    def __init__(self, num_labels: int, num_tokens: int = 8):
        super().__init__()
        self.tokens = MaskTokens(num_labels, num_tokens)
        self.register_buffer("tokens_trained", torch.tensor(False))  # the first stage is done (kept in checkpoints)

    @classmethod
    def from_args(cls, args, num_labels: int, student_channels: int, teacher_channels: int) -> "MasKDObjective":
        return cls(num_labels, args.maskd_tokens)

    def forward(
        self,
        student_logits,
        teacher_logits,
        student_features,
        teacher_features,
        labels,
        temperature=1.0,
        generator=None,
    ):
        with torch.no_grad():
            masks = self.tokens(teacher_logits)
        return {"loss_masked": self.kd_weight * masked_distillation_loss(student_logits, teacher_logits, masks)}

    def stage_one_loss(self, teacher_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """The first stage's loss: the teacher's cross-entropy through its masked logits, `sum_t m_t * logits`, plus
        the tokens' Dice diversity."""
        masks = self.tokens(teacher_logits)
        masked = (teacher_logits.float()[:, None] * masks[:, :, None]).sum(1)
        upsampled = F.interpolate(masked, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(upsampled, labels, ignore_index=ignore_index) + MaskTokens.diversity_loss(masks)
