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
import io
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


def _read_csv(path: Path, required: tuple[str, ...], kind: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(rows, rejects) of a `kind` CSV: its rows as text (cells stripped, empty ones None), each with `_line`,
    the line of the file it starts on (blank lines and line breaks inside quoted cells counted: Python's `csv`,
    not pandas, which skips blank lines and so numbered the rows after one wrongly); a row with more cells
    than the header has columns, or a stray quote, is a reject, not a row; blank rows (Excel's trailing ",,,")
    are skipped. Raises `InvalidManifest`, naming the line, when the file cannot be used at all: unreadable,
    not UTF-8, a quote never closed, a column repeated (DuckDB, like SQL, does not tell `Arm` from `arm`),
    reserved or `required` and missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidManifest(f"{path}: no such file") from None
    except OSError as e:
        raise InvalidManifest(f"{path}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        said = "UTF-16 text" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else f"not UTF-8 text (byte 0x{raw[e.start]:02x})"
        line = raw.count(b"\n", 0, e.start) + 1
        raise InvalidManifest(f"{path}:{line}: {said}; save the CSV as UTF-8 (in Excel: CSV UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, lines, rows, rejects, end = None, [], [], [], 0  # end: the last line of the record read
    while True:
        try:
            for cells in reader:  # a record starts on the line after the last one's end
                line, end = end + 1, reader.line_num
                if header is None:
                    if "".join(cells).strip():
                        header = _header(path, line, [c.strip() for c in cells], required, kind)
                    continue
                if len(cells) != len(header):
                    while len(cells) > len(header) and not cells[-1].strip():
                        cells.pop()  # empty cells after the last column
                    if len(cells) > len(header):
                        rejects.append((f"{path}:{line}", f"{len(cells)} cells where the header has {len(header)} "
                                        "columns (a comma inside a value? put the value in double quotes); the row is "
                                        "not used"))
                        continue
                    cells += [""] * (len(header) - len(cells))
                lines.append(line)
                rows.append(cells)
            break
        except csv.Error as e:  # a quote never closed took the rest of the file; any other fault, its row
            line, end = end + 1, reader.line_num
            if "end of data" in str(e):
                raise InvalidManifest(f"{path}:{line}: a quoted cell opened on this line is never closed") from None
            rejects.append((f"{path}:{line}", f"not readable as CSV ({e}): a cell holding a quote is put in double "
                                              'quotes, with its own quotes doubled ("a ""b"" c"); the row is not used'))
    if header is None:
        raise InvalidManifest(f"{path}: the file is empty (a {kind} CSV starts with a header: "
                              f"{', '.join(required)}, ...)")
    df = pd.DataFrame(rows, columns=range(len(header)), dtype=object).apply(lambda c: c.str.strip()).replace("", None)
    df.insert(0, "_line", pd.Series(lines, dtype=int))
    df = df[df.drop(columns="_line").notna().any(axis=1)]  # blank rows: Excel's trailing ",,,", blank lines
    for i, name in enumerate(header):  # a column without a name is an empty one left over, or a mistake
        if not name and df[i].notna().any():
            raise InvalidManifest(f"{path}:{df['_line'][df[i].notna()].iloc[0]}: column {i + 1} holds a value but "
                                  "has no name in the header; name it")
    named = [i for i, name in enumerate(header) if name]
    return df[["_line", *named]].set_axis(["_line", *(header[i] for i in named)], axis=1).reset_index(drop=True), \
        rejects


def _header(path: Path, line: int, names: list[str], required: tuple[str, ...], kind: str) -> list[str]:
    """The header's column names, checked: none repeated or reserved, every `required` one there."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if not name:
            continue  # no name: an empty column, or said by the caller
        if name.lower() in seen:
            raise InvalidManifest(f"{path}:{line}: column {visible(name)!r} (column {i}) repeats column "
                                  f"{seen[name.lower()]} (names are compared without case); give each column one name")
        seen[name.lower()] = i
        if name.lower() in RESERVED[kind]:
            raise InvalidManifest(f"{path}:{line}: column {visible(name)!r} (column {i}) is reserved: skintrack "
                                  f"keeps a column of that name itself beside a {kind} CSV's; rename it")
    missing = [c for c in required if c not in names]
    if missing:
        raise InvalidManifest(f"{path}:{line}: the required column{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(f'`{c}`' for c in missing)} {'are' if len(missing) > 1 else 'is'} missing "
                              f"(columns: {', '.join(visible(c) for c in names)})")
    return names


def _timestamps(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return ts.dt.tz_convert(None)


class Manifest:
    """The usable rows of a manifest, indexed for matching, plus the rejected ones."""

    def __init__(self, rows: pd.DataFrame, rejects: list[tuple[str, str]], path: Path):
        self.rows, self.rejects, self.path = rows, rejects, path
        self.used: set[int] = set()
        self._by = {"path": {}, "name": {}, "stem": {}}
        parent = str(path.parent)  # once: a Path made into text per row was most of a large manifest's reading
        for i, f in zip(rows.index, rows["file"]):
            full = os.path.normpath(os.path.join(parent, f))
            for kind, key in (("path", full), ("name", os.path.basename(f)),
                              ("stem", os.path.splitext(os.path.basename(f))[0])):
                self._by[kind].setdefault(key, []).append(i)

    @classmethod
    def read(cls, path) -> Manifest:
        """Read and check a manifest CSV (raises `InvalidManifest` when it cannot be used at all)."""
        path = Path(path)
        df, rejects = _read_csv(path, ("file",), "manifest")
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
    df, rejects = _read_csv(path, ("subject_id",), "subjects")
    rejects += [(f"{path}:{n}", "row has no `subject_id`") for n in df.loc[df["subject_id"].isna(), "_line"]]
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
