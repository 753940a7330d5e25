"""The API's documented limits on a photo and the size a photo is analysed at: data and one rule, like
`codes` and `schema`. The client refuses a photo by them before paying (`skintrack.api.request`), and the
report crops a photo by the face box its response measured (`skintrack.show.charts.photo_pair`).

Example
-------
>>> sent_size(3000, 2000), sent_size(6000, 4000)
((3000, 2000), (4095, 2730))
"""
from __future__ import annotations

MAX_BYTES = 8 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 200, 4096  # exclusive: larger than 200x200, smaller than 4096x4096


def sent_size(width: int, height: int) -> tuple[int, int]:
    """The size a photo of `width` x `height` px is analysed at: its own, or, above the API's largest side,
    downsized by `analyze --fix` to fit (the frame of the face box and maps of its response)."""
    if width < MAX_SIDE and height < MAX_SIDE:
        return width, height
    scale = (MAX_SIDE - 1) / max(width, height)
    return round(width * scale), round(height * scale)
