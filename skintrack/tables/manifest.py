"""Manifest and subjects CSVs: how a response becomes a subject's visit.

A manifest row is matched to an input by its `file` column: the full path (relative paths are taken
from the manifest's folder), else the file name, else the name without extension (so a manifest of photos
matches the responses named after them). Rows that cannot be used are returned as rejects, the rest apply.

Example
-------
>>> import io, pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
>>> _ = p.write_text("file,subject_id,visit,taken_at\\nS01_D0.json,S01,D0,2024-01-08\\n")
>>> m = Manifest.read(p)
>>> m.match("/anywhere/S01_D0.json")["subject_id"]
'S01'
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from ..errors import InvalidManifest
from ..sinks import visible
from .schema import TABLES

FIXED = ("file", "subject_id", "visit", "taken_at")
# Names a CSV column may not take: skintrack's own columns of the tables and views it is joined with
# (a manifest's columns sit beside `analyses`; a subjects CSV's beside each helper's observations).
RESERVED = {
    "manifest": (set(TABLES["analyses"].names) | {"assigned_at", "_line", "_where"}) - set(FIXED),
    "subjects": {"analysis_id", "assigned_at", "visit", "taken_at", "days", "seq", "value", "baseline_value",
                 "delta", "pct_change", "improved", "is_baseline", "_line"},
    "measures": {"_line", "reading_id", "analysis_id", "source"},
}


def _header(path: Path, kind: str) -> None:
    """Refuse a header that repeats a column (DuckDB, like SQL, does not tell `Arm` from `arm`) or takes a
    reserved name, naming the line, the column and its place."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # said by the CSV reader below, with its own words
    seen: dict[str, int] = {}
    for i, name in enumerate((c.strip() for c in header), 1):
        if name.lower() in seen:
            raise InvalidManifest(f"{path}:1: column {visible(name)!r} (column {i}) repeats column {seen[name.lower()]}"
                                  " (names are compared without case); give each column one name")
        seen[name.lower()] = i
        if name.lower() in RESERVED[kind]:
            raise InvalidManifest(f"{path}:1: column {visible(name)!r} (column {i}) is reserved: skintrack keeps a "
                                  f"column of that name itself beside a {kind} CSV's; rename it")


