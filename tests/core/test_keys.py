"""core/keys.py: every per-image key of a run comes from one hash of (purpose, seed, name)."""
import hashlib

from repaint_cli.core.keys import ImageKeys, key_digest, two_words


def test_the_noise_key_has_no_purpose_prefix_and_the_others_do():
    """The noise key's bytes predate the mask and class keys: sha256 of 'seed NUL name' alone."""
    assert key_digest(7, "cat.png") == hashlib.sha256(b"7\0cat.png").digest()
    assert key_digest(7, "cat.png", "mask") == hashlib.sha256(b"mask\x007\0cat.png").digest()
    assert key_digest(7, "cat.png", "mask") != key_digest(7, "cat.png")


def test_two_words_are_the_first_64_bits_little_endian():
    digest = bytes(range(1, 33))
    assert two_words(digest) == (0x04030201, 0x08070605)


def test_an_images_keys_depend_on_the_seed_and_its_name_only():
    a = ImageKeys.of(3, "a.png")
    assert a == ImageKeys.of(3, "a.png"), "the same image in another batch, shard or run gets the same keys"
    assert a.seed == 3 and a.noise == two_words(key_digest(3, "a.png"))
    assert a.mask == two_words(key_digest(3, "a.png", "mask"))
    assert a.label == int.from_bytes(key_digest(3, "a.png", "class")[:8], "little") and 0 <= a.label < 2 ** 64
    others = [ImageKeys.of(4, "a.png"), ImageKeys.of(3, "b.png")]
    for other in others:
        assert other.noise != a.noise and other.mask != a.mask and other.label != a.label
    assert len({a.noise, a.mask}) == 2, "the noise and the mask of one image are keyed apart"
