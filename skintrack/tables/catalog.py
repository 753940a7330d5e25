"""The metric catalog: one row per metric key, derived from the declarations in `skintrack.tables.schema`.

Example
-------
>>> cat = catalog()
>>> cat.set_index("key").loc["score.total", ["unit", "better"]].tolist()
['points', 'higher']
>>> "count.acne.front" in set(cat["key"])
True
"""
from __future__ import annotations

import functools
import json
import weakref

import pandas as pd

from ..errors import UnknownMetric, UsageError
from .schema import DECLARED_BLOCKS, DECLARED_FIELDS, DETECTION_KINDS, LABELS, REGIONS, SEVERITY_100_BANDS

COLUMNS = ["key", "family", "feature", "region", "measure", "type", "description", "unit", "range", "lo", "hi",
           "better", "labels", "paths", "table", "column"]
# What kind of number a metric is, which decides its endpoint model: counts of lesions, pores, lines
# (negative binomial), ordered grades (proportional odds), presence flags (logistic), classes without an
# order (described, not modelled), and everything else continuous (MMRM, ANCOVA).
ORDERED_LABELS = {"grade4", "grade3", "oily"}
UNORDERED_LABELS = {"dark_circle_type", "skin_type", "jawline_quality", "jawline_level", "ita_class", "ha_class",
                    "skin_tone"}


def metric_type(unit: str, labels: str | None, better: str) -> str:
    """count, grade, presence, class or continuous."""
    if labels == "presence":
        return "presence"
    if labels in ORDERED_LABELS:
        return "grade"
    if labels in UNORDERED_LABELS:
        return "class"
    return "count" if unit == "count" else "continuous"


def _range(lo, hi):
    return f"[{'-inf' if lo is None else lo}, {'+inf' if hi is None else hi}]"


def _labels(name):
    if name is None:
        return None
    if name == "severity_100":
        bands, low = {}, 0
        for top, label in SEVERITY_100_BANDS:
            bands[f"{low}-{top}"] = label
            low = top + 1
        return json.dumps(bands)
    return json.dumps({str(k): v for k, v in LABELS[name].items()})


@functools.lru_cache(maxsize=1)
def _rows() -> tuple:
    rows: dict[str, dict] = {}
    for f in DECLARED_FIELDS:
        key = f.metric_key
        if key is None:
            continue
        parts = key.split(".")
        family = parts[0]
        k = dict(f.key)
        feature = {"score": (k.get("metric") or "").split(".")[0], "tone": f.column, "skin": "age",
                   "wrinkle": "wrinkle"}.get(family, k.get("feature"))
        region = {"score": (k.get("metric", "").split(".") + [None])[1], "wrinkle": k.get("region")}.get(
            family, k.get("region"))
        measure = f.column if family == "wrinkle" else None
        paths = [f.path, *f.variants]
        if key in rows:
            rows[key]["paths"] += paths
            continue
        rows[key] = dict(key=key, family=family, feature=feature, region=region, measure=measure,
                         type=metric_type(f.unit, f.labels, f.better), description=f.description, unit=f.unit, range=_range(*f.range), lo=f.range[0],
                         hi=f.range[1], better=f.better, labels=_labels(f.labels), paths=paths, table=f.table,
                         column=f.column)
    for b in DECLARED_BLOCKS:
        if b.handler != "detections":
            continue
        key = f"count.{b.kind}.{b.side}"
        where = "front photo" if b.side == "front" else f"{b.side} side-face photo"
        rows[key] = dict(key=key, family="count", feature=b.kind, region=b.side, measure=None, type="count",
                         description=f"Number of {DETECTION_KINDS[b.kind]} detected, {where} (the block's `count`, "
                                     "or its number of boxes in responses that predate `count`).",
                         unit="count", range=_range(0, None), lo=0, hi=None, better="lower" if b.kind != "mole"
                         else "none", labels=None, paths=[f"{b.path}.count", f"{b.path}.rectangle"],
                         table="counts", column="value")
    assert all(r["region"] in REGIONS or r["region"] is None for r in rows.values())
    return tuple(rows.values())


def catalog() -> pd.DataFrame:
    """Every metric key skintrack knows, with family, feature, region, meaning, unit, range, direction and source.

    Example
    -------
    >>> catalog().query("family == 'severity' and feature == 'pores'")["key"].tolist()
    ['severity.pores.forehead', 'severity.pores.left_cheek', 'severity.pores.right_cheek', 'severity.pores.chin']
    """
    return pd.DataFrame([dict(r, paths=list(r["paths"])) for r in _rows()], columns=COLUMNS)


@functools.lru_cache(maxsize=1)
def _by_key() -> dict:
    return {r["key"]: r for r in _rows()}


_MEASURES: dict[str, dict] = {}  # the measure.<name> keys of the study at work
_OWNER: list = [None]  # a weak reference to that study


def declare_measures(rows: dict, owner=None) -> None:
    """Make a study's measures (`skintrack.tables.measures`) the metric keys `measure.<name>`. A study does
    this when it opens, and again whenever it queries after another study did (two studies of one process
    may declare one name differently: each helper sees its own study's)."""
    _MEASURES.clear()
    _MEASURES.update(rows)
    _OWNER[0] = weakref.ref(owner) if owner is not None else None


def declared_measures() -> list[str]:
    """The measure.<name> keys declared now, by name."""
    return sorted(_MEASURES)


def measures_owner():
    """The study whose measures are declared now (None if none or gone)."""
    return _OWNER[0]() if _OWNER[0] is not None else None


def metric_info(key: str) -> dict:
    """The catalog row of one metric key; raises `UnknownMetric` with close matches when it does not exist.

    Example
    -------
    >>> metric_info("score.total")["better"]
    'higher'
    """
    try:
        return _MEASURES[key] if key in _MEASURES else _by_key()[key]
    except (KeyError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(key), list(_by_key()) + list(_MEASURES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `skintrack metrics` lists them"
        raise UnknownMetric(f"unknown metric {key!r}{hint}") from None


def metric_list(metrics) -> list[str]:
    """`metrics` (one key or several) as a list of known keys in their order. A key named twice is refused: it
    would be counted twice (in a multiplicity adjustment across the metrics, in an export's parameters).

    >>> metric_list("score.total")
    ['score.total']
    >>> metric_list(["score.total", "score.water", "score.total"])
    Traceback (most recent call last):
    ...
    skintrack.errors.UsageError: score.total is named twice: name each metric once
    """
    keys = [metrics] if isinstance(metrics, str) else list(metrics)
    for key in keys:
        metric_info(key)
    if twice := sorted({k for k in keys if keys.count(k) > 1}):
        raise UsageError(f"{', '.join(twice)} {'is' if len(twice) == 1 else 'are'} named twice: name each metric once")
    return keys


def metric_keys() -> list[str]:
    """All metric keys, in catalog order."""
    return list(_by_key())
