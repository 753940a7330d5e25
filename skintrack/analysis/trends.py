"""Per-person trends across repeated sessions, computed in DuckDB.

A metric's observations are one value per subject and analysis visit, chosen by the plan's rules
(`skintrack.analysis.selection`: capture QC, visit windows, intercurrent events; the latest capture of a
session). The SQL is built only from the catalog (table and column names are ours); the metric's key
parts, the schedule and every threshold are bound as parameters.

Example
-------
>>> sql, params = metric_source("severity.pores.chin")
>>> params
{'m_feature': 'pores', 'm_region': 'chin'}
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UsageError, finite
from ..sinks import sql_identifier
from ..tables.catalog import metric_info
from ..tables.session_index import NATURAL_VISIT
from .selection import Rules, metric_source, observations_sql, records_sql  # noqa: F401 - metric_source is public here
from .stats import t_interval, wilson

# at most this many subjects left out are picked in the query (a filter DuckDB applies in its scans, 0.2 s at 1M
# records); `list_contains` is linear in the list (20,000 subjects: 4 s), so more are picked from all subjects
FEW_LEFT_OUT = 200


def _change_sql(key: str, r: Rules) -> tuple[str, dict]:
    """CTEs ending in `change`: every observation of a subject with a value at the baseline visit,
    relative to it. Subjects without one are left out (see `baseline_exclusions`), never re-baselined.
    `changes` is every observation, with its subject's baseline and change where there is one (`based`)."""
    sql, params = observations_sql(key, r)
    better = metric_info(key)["better"]
    improved = {"higher": "value > baseline_value", "lower": "value < baseline_value"}.get(better, "NULL")
    unbased = "NULL" if improved == "NULL" else "false"  # a column's type stays what `change` gives it
    columns = ("subject_id, visit, taken_at, days, value, baseline_value, delta, pct_change, improved, is_baseline, "
               "analysis_id, seq")
    sql += f""",
    base AS (SELECT subject_id, value AS baseline_value, seq AS baseline_seq FROM tl WHERE visit = $baseline),
    everyone AS (  -- a subject's capture is its `seq`: the 32-character id stays out of the joins
        SELECT tl.subject_id, tl.visit, tl.taken_at, tl.days, tl.value, b.baseline_value, b.baseline_seq,
               tl.value - b.baseline_value AS delta, tl.seq = b.baseline_seq AS is_baseline, tl.analysis_id, tl.seq
        FROM tl LEFT JOIN base b USING (subject_id)),
    changes AS (
        SELECT subject_id, visit, taken_at, days, value, baseline_value, delta,
               CASE WHEN baseline_value <> 0 THEN 100 * delta / abs(baseline_value) END AS pct_change,
               CASE WHEN baseline_seq IS NULL THEN {unbased} ELSE {improved} END AS improved,
               coalesce(is_baseline, false) AS is_baseline, analysis_id, seq, baseline_seq IS NOT NULL AS based
        FROM everyone),
    change AS (SELECT {columns} FROM changes WHERE based)"""
    return sql, params


def baseline_exclusions(study, key: str, r: Rules, among: list) -> pd.DataFrame:
    """Why the subjects `among`, who have observations of `key` but no usable value at the baseline visit, have
    none: subject_id, reason. They are left out of every change analysis."""
    sql, params = records_sql(key, r)
    few = len(among) <= FEW_LEFT_OUT
    # a few subjects' records: computed in the query unless the study holds them as a table already
    df = study.sql(f"""WITH {sql},
        per AS (SELECT subject_id, count(*) FILTER (WHERE visit = $baseline) AS at_base,
                       min(reason) FILTER (WHERE visit = $baseline) AS why
                FROM recs {'WHERE list_contains($among, subject_id)' if few else ''} GROUP BY subject_id)
        SELECT subject_id,
               CASE WHEN subject_id NOT IN (SELECT subject_id FROM session_index WHERE visit = $baseline)
                        THEN 'no ' || $baseline || ' session'
                    WHEN at_base = 0 THEN 'no value of the metric at ' || $baseline
                    ELSE $baseline || ' ' || why END AS reason
        FROM per ORDER BY subject_id""", {**params, "among": list(among)}, make_records=not few)
    return df[df["subject_id"].isin(among)].reset_index(drop=True)  # (the query picked them when few)


