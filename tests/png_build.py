"""PNG files built byte by byte for the image tests, independent of the code under test: a plain
encoder (filter 'None', every colour type and bit depth), chunks spliced into a file made by
Pillow or OpenCV, and readers of a written file's header and chunks."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

SIG = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(samples: np.ndarray, colour_type: int, depth: int, extra: list[bytes] = ()) -> bytes:
    """samples: (H, W) or (H, W, C) of the file's own values (0 .. 2**depth - 1)."""
    a = np.asarray(samples)
    h, w = a.shape[:2]
    flat = a.reshape(h, -1).astype(np.int64)
    if depth == 16:
        rows = flat.astype(">u2").view(np.uint8).reshape(h, -1)
    elif depth == 8:
        rows = flat.astype(np.uint8)
    else:  # 1, 2 or 4 bits, packed from the high bit, each row padded to whole bytes
        per = 8 // depth
        width = -(-flat.shape[1] // per) * per
        padded = np.zeros((h, width), np.int64)
        padded[:, :flat.shape[1]] = flat
        shifts = (8 - depth) - depth * np.arange(per)
        rows = (padded.reshape(h, -1, per) << shifts).sum(axis=2).astype(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return SIG + chunk(b"IHDR", ihdr) + b"".join(extra) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def splice(png: bytes, extra: list[bytes]) -> bytes:
    """Insert encoded chunks right after IHDR (before any PLTE or IDAT)."""
    assert png[:8] == SIG and png[12:16] == b"IHDR"
    return png[:33] + b"".join(extra) + png[33:]


def cv2_png(arr: np.ndarray) -> bytes:
    """OpenCV's PNG of an RGB(A)/grey array given in RGB order (16-bit stays 16-bit)."""
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def pil_bytes(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def trns(key) -> bytes:
    key = (key,) if np.ndim(key) == 0 else tuple(key)
    return chunk(b"tRNS", struct.pack(f">{len(key)}H", *(int(k) for k in key)))


def phys(ppm_x: int, ppm_y: int, unit: int = 1) -> bytes:
    return chunk(b"pHYs", struct.pack(">IIB", ppm_x, ppm_y, unit))


def iccp(profile: bytes) -> bytes:
    return chunk(b"iCCP", b"profile\0\0" + zlib.compress(profile))


def text(key: str, value: str, kind: str = "tEXt") -> bytes:
    k = key.encode("latin-1")
    if kind == "tEXt":
        return chunk(b"tEXt", k + b"\0" + value.encode("latin-1"))
    if kind == "zTXt":
        return chunk(b"zTXt", k + b"\0\0" + zlib.compress(value.encode("latin-1")))
    return chunk(b"iTXt", k + b"\0\0\0en\0\0" + value.encode("utf-8"))


def exif_orientation(o: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = o
    data = ex.tobytes()
    return chunk(b"eXIf", data[6:] if data.startswith(b"Exif\0\0") else data)


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (type, data) of a PNG, in file order."""
    assert data[:8] == SIG
    out, i = [], 8
    while i + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        out.append((kind, data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def header(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) of a PNG."""
    return data[24], data[25]


def decode(data: bytes) -> np.ndarray:
    """The file's own samples, RGB(A) order, by OpenCV (16-bit kept); grey+alpha as (H, W, 2)."""
    pixels = SIG + b"".join(chunk(k, d) for k, d in chunks_of(data) if k in (b"IHDR", b"PLTE", b"IDAT", b"IEND"))
    arr = cv2.imdecode(np.frombuffer(pixels, np.uint8), cv2.IMREAD_UNCHANGED)  # no libpng warnings on metadata
    depth, ctype = header(data)
    if ctype == 4:
        return arr[..., [0, 3]]
    if arr.ndim == 3:
        return arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return arr


# Pillow's exif_transpose table (orientation -> transpose), applied to an index image, so the
# expected display orientation does not use the code under test.
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def orient(arr: np.ndarray, o: int) -> np.ndarray:
    if o not in _ORIENT:
        return arr
    h, w = arr.shape[:2]
    idx = np.asarray(Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w), "I").transpose(_ORIENT[o]))
    return arr.reshape(h * w, *arr.shape[2:])[idx]
