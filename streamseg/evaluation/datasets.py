"""Image, mask and split-file readers shared by the tools, training and tests.

* :func:`read_image`: any image OpenCV decodes, as (H, W, 3) uint8 RGB.
* :func:`read_mask`: a mask image as (H, W) bool, grey level > 127 is polyp
  (Kvasir-SEG masks are JPEGs, so their edges carry compression noise; 127
  splits them where the annotation meant).
* :func:`read_split`: a split file, one image stem per line; blank lines and
  ``#`` comments (also indented) are skipped; a stem listed twice is an error.

Every failure is a :class:`DatasetError` that names the file and the fix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

MASK_THRESHOLD = 127
# OpenCV >= 4.11 decodes straight to RGB; before that, BGR plus a conversion.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


class DatasetError(Exception):
    """The dataset folder or a split file is missing, malformed or inconsistent."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    Raises:
        DatasetError: The file cannot be decoded.
    """
    if _IMREAD_RGB is not None:
        pixels = cv2.imread(str(path), _IMREAD_RGB)
    else:  # OpenCV before 4.11 decodes to BGR only
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if pixels is not None:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels is None:
        raise DatasetError(
            f"{path}: cannot decode image (missing, truncated or not an image)"
        )
    return pixels


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file to (H, W) bool: grey values above 127 are polyp.

    Raises:
        DatasetError: The file cannot be decoded.
    """
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise DatasetError(
            f"{path}: cannot decode mask (missing, truncated or not an image)"
        )
    return grey > MASK_THRESHOLD


def read_split(path: str | Path) -> list[str]:
    """Stems listed in a split file (one per line; blanks and ``#`` comments skipped).

    Raises:
        DatasetError: Missing file, no stems, or duplicated stems.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DatasetError(
            f"{path}: cannot read split file ({error.strerror or error}); "
            "expected a text file with one image stem per line"
        ) from error
    stems = [
        line.strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not stems:
        raise DatasetError(f"{path}: split file lists no stems")
    duplicated = sorted(stem for stem, count in Counter(stems).items() if count > 1)
    if duplicated:
        raise DatasetError(f"{path}: stems listed twice, e.g. {duplicated[:3]}")
    return stems
