"""Text on pictures, readable on any background."""

from __future__ import annotations

import cv2
import numpy as np

_AROUND = ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1))


def outlined_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float,
                  color: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Draw ``text`` in ``color`` into the uint8 (H, W, 3) ``image`` at ``org`` (pixels, baseline left), over a
    black outline of the same glyphs shifted by one pixel in the 8 directions. A thicker black stroke would
    not do: OpenCV 5 draws a bold face, of other glyph widths, for a thickness above 1, so its outline
    showed beside the text as a ghost of it on light backgrounds."""
    x, y = org
    for dx, dy in _AROUND:
        cv2.putText(image, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
