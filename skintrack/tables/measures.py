"""Measures: instrument readings, expert grades and questionnaire answers beside the API's metrics.

A measures CSV is long, one reading per row: `subject_id, visit, measure, value`, plus any of `taken_at,
unit, device, rater, replicate, side`. A measures catalog (TOML, kept in the study and versioned like the
plan) declares each measure in a table of its name:

    [corneometer]
    description = "Stratum corneum hydration (Corneometer CM 825)"
    unit = "a.u."
    range = [0, 130]
    better = "higher"          # higher, lower or none
    type = "continuous"        # continuous, count, grade, flag or likert

    [wrinkle_grade]
    type = "grade"
    levels = [0, 1, 2, 3, 4, 5]   # two or more, each higher than the one before: the grades' order
    better = "lower"

    [feels_hydrated]
    description = "My skin feels more hydrated"
    type = "likert"
    levels = [1, 2, 3, 4, 5]   # 1 disagree strongly ... 5 agree strongly
    agree = [4, 5]             # the levels that count as agreeing (top-2-box)
    better = "higher"

Each row is checked against its declaration, one clear line per bad row (a value that is not a number, out
of range or not one of the levels, another unit than declared, a repeated reading); the rest goes in. A
measure without a declaration is continuous, with a warning. Each measure is the metric key
`measure.<name>`; a subject's value at a visit is the mean of its readings there (raters, replicates and
sides), kept under one id per subject and visit so that every helper takes it like a capture's value.

Example
-------
>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "m.csv").write_text("subject_id,visit,measure,value\\nS01,D0,corneometer,41.5\\nS01,D0,corneometer,x\\n")
>>> rows, rejects = read_measures(d / "m.csv", {})
>>> rows["value"].tolist(), rejects[0][1]
([41.5], "value 'x' is not a number")
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path

import pandas as pd

from ..errors import InvalidManifest, UsageError, is_number
from ..sinks import visible
from .manifest import _read_csv, _timestamps

TYPES = {"continuous": "continuous", "count": "count", "grade": "grade", "flag": "presence", "likert": "grade"}
OPTIONAL = ("taken_at", "unit", "device", "rater", "replicate", "side")
REQUIRED = ("subject_id", "visit", "measure", "value")
COLUMNS = REQUIRED + OPTIONAL
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FIELDS = {"description": str, "unit": str, "range": list, "better": str, "type": str, "levels": list, "agree": list}


def session_id(subject_id: str, visit: str) -> str:
    """The id of one subject's measures at one visit (the `analysis_id` helpers join on)."""
    return "m-" + hashlib.sha256(f"{subject_id}\x1f{visit}".encode()).hexdigest()[:30]


