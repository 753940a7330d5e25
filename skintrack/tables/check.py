"""`skintrack check STUDY`: every problem of assignment in a study, with where it is.

A subject in the manifest but not in the subjects CSV, two captures of one subject's visit not told
apart by `replicate`, a visit label no other session uses (a typo such as Wk8), a subject without an
arm when others have one, an analysis no manifest row assigns. Each is a row: where, problem.

Example
-------
>>> import tempfile
>>> from skintrack.tables.store import connect
>>> problems(connect(tempfile.mkdtemp())).columns.tolist()
['where', 'problem']
"""
from __future__ import annotations

import pandas as pd


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
           FROM analyses_raw a WHERE a.analysis_id NOT IN (SELECT analysis_id FROM sessions
                                                            WHERE subject_id IS NOT NULL)""",
    ]
    if "arm" in _columns(con, "subjects"):
        checks.append("""SELECT 'subject ' || subject_id AS "where", 'has no arm while others have one' AS problem
                         FROM subjects WHERE arm IS NULL""")
    sql = " UNION ALL ".join(f"SELECT * FROM ({c})" for c in checks)
    return con.sql(f'SELECT * FROM ({sql}) ORDER BY "where", problem').to_arrow_table().to_pandas()
