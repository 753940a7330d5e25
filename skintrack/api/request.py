"""What the API accepts, checked before paying: photos and request parameters.

The rules are the documented ones (v1.6.6 and v1.7.6): a JPEG (by content, whatever the extension) of at
most 8 MB, larger than 200x200 and smaller than 4096x4096 pixels; documented values of `return_maps`,
`return_marks` and `return_side_results`; `roi_outline_color` with the nine documented keys and 6-digit hex
values; `jawline_info` only with both side images. `prepare_photo(..., fix=True)` converts other formats to
JPEG and downsizes oversized photos, and says what it did.

Example
-------
>>> Params(return_maps=("red_area",)).form()
{'return_maps': 'red_area'}
>>> Params(return_maps=("blue_area",))
Traceback (most recent call last):
...
skintrack.errors.UsageError: return_maps: unknown value 'blue_area' (documented: red_area, brown_area, ...)
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import PhotoRejected, UsageError
from ..tables.limits import MAX_BYTES, MAX_SIDE, MIN_SIDE, sent_size
from ..tables.schema import MAP_NAMES

ORIENTATION = 0x0112  # the EXIF tag of which way up the stored pixels are read
MAPS = MAP_NAMES + ("left_roi_outline_map", "right_roi_outline_map")
MARKS = ("wrinkle_mark", "right_nasolabial_list", "right_mouth_list", "right_eye_wrinkle_list", "right_crowsfeet_list",
         "right_cheek_list", "left_nasolabial_list", "left_mouth_list", "left_eye_wrinkle_list", "left_crowsfeet_list",
         "left_cheek_list", "glabella_wrinkle_list", "forehead_wrinkle_list", "dark_circle_outline", "sensitivity_mark",
         "melanin_mark", "cheekbone_mark")
SIDE_RESULTS = ("jawline_info",)
COLORS = ("pores_color", "blackhead_color", "wrinkle_color", "fine_line_color", "closed_comedones_color",
          "acne_pustule_color", "acne_nodule_color", "acne_color", "brown_spot_color")
_HEX = re.compile(r"^[0-9A-Fa-f]{6}$")


def _values(name, values, allowed):
    values = tuple(v.strip() for v in values if v.strip())
    for v in values:
        if v not in allowed:
            shown = ", ".join(allowed[:2]) + ", ..."
            raise UsageError(f"{name}: unknown value {v!r} (documented: {shown})")
    return values


@dataclass(frozen=True)
class Params:
    """The optional request fields, checked against the documented values."""

    return_maps: tuple = ()
    return_marks: tuple = ()
    return_side_results: tuple = ()
    roi_outline_color: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "return_maps", _values("return_maps", self.return_maps, MAPS))
        object.__setattr__(self, "return_marks", _values("return_marks", self.return_marks, MARKS))
        object.__setattr__(self, "return_side_results",
                           _values("return_side_results", self.return_side_results, SIDE_RESULTS))
        for k, v in self.roi_outline_color.items():
            if k not in COLORS:
                raise UsageError(f"roi_outline_color: unknown key {k!r} (documented: {', '.join(COLORS)})")
            if not isinstance(v, str) or not _HEX.match(v):
                raise UsageError(f"roi_outline_color: {k} must be a 6-digit hex colour such as 'FF0000', got {v!r}")

    def form(self) -> dict[str, str]:
        """The multipart form fields (empty ones left out)."""
        out = {k: ",".join(getattr(self, k)) for k in ("return_maps", "return_marks", "return_side_results")
               if getattr(self, k)}
        if self.roi_outline_color:
            out["roi_outline_color"] = json.dumps(self.roi_outline_color, sort_keys=True)
        return out

    def key(self) -> str:
        """A short hash of the parameters: a photo analysed with other parameters is another call."""
        return hashlib.sha256(json.dumps(self.form(), sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Photo:
    """A photo ready to send: its bytes, where it came from, and what `fix` did to it."""

    path: str
    data: bytes
    sha256: str  # of the file as found on disk: the identity used to never bill a photo twice
    width: int
    height: int
    fixes: tuple = ()


def prepare_photo(path, fix: bool = False) -> Photo:
    """Read a photo and check it against the API's rules; with `fix`, convert or downsize what can be.

    Raises `PhotoRejected` naming the photo and the rule.
    """
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PhotoRejected(f"{path}: cannot be read ({e.strerror})") from None
    sha = hashlib.sha256(raw).hexdigest()
    try:
        img = opened = Image.open(io.BytesIO(raw))
        fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError:
        raise PhotoRejected(f"{path}: too many pixels to open safely; the API needs less than {MAX_SIDE}x{MAX_SIDE} "
                            "px") from None
    except (UnidentifiedImageError, OSError):
        raise PhotoRejected(f"{path}: not an image the API can read (JPEG expected)") from None
    _decodes(path, raw)
    fixes, data = [], raw
    if fmt != "JPEG":
        if not fix:
            raise PhotoRejected(f"{path}: is {fmt or 'not JPEG'} by content; the API takes JPEG only (use --fix "
                                "to convert)")
        fixes.append(f"converted {fmt} to JPEG")
    if w <= MIN_SIDE or h <= MIN_SIDE:
        raise PhotoRejected(f"{path}: {w}x{h} px; the API needs more than {MIN_SIDE}x{MIN_SIDE} px")
    if w >= MAX_SIDE or h >= MAX_SIDE:
        if not fix:
            raise PhotoRejected(f"{path}: {w}x{h} px; the API needs less than {MAX_SIDE}x{MAX_SIDE} px (use --fix to "
                                "downsize)")
        img = img.resize(sent_size(w, h), Image.LANCZOS)
        fixes.append(f"downsized {w}x{h} to {img.size[0]}x{img.size[1]}")
        w, h = img.size
    if len(raw) > MAX_BYTES and not fix:
        raise PhotoRejected(f"{path}: {len(raw) / 2**20:.1f} MiB; the API takes at most 8 MB (use --fix to recompress)")
    if fixes or len(raw) > MAX_BYTES:
        data = _jpeg(path, img, fixes, opened.getexif().get(ORIENTATION))
    return Photo(path, data, sha, w, h, tuple(fixes))


def _decodes(path: str, raw: bytes) -> None:
    """Refuse a photo whose data stops short or is damaged (a copy cut off, a disk error): its header alone
    gives a format and a size, so it would be paid for. The whole stream is decoded, a JPEG at an eighth of its
    size (its DCT scaling still reads every block: a 12 MP photo in a few ms)."""
    img = Image.open(io.BytesIO(raw))
    img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise PhotoRejected(f"{path}: its image data is damaged or cut short ({e}); copy the photo again") from None


def _jpeg(path: str, img: Image.Image, fixes: list, orientation: int | None) -> bytes:
    """`img` as a JPEG under 8 MB, with the photo's EXIF orientation: a phone's portrait photo is stored turned
    with a tag saying so, and a fix changes its size or format, never which way up it is read (the tag was
    dropped, so the API got the photo on its side where the original was read upright)."""
    kept = {}
    if orientation not in (None, 1):
        kept["exif"] = Image.Exif()
        kept["exif"][ORIENTATION] = orientation
    for quality in (95, 90, 85, 80, 70, 60):
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=quality, **kept)
        if buf.tell() <= MAX_BYTES:
            if quality != 95:
                fixes.append(f"recompressed as JPEG quality {quality} to fit 8 MB")
            return buf.getvalue()
    raise PhotoRejected(f"{path}: cannot be recompressed under 8 MB")
