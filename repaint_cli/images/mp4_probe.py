"""Which MP4 codec this OpenCV can write: tried on a 16x16 frame. Imports only OpenCV and NumPy, so that it runs
quickly as a child process (``python -m repaint_cli.images.mp4_probe DIR FOURCC...`` prints the first that works)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

import cv2
import numpy as np


def first_working(folder: str, fourccs: Iterable[str]) -> Optional[str]:
    """The first fourcc whose writer opens and writes a non-empty file in ``folder``, or None."""
    for fourcc in fourccs:
        path = os.path.join(folder, f"probe_{fourcc}.mp4")
        vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 12.0, (16, 16))
        try:
            if not vw.isOpened():
                continue
            vw.write(np.zeros((16, 16, 3), np.uint8))
        finally:
            vw.release()
        if os.path.getsize(path) > 0:
            return fourcc
    return None


if __name__ == "__main__":
    print(first_working(sys.argv[1], sys.argv[2:]) or "")