def visit_days(study) -> dict:
    """{visit label: median days since each subject's first session}, in the order the visits happen."""
    days = study.sql("SELECT visit, median(days) AS d FROM session_index WHERE visit IS NOT NULL GROUP BY visit "
                     f"ORDER BY d NULLS LAST, {NATURAL_VISIT}")
    return dict(zip(days["visit"], days["d"]))


def _ordered_sql(study, select: str, params: dict, order: str = "subject_id, seq"):
    if "$visits" in order:
        params = {**params, "visits": study.visits}
    return study.sql(f"SELECT * FROM ({select}) ORDER BY {order}", params)


def timeline(study, key: str, r: Rules) -> pd.DataFrame:
    """subject_id, visit, taken_at, days (since the subject's first session), value."""
    sql, params = observations_sql(key, r)
    return _ordered_sql(study, f"WITH {sql} SELECT subject_id, visit, taken_at, days, value, seq FROM tl",
                        params).drop(columns="seq")


def change_from_baseline(study, key: str, r: Rules) -> pd.DataFrame:
    """subject_id, visit, taken_at, value, baseline_value, delta, pct_change (in %), improved, is_baseline,
    days (since the subject's first session).

    The baseline is the rules' visit label. Subjects without a value there are left out and listed, with why, in
    ``.attrs["excluded"]`` (records of subject_id and reason). Baseline rows are listed (delta 0, is_baseline) but are no change: every
    analysis of changes leaves them out. `pct_change` divides by the baseline's absolute value (NULL when
    it is 0); `improved` follows the catalog's better-direction (NULL when the metric has none).
    """
    sql, params = _change_sql(key, r)
    # one pass over the records: the subjects without a baseline value are dropped here, to be listed with why
    df = _ordered_sql(study, f"WITH {sql} SELECT subject_id, visit, taken_at, value, baseline_value, delta, "
                      "pct_change, improved, is_baseline, days, seq, based FROM changes", params).drop(columns="seq")
    based = df.pop("based")
    among = sorted(set(df["subject_id"][~based]))
    if among:
        df = df[based.to_numpy()].reset_index(drop=True)
    df.attrs["excluded"] = baseline_exclusions(study, key, r, among).to_dict("records") if among else []
    df.attrs["baseline"] = r.baseline
    return df


def slopes(study, key: str, r: Rules) -> pd.DataFrame:
    """Per subject: n, slope_per_30d, intercept, r2, first, last (least squares of value on days).

    slope and intercept need two distinct days; r2 is 1 when the values do not vary (SQL's REGR_R2).
    """
    sql, params = observations_sql(key, r)
    return study.sql(f"""WITH {sql}
        SELECT subject_id, count(*) AS n, regr_slope(value, days) * 30 AS slope_per_30d,
               regr_intercept(value, days) AS intercept, regr_r2(value, days) AS r2,
               arg_min(value, days) AS first, arg_max(value, days) AS last
        FROM tl WHERE days IS NOT NULL GROUP BY subject_id ORDER BY subject_id""", params)


def group_columns(study, by) -> list[str]:
    """Check grouping columns against what the study has (never pasted as user text)."""
    by = [by] if isinstance(by, str) else list(by)
    known = {"visit", "subject_id"} | set(study.columns("subjects")) | _session_meta(study)
    for col in by:
        if col not in known:
            raise UsageError(f"cannot group by {col!r}: the study has {', '.join(sorted(known))}")
    return by


def _session_meta(study) -> set:
    """The manifest's free columns (kept as session metadata)."""
    return set(study.columns("sessions")) - {"analysis_id", "subject_id", "visit", "taken_at", "assigned_at"}


