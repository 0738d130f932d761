"""Every choice list of repaint, defined and checked in one place.

No imports beyond the standard library: the CLI checks option values with these
before PyTorch, numpy or OpenCV are imported (and its help text needs them at once).
"""
from __future__ import annotations

import difflib
from typing import Iterable

#: On-disk mask conventions: keep (white = keep, RePaint) or hole (white = hole, LaMa / IOPaint).
CONVENTIONS = ("keep", "hole")
CONVENTIONS_HINT = "keep: white = keep, hole: white = hole"

#: How an image is fitted to the model's square resolution (images/fit.py).
FIT_MODES = ("crop", "resize", "pad")

#: Compute precisions of the engine (runtime/device.py).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: Reverse steps; core/sampler.py maps each to its step function, in this order.
METHODS = ("repaint", "ddnm", "ddim")
# repaint impute: the conditional model (tables/conditional.py, the default), or an eps model sampled by a METHOD
TABLE_METHODS = ("conditional",) + METHODS

#: Sampling presets' names (core/schedule.PRESETS holds their schedules; a test keeps the two alike).
PRESET_NAMES = ("paper", "quick", "fast", "draft", "noresample")
GUIDANCE_CALLS = ("all", "last")  # which UNet calls take reconstruction guidance (core.schedule.guided_calls)

#: Per-image animations (images/frames.py).
ANIMATIONS = ("gif", "mp4")

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


class ChoiceError(ValueError):
    """A value that is not one of its choices; the message is one line."""


def choice_message(value, choices: Iterable[str], what: str, hint: str = "") -> str:
    """'WHAT VALUE: use one of A, B, C (did you mean 'B'?)', plus ``hint`` when given."""
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{what} {value}: use one of {', '.join(choices)}{guess}" + (f"; {hint}" if hint else "")


def check_choice(value, choices: Iterable[str], what: str, hint: str = ""):
    """Return ``value`` when it is one of ``choices``; else raise ChoiceError naming the closest one."""
    choices = tuple(choices)
    if value not in choices:
        raise ChoiceError(choice_message(value, choices, what, hint))
    return value