def _read_csv(path: Path, required: str, kind: str) -> pd.DataFrame:
    _header(path, kind)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidManifest(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InvalidManifest(f"{path}: not a readable CSV ({e})") from None
    df.columns = [c.strip() for c in df.columns]
    if required not in df.columns:
        raise InvalidManifest(f"{path}: the required column `{required}` is missing (columns: "
                              f"{', '.join(df.columns) or 'none'})")
    df = df.apply(lambda col: col.str.strip()).replace("", None)
    df.insert(0, "_line", range(2, len(df) + 2))
    return df


def _timestamps(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return ts.dt.tz_convert(None)


class Manifest:
    """The usable rows of a manifest, indexed for matching, plus the rejected ones."""

    def __init__(self, rows: pd.DataFrame, rejects: list[tuple[str, str]], path: Path):
        self.rows, self.rejects, self.path = rows, rejects, path
        self.used: set[int] = set()
        self._by = {"path": {}, "name": {}, "stem": {}}
        for i, f in zip(rows.index, rows["file"]):
            full = os.path.normpath(os.path.join(path.parent, f))
            for kind, key in (("path", full), ("name", os.path.basename(f)),
                              ("stem", os.path.splitext(os.path.basename(f))[0])):
                self._by[kind].setdefault(key, []).append(i)

    @classmethod
    def read(cls, path) -> Manifest:
        """Read and check a manifest CSV (raises `InvalidManifest` when it cannot be used at all)."""
        path = Path(path)
        df = _read_csv(path, "file", "manifest")
        rejects = []
        where = lambda line: f"{path}:{line}"  # noqa: E731
        missing = df["file"].isna()
        rejects += [(where(n), "row has no `file`") for n in df.loc[missing, "_line"]]
        df = df[~missing]
        dup = df["file"].duplicated(keep=False)
        for f, group in df[dup].groupby("file"):
            lines = ", ".join(map(str, group["_line"]))
            rejects += [(where(n), f"`file` {f} is listed more than once (lines {lines}); none of them is used")
                        for n in group["_line"]]
        df = df[~dup]
        if "taken_at" in df:
            parsed = _timestamps(df["taken_at"])
            bad = df["taken_at"].notna() & parsed.isna()
            rejects += [(where(n), f"taken_at {v!r} is not an ISO 8601 date or date-time")
                        for n, v in zip(df.loc[bad, "_line"], df.loc[bad, "taken_at"])]
            df = df[~bad].assign(taken_at=parsed[~bad])
        return cls(df, rejects, path)

    def match(self, source, photo=None) -> dict | None:
        """The manifest row for an input file (and the photo it came from, if known), or None."""
        for kind, fn in (("path", os.path.normpath), ("name", os.path.basename),
                         ("stem", lambda p: os.path.splitext(os.path.basename(p))[0])):
            for candidate in (source, photo):
                if candidate is None:
                    continue
                hits = self._by[kind].get(fn(str(candidate)), [])
                if len(hits) == 1:
                    self.used.add(hits[0])
                    return self.rows.loc[hits[0]].to_dict()
        return None

    def unmatched_missing(self) -> list[tuple[str, str]]:
        """Rows that matched no input and name a file that does not exist."""
        out = []
        for i, row in self.rows.iterrows():
            full = os.path.join(self.path.parent, row["file"])
            if i not in self.used and not os.path.exists(full):
                out.append((f"{self.path}:{row['_line']}", f"`file` {row['file']} does not exist and matches no input"))
        return out


def read_subjects(path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Read a subjects CSV (`subject_id` plus any columns); numbers stay numbers. Returns (rows, rejects)."""
    path = Path(path)
    df = _read_csv(path, "subject_id", "subjects")
    rejects = [(f"{path}:{n}", "row has no `subject_id`") for n in df.loc[df["subject_id"].isna(), "_line"]]
    df = df[df["subject_id"].notna()]
    dup = df["subject_id"].duplicated(keep=False)
    rejects += [(f"{path}:{n}", f"subject_id {s} is listed more than once; none of its rows is used")
                for n, s in zip(df.loc[dup, "_line"], df.loc[dup, "subject_id"])]
    df = df[~dup].drop(columns="_line")
    for col in df.columns.drop("subject_id"):
        numbers = pd.to_numeric(df[col], errors="coerce")
        if numbers.notna().sum() == df[col].notna().sum():
            df[col] = numbers
    return df.reset_index(drop=True), rejects


def session_problems(rows: list[dict], known_subjects: set, visit_uses: dict) -> tuple[list, list]:
    """Check the sessions a manifest assigns, where they are made. `rows` carry `_line`, `analysis_id`,
    `subject_id`, `visit` (and `replicate` for repeat captures of one visit); `known_subjects` are the
    study's subjects (empty: not checked); `visit_uses` counts the study's other sessions per visit label.

    Returns (rejects, warnings) as (where, what) pairs; a rejected row assigns nothing (fix and re-ingest):
    a subject not in the subjects CSV, or two captures of one subject's visit not told apart by `replicate`.
    A visit label no other session uses is a warning (a typo such as Wk8 for W8, or an unscheduled visit).
    """
    rejects, warnings, groups = [], [], {}
    for r in rows:
        where = r["_where"]
        if known_subjects and r.get("subject_id") is not None and r["subject_id"] not in known_subjects:
            rejects.append((where, f"subject {r['subject_id']!r} is not in the subjects CSV "
                                   f"({len(known_subjects)} subjects known); this row assigns nothing"))
        elif r.get("subject_id") is not None and r.get("visit") is not None:
            groups.setdefault((r["subject_id"], r["visit"], r.get("replicate")), []).append(r)
    for (subject, visit, _), group in groups.items():
        if len({r["analysis_id"] for r in group}) > 1:
            lines = ", ".join(r["_where"].rsplit(":", 1)[-1] for r in group)
            rejects += [(r["_where"], f"{subject} {visit} is given by lines {lines}: two captures of one visit; "
                                      "tell repeat captures apart in a `replicate` column, or fix the visit")
                        for r in group]
    uses = dict(visit_uses)
    for r in rows:
        if r.get("visit") is not None:
            uses[r["visit"]] = uses.get(r["visit"], 0) + 1
    common = sorted(v for v, n in uses.items() if n > 1)
    for r in rows:
        if r.get("visit") is not None and uses[r["visit"]] == 1 and len(uses) > 1:
            warnings.append((r["_where"], f"visit {r['visit']!r} is used by this session only (other visits: "
                                          f"{', '.join(common) or 'none'}); a typo?"))
    return rejects, warnings