def _with_subjects(study, by: list[str]) -> str:
    subject_cols, session_cols = set(study.columns("subjects")) - {"subject_id"}, _session_meta(study)
    joins = ""
    if subject_cols & set(by):
        joins += " LEFT JOIN subjects USING (subject_id)"
    if session_cols & set(by):
        joins += " LEFT JOIN (SELECT analysis_id AS sid, * EXCLUDE (analysis_id, subject_id, visit, taken_at, " \
                 "assigned_at) FROM sessions) ses ON ses.sid = change.analysis_id"
    return joins


def cohort(study, key: str, by, r: Rules) -> pd.DataFrame:
    """Per group: n, mean, sd, sem, ci_low, ci_high, median, q1, q3, and the mean change from the baseline
    visit over the group's non-baseline observations (change_n, change_mean, change_ci_low, change_ci_high).
    `by` defaults to visit and arm (visit alone when the study has no arms) and must include the visit
    (a subject's visits are not independent observations to pool)."""
    if by is None:
        by = ("visit", "arm") if "arm" in study.columns("subjects") else ("visit",)
    by = group_columns(study, by)
    if "visit" not in by:
        raise UsageError(f"cohort by {', '.join(by)} without visit would pool each subject's visits as if they "
                         "were independent; group by visit too (e.g. by=('visit', 'arm')), or use mmrm")
    sql, params = _change_sql(key, r)
    cols = ", ".join(map(sql_identifier, by))
    order = ", ".join("list_position($visits, visit)" if c == "visit" else sql_identifier(c) for c in by)
    after = "FILTER (WHERE NOT is_baseline)"  # the changes after each subject's baseline
    # the quartiles in one aggregate: one sort of each group's values, not three (the median is the 0.5 one)
    df = _ordered_sql(study, f"""WITH {sql}
        SELECT {cols}, n, mean, sd, quartiles[1] AS q1, quartiles[2] AS median, quartiles[3] AS q3, change_n,
               change_mean, change_sd FROM (
            SELECT {cols}, count(value) AS n, avg(value) AS mean, stddev_samp(value) AS sd,
                   quantile_cont(value, [0.25, 0.5, 0.75]) AS quartiles, count(delta) {after} AS change_n,
                   avg(delta) {after} AS change_mean, stddev_samp(delta) {after} AS change_sd
            FROM changes AS change{_with_subjects(study, by)} GROUP BY ALL)""", params, order)
    df["sem"] = df["sd"] / np.sqrt(df["n"])
    df["ci_low"], df["ci_high"] = t_interval(df["mean"], df["sd"], df["n"])
    df["change_ci_low"], df["change_ci_high"] = t_interval(df["change_mean"], df["change_sd"], df["change_n"])
    return df[by + ["n", "mean", "sd", "sem", "ci_low", "ci_high", "median", "q1", "q3", "change_n", "change_mean",
                    "change_ci_low", "change_ci_high"]]


def responders(study, key: str, threshold: float, relative: bool, r: Rules) -> pd.DataFrame:
    """Per visit and arm (after baseline): n, responders (improved by at least `threshold`, in the metric's
    unit or in % when `relative`), rate, and its Wilson 95% interval."""
    better = metric_info(key)["better"]
    if better not in ("higher", "lower"):
        raise UsageError(f"{key} has no better-direction, so no one can respond on it")
    threshold = finite(threshold, "the responder threshold")
    sql, params = _change_sql(key, r)
    gain = "pct_change" if relative else "delta"
    sign = "" if better == "higher" else "-"
    arm = "arm" if "arm" in study.columns("subjects") else "NULL AS arm"
    df = _ordered_sql(study, f"""WITH {sql}
        SELECT visit, {arm}, count(*) AS n, count(*) FILTER (WHERE {sign}{gain} >= $threshold) AS responders
        FROM change LEFT JOIN subjects USING (subject_id)
        WHERE NOT is_baseline AND {gain} IS NOT NULL GROUP BY ALL""", {**params, "threshold": threshold},
                      "list_position($visits, visit), arm")
    df["rate"] = df["responders"] / df["n"]
    df["ci_low"], df["ci_high"] = wilson(df["responders"], df["n"])
    return df
