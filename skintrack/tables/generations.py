"""Which API generation answered: the vendor's versions and the shape that tells them apart, as data.

The vendor serves every version from one URL with no version field, so the generation is read from the
response's shape: a marker is a JSON path a version introduced (the field tables of the documents in
`reference/` and the real responses of `fixtures/real/`). A marker's presence proves "this version or
later"; an `always` marker's absence, where its parent is present, proves "older than that version"
(a marker that only answers a request option, such as side results, proves nothing by its absence).
The shape gives a range; the call date (the archive envelope's) picks the version the vendor served
that day within it; an undated response whose shape allows several is taken as the newest of them (the
vendor serves only its newest version), and the basis column says so.

Example
-------
>>> infer({"result": {"image_quality": {"face_ratio": 0.3}}}).name  # no glasses yet: before v1.6.6
'v1.6.2'
>>> doc = {"result": {"image_quality": {"glasses": 0}}}  # v1.6.6 or later; its other markers not returned
>>> infer(doc).name, infer(doc, "2023-07-01").name
('v1.7.6', 'v1.6.6')
"""
from __future__ import annotations

import copy
import datetime as dt
import fnmatch
from dataclasses import dataclass

import orjson

# name, release date (version-logs.mdx), what changed that a study can feel
GENERATIONS = (
    ("v1.5.1", dt.date(2023, 2, 17), "moisture, sensitivity, wrinkle and roughness scores; the score system"),
    ("v1.6.2", dt.date(2023, 4, 5), "image quality detection; side-face results"),
    ("v1.6.6", dt.date(2023, 6, 14), "glasses; per-region pore and dark-circle scores; new total pore and "
                                     "dark-circle score logic"),
    ("v1.7.1", dt.date(2023, 7, 28), "jawline standard judgement; detection counts; whole-face oiliness"),
    ("v1.7.6", dt.date(2024, 8, 6), "side-face acne and pigmentation"),
)
NAMES = tuple(g[0] for g in GENERATIONS)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Marker:
    """A JSON path (``*`` matches within one key) first returned by the version `since`."""

    since: str
    path: str
    always: bool = False  # returned on every successful call from `since` on (so its absence is evidence)
    source: str = ""


MARKERS = (
    Marker("v1.6.2", "result.image_quality", True, "api-v1.6.2.mdx: image_quality"),
    Marker("v1.6.6", "result.image_quality.glasses", True, "api-v1.6.6.mdx: glasses"),
    Marker("v1.6.6", "result.score_info.dark_circle_type_score", True, "api-v1.6.6.mdx: dark_circle_type_score"),
    Marker("v1.6.6", "result.score_info.pores_type_score", True, "api-v1.6.6.mdx: pores_type_score"),
    Marker("v1.7.1", "result.oily_intensity.full_face", True, "api-v1.7.1.mdx: oily_intensity.full_face"),
    Marker("v1.7.1", "result.acne.count", True, "api-v1.7.1.mdx: count in every detection block"),
    Marker("v1.7.1", "result.*.count", False, "api-v1.7.1.mdx: count in every detection block"),
    Marker("v1.7.1", "*_side_result.*_jawline_info.*_jawline_angle_level", False,
           "api-v1.7.1.mdx: left/right_jawline_angle_level (only with return_side_results)"),
    Marker("v1.7.6", "*_side_result.*_acne_info", False, "api-latest-v1.7.6.mdx: side-face acne"),
    Marker("v1.7.6", "*_side_result.*_melanin_info", False, "api-latest-v1.7.6.mdx: side-face pigmentation"),
    Marker("v1.7.6", "*_side_result.*_face_maps", False, "api-latest-v1.7.6.mdx: side-face maps"),
)


@dataclass(frozen=True)
class Generation:
    """The inferred generation, the range the shape allows, and how it was decided."""

    name: str
    low: str | None
    high: str | None
    basis: str


def infer(doc: dict, called_at: dt.datetime | dt.date | str | None = None) -> Generation:
    """The generation that produced the response `doc`, from its shape and the call date if known."""
    day = _day(called_at)
    served = _served_on(day) if day else None
    result = doc.get("result") if isinstance(doc, dict) else None
    if not isinstance(result, dict):  # a failure envelope has no shape to read
        if served:
            return Generation(served, None, None, f"call date {day} only (no result to read)")
        return Generation(UNKNOWN, None, None, "no result and no call date")
    low, high, why_low, why_high = 0, len(NAMES) - 1, None, None
    for m in MARKERS:
        rank = NAMES.index(m.since)
        if _present(doc, m.path):
            if rank > low:
                low, why_low = rank, m.path
        elif m.always and _present(doc, m.path.rsplit(".", 1)[0]) and rank - 1 < high:
            high, why_high = rank - 1, m.path
    if low > high:
        return Generation(UNKNOWN, None, None, f"contradictory shape: has {why_low} ({NAMES[low]}+) but lacks "
                                               f"{why_high} (before {NAMES[high + 1]})")
    lo, hi = NAMES[low], NAMES[high]
    if low == high:
        return Generation(lo, lo, hi, "shape" + (f" (the call date {day} suggests {served})"
                                                 if served and served != lo else ""))
    if day is None:
        return Generation(hi, lo, hi, f"shape allows {lo}-{hi}; undated, taken as the newest it allows")
    pick = min(max(NAMES.index(served) if served else 0, low), high)  # a date before every release: the oldest
    return Generation(NAMES[pick], lo, hi, f"shape allows {lo}-{hi}; call date {day}")


def downgrade(doc: dict, name: str) -> dict:
    """A copy of a current response with every marker of a version after `name` removed: the shape that
    version answered with (how the emulator answers as an older generation)."""
    rank = NAMES.index(name)
    out = copy.deepcopy(doc)
    for m in MARKERS:
        if NAMES.index(m.since) > rank:
            _remove(out, m.path.split("."))
    return out


def _served_on(day: dt.date) -> str | None:
    live = [name for name, released, _ in GENERATIONS if released <= day]
    return live[-1] if live else None


def _day(value) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _children(node, part: str):
    if isinstance(node, str) and node[:1] == "{":  # a side result sent as JSON text
        try:
            node = orjson.loads(node)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(node, dict):
        return []
    if "*" not in part:
        return [node[part]] if part in node else []
    return [v for k, v in node.items() if fnmatch.fnmatchcase(k, part)]


def _present(doc, path: str) -> bool:
    nodes = [doc]
    for part in path.split("."):
        nodes = [c for n in nodes for c in _children(n, part)]
        if not nodes:
            return False
    return True


def _remove(node, parts: list[str]) -> None:
    if not isinstance(node, dict):
        return
    keys = [k for k in node if fnmatch.fnmatchcase(k, parts[0])]
    for k in keys:
        if len(parts) == 1:
            del node[k]
        elif isinstance(node[k], str) and node[k][:1] == "{":
            inner = orjson.loads(node[k])
            _remove(inner, parts[1:])
            node[k] = orjson.dumps(inner).decode()
        else:
            _remove(node[k], parts[1:])