def reading_id(row: dict) -> str:
    """The id of one reading: a subject's measure at a visit by one rater, replicate and side."""
    key = "\x1f".join("" if row.get(k) is None else str(row[k]) for k in
                      ("subject_id", "visit", "measure", "rater", "replicate", "side"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def read_catalog(path) -> tuple[str, dict]:
    """(text, declarations) of a measures catalog TOML file; raises `UsageError` naming the file, the
    measure and the field that cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the measures catalog ({e})") from None
    return text, parse_catalog(text, str(path))


def parse_catalog(text: str | None, where: str = "measures catalog", given: bool = True) -> dict:
    """{name: declaration} from catalog TOML text (see the module docstring); checked as it is read. A catalog
    the study already keeps (`given=False`) is read by the rules it was taken under: the order of its levels,
    checked since 0.2, never locks a study out."""
    if not text:
        return {}
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where}: not a readable TOML file ({e})") from None
    out = {}
    for name, decl in doc.items():
        at = f"{where}: [{visible(name)}]"
        if not isinstance(decl, dict):
            raise UsageError(f"{at} must be a table of fields ({', '.join(FIELDS)})")
        if not NAME.match(name):
            raise UsageError(f"{at}: a measure's name is lower-case letters, digits and _ (it becomes the key "
                             f"measure.{visible(name)})")
        for field, value in decl.items():
            if field not in FIELDS:
                raise UsageError(f"{at}: unknown field {visible(field)!r} (known: {', '.join(FIELDS)})")
            if not isinstance(value, FIELDS[field]):
                raise UsageError(f"{at}: {field} must be a {FIELDS[field].__name__}, not "
                                 f"{type(value).__name__} {value!r}")
        kind = decl.get("type", "continuous")
        if kind not in TYPES:
            raise UsageError(f"{at}: type {kind!r} is not one of {', '.join(TYPES)}")
        if decl.get("better", "none") not in ("higher", "lower", "none"):
            raise UsageError(f"{at}: better must be higher, lower or none")
        levels = decl.get("levels")
        if kind in ("grade", "likert") and not levels:
            raise UsageError(f"{at}: a {kind} needs its levels, e.g. levels = [1, 2, 3, 4, 5]")
        if given and levels is not None and kind not in ("grade", "likert", "flag"):
            raise UsageError(f"{at}: levels belong to a grade or a likert item (this measure is a {kind})")
        if levels is not None and not all(is_number(v) for v in levels):
            raise UsageError(f"{at}: levels must be numbers in their order (put their words in the description)")
        if given and levels is not None and (len(levels) < 2 or any(a >= b for a, b in zip(levels, levels[1:]))):
            # the grades' order is their numbers': the models, kappa's weights and the responders read it so
            raise UsageError(f"{at}: levels must be two or more numbers, each higher than the one before (got "
                             f"{levels})")
        if kind == "flag":
            if given and levels not in (None, [0, 1]):
                raise UsageError(f"{at}: a flag's levels are 0 and 1 (leave levels out)")
            levels = [0, 1]
        agree = decl.get("agree")
        if agree is not None and (kind != "likert" or (given and not agree) or not set(agree) <= set(levels or [])):
            raise UsageError(f"{at}: agree lists levels of a likert item that count as agreeing")
        rng = decl.get("range")
        if rng is not None and (len(rng) != 2 or not all(is_number(v) or v in (-math.inf, math.inf) for v in rng)
                                or rng[0] > rng[1]):  # an open end is -inf or inf; NaN would bound nothing
            raise UsageError(f"{at}: range must be [low, high] (numbers; -inf or inf for an open end)")
        out[name] = {"description": decl.get("description", name.replace("_", " ").capitalize()),
                     "unit": decl.get("unit", ""), "range": tuple(rng) if rng else (None, None),
                     "better": decl.get("better", "none"), "type": kind, "levels": levels, "agree": agree}
    return out


def catalog_rows(declared: dict, names) -> dict:
    """Catalog rows (`skintrack.tables.catalog` columns) of the keys measure.<name>, for the declared
    measures and the undeclared `names` found in the data (continuous)."""
    rows = {}
    for name in sorted(set(declared) | set(names)):
        d = declared.get(name) or {"description": f"{name} (undeclared: taken as continuous)", "unit": "",
                                   "range": (None, None), "better": "none", "type": "continuous", "levels": None,
                                   "agree": None}
        levels = d["levels"]
        lo, hi = d["range"] if d["range"] != (None, None) or not levels else (min(levels), max(levels))
        rows[f"measure.{name}"] = {
            "key": f"measure.{name}", "family": "measure", "feature": name, "region": None, "measure": None,
            "type": TYPES[d["type"]], "description": d["description"], "unit": d["unit"],
            "range": f"[{'-inf' if lo is None else lo}, {'+inf' if hi is None else hi}]", "lo": lo, "hi": hi,
            "better": d["better"], "labels": json.dumps({_level(v): _level(v) for v in levels}) if levels else None,
            "paths": [], "table": "measures", "column": "value", "agree": d["agree"], "declared": name in declared}
    return rows


def _level(v) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def read_csv(path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows, rejects) of a measures CSV as text, before any check against the catalog; raises `InvalidManifest`
    when the file cannot be used at all (`ingest` reads it before any response, to say so first)."""
    path = Path(path)
    df, rejects = _read_csv(path, REQUIRED, "measures")
    extra = [c for c in df.columns if c not in COLUMNS and c != "_line"]
    if extra:
        raise InvalidManifest(f"{path}:1: unknown column(s) {', '.join(visible(c) for c in extra)} (a measures CSV "
                              f"has {', '.join(COLUMNS)})")
    return df, rejects


def read_measures(path, declared: dict, read=None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows, rejects) of a measures CSV checked against `declared` ({name: declaration}); rows carry the
    reading's and the session's ids, `source` (file:line) and typed values. `read` is what `read_csv` gave
    for it, if it was read already. Raises `InvalidManifest` when the file cannot be used at all."""
    path = Path(path)
    df, rejects = read or read_csv(path)
    df, rejects = df.assign(**{c: None for c in OPTIONAL if c not in df}), list(rejects)
    rows = []
    for r in df.to_dict("records"):
        problem = _problem(r, declared)
        if problem:
            rejects.append((f"{path}:{r['_line']}", problem))
            continue
        r.update(value=float(r["value"]), reading_id=reading_id(r), analysis_id=session_id(r["subject_id"], r["visit"]),
                 source=f"{path.name}:{r['_line']}")
        rows.append(r)
    out = pd.DataFrame(rows, columns=["_line", *COLUMNS, "reading_id", "analysis_id", "source"])
    if len(out):
        ts = _timestamps(out["taken_at"])
        bad = out["taken_at"].notna() & ts.isna()
        rejects += [(f"{path}:{n}", f"taken_at {visible(v)!r} is not an ISO 8601 date or date-time")
                    for n, v in zip(out.loc[bad, "_line"], out.loc[bad, "taken_at"])]
        out = out[~bad].assign(taken_at=ts[~bad])
        dup = out["reading_id"].duplicated(keep=False)
        for _, g in out[dup].groupby("reading_id"):
            lines = ", ".join(map(str, g["_line"]))
            rejects += [(f"{path}:{n}", f"the same reading (subject, visit, measure, rater, replicate, side) is on "
                         f"lines {lines}; none of them is used (tell repeats apart with `replicate`)") for n in g["_line"]]
        out = out[~dup]
    rejects.sort(key=lambda x: int(x[0].rsplit(":", 1)[1]))
    return out.drop(columns="_line").reset_index(drop=True), rejects


def _problem(r: dict, declared: dict) -> str | None:
    """What makes one CSV row unusable, or None."""
    for col in REQUIRED:
        if r.get(col) is None:
            return f"row has no `{col}`"
    name = r["measure"]
    if not NAME.match(name):
        return (f"measure {visible(name)!r} is not a name (lower-case letters, digits and _, as in corneometer or "
                "wrinkle_grade)")
    try:
        value = float(r["value"])
    except ValueError:
        return f"value {visible(r['value'])!r} is not a number"
    if not math.isfinite(value):
        return f"value {r['value']!r} is not a finite number"
    d = declared.get(name)
    if d is None:
        return None
    if d["unit"] and r.get("unit") and r["unit"] != d["unit"]:
        return f"{name} is declared in {visible(d['unit'])!r}, this row is in {visible(r['unit'])!r}"
    lo, hi = d["range"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name} {value:g} is outside its declared range [{lo}, {hi}]"
    if d["levels"] is not None and value not in d["levels"]:
        return f"{name} {value:g} is not one of its levels ({', '.join(_level(v) for v in d['levels'])})"
    return None
