"""The names of the mask kinds and conventions (no imports: the CLI's help text needs them at once)."""

CONVENTIONS = ("keep", "hole")

MASK_KINDS: dict[str, str] = {
    "thick": "LaMa-style thick random strokes (or 1-3 large boxes); ~25% hole at 256",
    "medium": "LaMa-style medium random strokes (or 1-5 small boxes)",
    "thin": "LaMa-style thin random strokes, many of them; ~30% hole at 256",
    "ex64": "extreme: keep only the centre 64x64 of 256 (centre quarter of each side)",
    "genhalf": "extreme: keep only the left half, generate the right half",
    "nn2": "extreme: keep only odd rows x odd columns (2x super-resolution)",
    "ev2li": "extreme: keep only odd rows (every second line)",
    "box": "one random rectangular hole, sides a random fraction of the image sides",
}
