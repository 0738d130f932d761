"""PNG chunks read and written directly, for what Pillow and OpenCV leave out.

Pillow opens a 16-bit colour or grey+alpha PNG truncated to 8 bits and cannot write one;
OpenCV reads and writes the pixels but no metadata, and ignores a ``tRNS`` colour key on
grey.  So the reader takes the header, the ``tRNS`` key and the colour chunks (``gAMA``,
``cHRM``, ``sRGB``) from the file itself, and 16-bit outputs are encoded here, with
their ICC profile, resolution and text chunks.  numpy and the standard library only.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Chunks that say what the pixel values mean; copied from a PNG input to a PNG output.
COLOUR_CHUNKS = (b"gAMA", b"cHRM", b"sRGB")

# Largest data these chunks may hold (a palette's tRNS: 256 bytes); a longer one is skipped as damaged.
_MAX_SMALL_CHUNK = 256

#: PNG colour types by channel count: grey, grey+alpha, RGB, RGBA.
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    bit_depth: int
    colour_type: int  # 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA

    @property
    def grey(self) -> bool:
        return self.colour_type in (0, 4)


def read_chunks(path, wanted=(b"tRNS", *COLOUR_CHUNKS)) -> tuple[Header | None, dict[bytes, bytes]]:
    """The header and the first of each ``wanted`` small chunk of a PNG file; (None, {}) when it is
    not a PNG.  Pixel data is skipped, not read."""
    found: dict[bytes, bytes] = {}
    header = None
    try:
        with open(path, "rb") as f:
            if f.read(8) != SIGNATURE:
                return None, {}
            while True:
                head = f.read(8)
                if len(head) < 8:
                    break
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IHDR" and length == 13:
                    w, h, depth, ctype = struct.unpack(">IIBB", f.read(13)[:10])
                    header = Header(w, h, depth, ctype)
                elif kind in wanted and kind not in found and length <= _MAX_SMALL_CHUNK:
                    found[kind] = f.read(length)
                else:
                    f.seek(length, 1)
                f.seek(4, 1)  # the CRC (Pillow has checked the file while decoding it)
                if kind == b"IEND":
                    break
    except OSError:
        return None, {}
    return header, found


def pixels_only(data: bytes) -> bytes:
    """The PNG ``data`` with only the chunks that make its pixels (IHDR, PLTE, IDAT, IEND): what
    OpenCV is given, so that libpng prints no warning about metadata (an RGB ICC profile on a
    grey image...) to the terminal, and applies no ``tRNS`` of its own."""
    out, i = [data[:8]], 8
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        end = i + 12 + length
        if data[i + 4:i + 8] in (b"IHDR", b"PLTE", b"IDAT", b"IEND"):
            out.append(data[i:end])
        if data[i + 4:i + 8] == b"IEND":
            break
        i = end
    return b"".join(out)


def trns_key(header: Header, data: bytes | None) -> tuple[int, ...] | None:
    """The transparent colour of a grey or RGB PNG, in the file's own sample values; None for others."""
    if data is None:
        return None
    n = {0: 1, 2: 3}.get(header.colour_type)
    if n is None or len(data) < 2 * n:
        return None
    return struct.unpack(f">{n}H", data[: 2 * n])


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def text_chunk(key: str, value: str, lang: str = "", tkey: str = "", itxt: bool = False) -> bytes:
    """tEXt when key and value are Latin-1 (and no language is named), else uncompressed iTXt."""
    if not itxt and not lang and not tkey:
        try:
            return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    data = (key.encode("latin-1", "replace") + b"\0\0\0" + lang.encode("ascii", "replace") + b"\0"
            + tkey.encode("utf-8") + b"\0" + value.encode("utf-8"))
    return chunk(b"iTXt", data)


def iccp_chunk(profile: bytes) -> bytes:
    return chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(profile))


def phys_chunk(dpi: tuple[float, float]) -> bytes:
    """Resolution in pixels per metre, as Pillow writes it (300 dpi: 11811)."""
    x, y = (int(v / 0.0254 + 0.5) for v in dpi)
    return chunk(b"pHYs", struct.pack(">IIB", x, y, 1))


def encode_png16(pixels: np.ndarray, chunks: list[bytes] = ()) -> bytes:
    """A 16-bit PNG of ``pixels`` (uint16 (H, W) grey or (H, W, C) with C = 2 grey+alpha, 3 RGB,
    4 RGBA), with the given encoded ``chunks`` before the pixel data.  Every row is filtered
    with 'Up' (the difference from the row above; the first row's is zeros), which suits
    photographs well enough and needs no loop over pixels."""
    a = np.asarray(pixels)
    if a.dtype != np.uint16 or a.ndim not in (2, 3):
        raise ValueError(f"pixels must be uint16 (H, W) or (H, W, C), got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    rows = a.astype(">u2").reshape(h, w * channels).view(np.uint8)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 wraps modulo 256, as the filter is defined
    filtered = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, _COLOUR_TYPE[channels], 0, 0, 0)
    return (SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(chunks)
            + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)) + chunk(b"IEND", b""))
