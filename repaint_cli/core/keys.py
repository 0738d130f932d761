"""Every per-image key of a run, from one hash of (purpose, seed, name).

An image's noise, its generated mask and its drawn class depend on the run seed and the image's name only,
never on its batch, shard or neighbours. All three come from :func:`key_digest`; nothing else hashes
(seed, name). Pure ``hashlib``: importing this costs nothing (the CLI resolves jobs before PyTorch loads).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


def key_digest(seed: int, name: str, purpose: str = "") -> bytes:
    """sha256 of ``purpose \\0 seed \\0 name``. The noise key has no purpose prefix (its bytes predate the
    others, and outputs stay as they were)."""
    prefix = f"{purpose}\0" if purpose else ""
    return hashlib.sha256(f"{prefix}{int(seed)}\0{name}".encode()).digest()


def two_words(digest: bytes) -> tuple[int, int]:
    """The first 64 bits of a digest as two little-endian 32-bit words."""
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


@dataclass(frozen=True)
class ImageKeys:
    """The keys of one image in one run: computed once, when its job is made, and carried by the job."""

    seed: int
    noise: tuple[int, int]  # the counter-based noise's key (core.noise)
    mask: tuple[int, int]  # seeds a generated mask (images.masks.mask_for_image)
    label: int  # 64 bits: the class drawn for a class-conditional model (label % num_classes)

    @classmethod
    def of(cls, seed: int, name: str) -> "ImageKeys":
        label = int.from_bytes(key_digest(seed, name, "class")[:8], "little")
        return cls(int(seed), two_words(key_digest(seed, name)), two_words(key_digest(seed, name, "mask")), label)
