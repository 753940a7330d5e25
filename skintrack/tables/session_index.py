"""The session index, kept in the lake and brought up to date by each write for the subjects it touched.

One row per ok analysis with a subject: days since the subject's first session, `seq` (the subject's
sessions in time order: days, then visit label in natural order, then id) and `dup` (its session holds
more than one analysis). Every row depends on its own subject's sessions only, so an ingest rewrites the
rows of the subjects it changed and nothing else: the index costs nothing to open at any size.

Example
-------
>>> import tempfile
>>> from skintrack.tables import store
>>> con = store.connect(tempfile.mkdtemp(), write=True)
>>> with store.transaction(con, "example"):
...     update(con, ["S1"])
>>> con.execute("select count(*) from lake.session_index").fetchall()
[(0,)]
"""
from __future__ import annotations

import duckdb

from .store import LAKE

# Visit labels in natural order (D0 < W4 < W12), the tie-breaker when times are equal or missing.
NATURAL_VISIT = ("regexp_replace(visit, '[0-9]+', '', 'g'), TRY_CAST(regexp_extract(visit, '([0-9]+)', 1) AS INTEGER), "
                 "visit")

INDEX_SQL = f"""
    WITH base AS (
        SELECT s.analysis_id, s.subject_id, s.visit, s.taken_at,
               date_diff('second', min(s.taken_at) OVER (PARTITION BY s.subject_id), s.taken_at) / 86400.0 AS days,
               count(*) OVER (PARTITION BY s.subject_id, coalesce(s.visit, s.analysis_id)) > 1 AS dup
        FROM {LAKE}.main.sessions s
        WHERE s.subject_id IS NOT NULL {{subjects}}
          AND s.analysis_id IN (SELECT analysis_id FROM {LAKE}.main.analyses WHERE ok))
    SELECT analysis_id, subject_id, visit, taken_at, days, dup,
           row_number() OVER (PARTITION BY subject_id ORDER BY days NULLS LAST,
               regexp_replace(visit, '[0-9]+', '', 'g') NULLS LAST,
               TRY_CAST(regexp_extract(visit, '([0-9]+)', 1) AS INTEGER) NULLS LAST, visit NULLS LAST, analysis_id) AS seq
    FROM base"""


def update(con: duckdb.DuckDBPyConnection, subjects=None) -> None:
    """Rebuild the index rows of `subjects` (every subject when None), inside the caller's transaction."""
    if subjects is None:
        con.execute(f"DELETE FROM {LAKE}.main.session_index")
        con.execute(f"INSERT INTO {LAKE}.main.session_index {INDEX_SQL.format(subjects='')}")
        return
    subjects = sorted({s for s in subjects if s is not None})
    if subjects:
        con.execute(f"DELETE FROM {LAKE}.main.session_index WHERE subject_id IN (SELECT unnest($s))", {"s": subjects})
        con.execute(f"INSERT INTO {LAKE}.main.session_index "
                    f"{INDEX_SQL.format(subjects='AND s.subject_id IN (SELECT unnest($s))')}", {"s": subjects})
