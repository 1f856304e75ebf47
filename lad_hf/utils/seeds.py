"""Random draws that repeat: generators seeded from a key, or from a label map's content."""

import hashlib
import zlib

import torch


__all__ = ["content_generator", "seed_from"]


def seed_from(key: str) -> int:
    """A 63-bit seed from a string key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def content_generator(labels: torch.Tensor, salt: str) -> torch.Generator:
    """A generator seeded from a label map's content: the same draws for the same image, whatever the batching."""
    generator = torch.Generator(device=labels.device)
    generator.manual_seed(seed_from(f"{salt}/{zlib.crc32(labels.cpu().numpy().tobytes())}"))
    return generator
