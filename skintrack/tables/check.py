"""`skintrack check STUDY`: every problem of a study's store and of its assignments, with where it is.

The store: the catalog opens, and every data file it lists (for every version kept) exists, has its
recorded size and a readable Parquet footer. The assignments: a subject in the manifest but not in the
subjects CSV, two captures of one subject's visit not told apart by `replicate`, a visit label no other
session uses (a typo such as Wk8), a subject without an arm when others have one, an analysis no manifest
row assigns. Each is a row: where, problem.

Example
-------
>>> import tempfile
>>> from skintrack.tables.store import connect
>>> problems(connect(tempfile.mkdtemp())).columns.tolist()
['where', 'problem']
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from ..errors import StoreError
from . import store

COLUMNS = ["where", "problem"]


def _columns(con, view: str) -> set:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def problems(con) -> pd.DataFrame:
    """One row per problem found in the study's views (empty when there is none)."""
    replicate = "s.replicate" if "replicate" in _columns(con, "sessions") else "NULL"
    checks = [
        """SELECT coalesce(a.source, s.analysis_id) AS "where",
                  'subject ' || s.subject_id || ' is not in the subjects CSV' AS problem
           FROM sessions s LEFT JOIN analyses_raw a USING (analysis_id)
           WHERE s.subject_id IS NOT NULL AND (SELECT count(*) FROM subjects) > 0
             AND s.subject_id NOT IN (SELECT subject_id FROM subjects)""",
        f"""SELECT s.subject_id || ' ' || s.visit AS "where",
                   count(*) || ' analyses for one visit (' || string_agg(a.source, ', ' ORDER BY a.source) ||
                   '); tell repeat captures apart in a `replicate` column' AS problem
            FROM sessions s JOIN analyses_raw a USING (analysis_id)
            WHERE s.subject_id IS NOT NULL AND s.visit IS NOT NULL AND a.ok
            GROUP BY s.subject_id, s.visit, {replicate} HAVING count(*) > 1""",
        """SELECT any_value(coalesce(a.source, s.analysis_id)) AS "where",
                  'visit ' || s.visit || ' is used by one session only (' || any_value(s.subject_id) ||
                  '); a typo?' AS problem
           FROM sessions s LEFT JOIN analyses_raw a USING (analysis_id)
           WHERE s.visit IS NOT NULL GROUP BY s.visit
           HAVING count(*) = 1 AND (SELECT count(DISTINCT visit) FROM sessions) > 1""",
        """SELECT a.source AS "where", 'no manifest row assigns this analysis to a subject' AS problem
           FROM analyses_raw a WHERE a.sentinel IS NULL AND a.analysis_id NOT IN (SELECT analysis_id FROM sessions
                                                            WHERE subject_id IS NOT NULL)""",
    ]
    if "arm" in _columns(con, "subjects"):
        checks.append("""SELECT 'subject ' || subject_id AS "where", 'has no arm while others have one' AS problem
                         FROM subjects WHERE arm IS NULL""")
    sql = " UNION ALL ".join(f"SELECT * FROM ({c})" for c in checks)
    return con.execute(f'SELECT * FROM ({sql}) ORDER BY "where", problem').to_arrow_table().to_pandas()


def store_problems(study) -> pd.DataFrame:
    """The damaged parts of a study's store: a catalog that cannot be opened, and each data or delete file
    the catalog lists that is missing, of another size than recorded, or without a readable Parquet footer."""
    study = Path(study)
    try:
        if not store.is_study(study):
            store.check_catalog(study)
            return pd.DataFrame(columns=COLUMNS)
        con = store.connect(study, views=False)  # the catalog alone: no views are needed to list its files
        data_path = store.catalog_of(study)[1]
        files = store.retry_busy(_listed_files, con, data_path)
    except (StoreError, duckdb.Error) as e:
        return pd.DataFrame([(str(study / store.CATALOG), str(e))], columns=COLUMNS)
    rows = []
    for path, size in files:
        try:
            actual = os.stat(path).st_size
        except OSError as e:
            rows.append((path, f"listed by the catalog but {e.strerror.lower()}"))
            continue
        if actual != size:
            rows.append((path, f"{actual} bytes where the catalog recorded {size} (truncated or overwritten)"))
            continue
        try:
            pq.read_metadata(path)
        except Exception as e:  # noqa: BLE001 - any unreadable footer is the same finding
            rows.append((path, f"no readable Parquet footer ({type(e).__name__}: {e})"))
    if rows:  # a compaction may have merged or expired a file since it was listed: only a file still listed is damage
        with contextlib.suppress(StoreError, duckdb.Error):
            listed = {path for path, _ in store.retry_busy(_listed_files, con, data_path)}
            rows = [row for row in rows if row[0] in listed]
    return pd.DataFrame(rows, columns=COLUMNS)


def _listed_files(con, data_path: str) -> list[tuple[str, int]]:
    """(absolute path, recorded size) of every data and delete file the catalog lists."""
    rows = con.execute(f"""
        WITH t AS (SELECT DISTINCT table_id, schema_id, path, path_is_relative FROM {store.META}.ducklake_table),
             s AS (SELECT DISTINCT schema_id, path, path_is_relative FROM {store.META}.ducklake_schema),
             f AS (SELECT table_id, path, path_is_relative, file_size_bytes FROM {store.META}.ducklake_data_file
                   WHERE data_file_id NOT IN (SELECT data_file_id FROM {store.META}.ducklake_files_scheduled_for_deletion)
                   UNION ALL
                   SELECT table_id, path, path_is_relative, file_size_bytes FROM {store.META}.ducklake_delete_file)
        SELECT f.path, f.path_is_relative, t.path, t.path_is_relative, s.path, s.path_is_relative, f.file_size_bytes
        FROM f JOIN t USING (table_id) JOIN s USING (schema_id)""").fetchall()
    out = []
    for fpath, frel, tpath, trel, spath, srel, size in rows:
        base = Path(data_path) / spath if srel else Path(spath)
        base = base / tpath if trel else Path(tpath)
        out.append((str(base / fpath) if frel else fpath, int(size)))
    return sorted(out)
