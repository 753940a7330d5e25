"""Which capture is a subject's value at a visit: the plan's rules, in one place, as SQL.

Every ok analysis with a subject and a value of the metric is a *record*. A record is *used* unless a rule
of the plan leaves it out, and says why:

* capture QC: a flagged capture (when the plan excludes them), compared with the subject's capture at the
  plan's baseline visit;
* visit windows (``windows``): ``exclude`` leaves out a capture outside its visit's window (study day from
  the subject's baseline capture, calendar days); ``nearest`` maps each capture to the visit whose window
  holds it (the nearest target when two do) and leaves out one that no window holds; ``nominal`` takes the
  labels as they are;
* intercurrent events (the estimand's ``hypothetical`` strategy): captures after the first rescue product
  use (the manifest's ``rescue``) or after the last visit on treatment (the subjects CSV's
  ``discontinued_after``);
* the API generation (``generation``): a value another generation measured, when the plan restricts the
  analyses to one; a bridge (`skintrack.analysis.instrument.bridge`) may instead put every generation's
  values on one scale (``offsets``: added to the values each generation measured);
* one value per subject and analysis visit: the capture nearest the target (``nearest``), then the latest.

Helpers, models, the report and the ADaM export all read the same records (`records_sql`), so the
numbers printed and the data handed over cannot disagree. The SQL is portable (Spark runs it too).

Example
-------
>>> sql, params = records_sql("score.water", Rules(baseline="D0"))
>>> "recs AS" in sql and params["baseline"]
'D0'
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..tables.catalog import metric_info
from .qc import FLAG_COLUMNS, FLAG_SQL, FLAGGED, REASONS, QCLimits, reference_sql

TRUTHY = ("1", "true", "yes", "y")
# records_sql's CTEs are enclosed in these comments, so that a study can compute them once per version and
# metric and read them from there (`Study.sql`); other engines read the comments as comments
RECORDS_START, RECORDS_END = "/* records */", "/* end of records */"


@dataclass(frozen=True)
class Rules:
    """How captures become values. `baseline` is the visit changes are taken from; `anchor` the plan's
    baseline visit, day 0 of the schedule ((label, day, window), ... in visit order) and the reference of
    capture QC; `rescue` and `discontinuation` say whether those columns exist and their strategy
    ("hypothetical" leaves out what follows the event)."""

    baseline: str | None = None
    anchor: str | None = None
    exclude_flagged: bool = False
    windows: str = "nominal"
    schedule: tuple = ()
    rescue: str | None = None
    discontinuation: str | None = None
    generation: str | None = None
    offsets: tuple = ()  # ((generation, offset added to its values), ...)
    several: bool = True  # some session holds several captures (`Study.several_captures`): one to choose
    keyed: bool = False  # the lake's integer keys join the metric to the index (`Study.keyed`)
    limits: QCLimits = field(default_factory=QCLimits)

    @property
    def windowed(self) -> bool:
        return self.windows != "nominal" and self.anchor is not None and any(
            w is not None and d is not None for _, d, w in self.schedule)


def rules(study, exclude_flagged: bool | None = None, baseline: str | None = None) -> Rules:
    """The plan's rules for `study` (QC flagged captures as the plan says unless `exclude_flagged` is given)."""
    plan = study.plan
    strategies = plan.estimand.get("strategies", {})
    sessions, subjects = set(study.columns("sessions")), set(study.columns("subjects"))
    return Rules(baseline=baseline or plan.baseline, anchor=plan.baseline,
                 exclude_flagged=plan.qc == "exclude" if exclude_flagged is None else exclude_flagged,
                 windows=plan.windows, schedule=tuple((v.label, v.day, v.window) for v in plan.visits),
                 several=study.several_captures, keyed=study.keyed,
                 rescue=strategies.get("rescue") if "rescue" in sessions else None, generation=plan.generation,
                 discontinuation=strategies.get("discontinuation") if "discontinued_after" in subjects else None)


def metric_source(key: str, on: str = "analysis_id") -> tuple[str, dict]:
    """SQL selecting (`on`, value) of one metric, from the catalog's table and column; `on` is the analysis's
    id, or its integer key (`skintrack.tables.keys`)."""
    info = metric_info(key)
    table, column = info["table"], info["column"]
    if table == "scores":
        return f"SELECT {on}, value FROM scores WHERE metric = $m_metric", {"m_metric": key[len("score."):]}
    if table in ("counts", "areas", "severities"):
        return (f"SELECT {on}, value FROM {table} WHERE feature = $m_feature AND "
                "region IS NOT DISTINCT FROM $m_region", {"m_feature": info["feature"], "m_region": info["region"]})
    if table == "measures":  # the mean of a subject's readings at a visit (raters, replicates, sides)
        return (f"SELECT {on}, avg(value) AS value FROM measures WHERE measure = $m_measure GROUP BY {on}",
                {"m_measure": info["feature"]})
    if table == "wrinkles":
        return (f"SELECT {on}, CAST({column} AS DOUBLE) AS value FROM wrinkles WHERE region = $m_region",
                {"m_region": info["region"]})
    source = "analyses_raw" if table == "analyses" else table
    return f"SELECT {on}, CAST({column} AS DOUBLE) AS value FROM {source}", {}


def _schedule_params(r: Rules) -> dict:
    out = {}
    for k, (label, day, window) in enumerate(r.schedule):
        out.update({f"w_label{k}": label, f"w_day{k}": day, f"w_width{k}": window, f"w_pos{k}": k})
    return out


def _case(r: Rules, column: str, value: str) -> str:
    """CASE column WHEN label_k THEN value_k ... END over the schedule (portable: no table of the schedule)."""
    whens = " ".join(f"WHEN $w_label{k} THEN $w_{value}{k}" for k in range(len(r.schedule)))
    return f"CASE {column} {whens} END" if whens else "NULL"


def records_sql(key: str, r: Rules) -> tuple[str, dict]:
    """CTEs ending in `recs`: every record of `key` (subject_id, visit as labelled, avisit the analysis
    visit, taken_at, days since the first session, study_day, value, analysis_id, seq) with `reason`, NULL
    for the records used, and `used` (the same without building the text: every reason's text is whole where
    its condition holds)."""
    on = "analysis_key" if r.keyed else "analysis_id"  # the join to the session index (tables.keys)
    source, params = metric_source(key, on)
    params = {**params, "baseline": r.baseline, "anchor": r.anchor, **_schedule_params(r)}
    ctes, joins, why = [], [], []  # why: (condition, the reason it gives), the first that holds is the reason
    if r.offsets:
        shift = " ".join(f"WHEN $o_gen{k} THEN $o_off{k}" for k in range(len(r.offsets)))
        source = (f"SELECT s.{on}, s.value + CASE g.api_generation {shift} ELSE 0 END AS value FROM ({source}) s "
                  f"LEFT JOIN analyses_raw g USING ({on})")
        for k, (gen, offset) in enumerate(r.offsets):
            params.update({f"o_gen{k}": gen, f"o_off{k}": float(offset)})
    if r.generation and not key.startswith("measure."):  # an instrument's readings have no API generation
        joins.append(f"LEFT JOIN (SELECT {on} AS g_on, api_generation FROM analyses_raw) g ON g.g_on = j.{on}")
        why.append(("g.api_generation IS DISTINCT FROM $generation", "'measured by API generation ' || "
                    "coalesce(g.api_generation, 'unknown') || '; the plan analyses ' || $generation || ' only'"))
        params["generation"] = r.generation
    captures = f"FROM m JOIN session_index i USING ({on})"
    ids = "i.analysis_id, i.analysis_key" if r.keyed else "i.analysis_id"
    if r.exclude_flagged:  # the capture's QC columns are in the session index: only its subject's reference joins,
        # and before the metric's values do, so that a query keeping the records used filters the captures
        # before that join (benchmarks/study.py: slopes at 1M, 15% less CPU)
        ctes.append(reference_sql(r.several, r.anchor))
        params.update(r.limits.params(), qc_baseline=r.anchor)
        ctes.append(f"flagged AS (SELECT *, {FLAG_COLUMNS} FROM session_index "
                    "LEFT JOIN qc_reference ON ref_subject = subject_id)")
        captures = f", {', '.join(FLAG_SQL)} FROM m JOIN flagged i USING ({on})"
        why.append((FLAGGED, f"'excluded by capture QC (' || {REASONS} || ')'"))
    study_day = "NULL"
    if r.windowed or r.rescue == "hypothetical":
        ctes.append("bday AS (SELECT subject_id AS bday_subject, min(taken_at) AS base_at FROM session_index "
                    "WHERE visit = $anchor GROUP BY subject_id)")
        joins.append("LEFT JOIN bday ON bday.bday_subject = j.subject_id")
        study_day = "date_diff('day', CAST(bday.base_at AS DATE), CAST(j.taken_at AS DATE))"
    avisit, dist = "j.visit", "CAST(NULL AS DOUBLE)"
    if r.windowed:
        target, width = _case(r, "j.visit", "day"), _case(r, "j.visit", "width")
        if r.windows == "exclude":
            why.append((f"j.visit <> $anchor AND {study_day} IS NOT NULL AND {width} IS NOT NULL AND "
                        f"abs({study_day} - {target}) > {width}",
                        f"'outside the window of ' || j.visit || ' (day ' || CAST({study_day} AS VARCHAR) || ')'"))
        else:  # nearest: the visit whose window holds the capture, the nearest target when two do
            dists = [f"CASE WHEN $w_label{k} <> $anchor AND abs({study_day} - $w_day{k}) <= $w_width{k} THEN "
                     f"abs({study_day} - $w_day{k}) END" for k in range(len(r.schedule))]
            best = f"least({', '.join(dists)})" if len(dists) > 1 else dists[0]
            pick = " ".join(f"WHEN ({d}) = ({best}) THEN $w_label{k}" for k, d in enumerate(dists))
            avisit = f"CASE WHEN j.visit = $anchor OR {study_day} IS NULL THEN j.visit ELSE CASE {pick} END END"
            dist = f"CASE WHEN j.visit = $anchor OR {study_day} IS NULL THEN 0 ELSE {best} END"
            why.append((f"j.visit <> $anchor AND {study_day} IS NOT NULL AND ({best}) IS NULL",
                        f"'in no visit window (day ' || CAST({study_day} AS VARCHAR) || ')'"))
    if r.rescue == "hypothetical":
        ctes.append(f"resc AS (SELECT subject_id AS resc_subject, min(taken_at) AS rescue_at FROM sessions WHERE "
                    f"lower(CAST(rescue AS VARCHAR)) IN ({', '.join(repr(t) for t in TRUTHY)}) GROUP BY subject_id)")
        joins.append("LEFT JOIN resc ON resc.resc_subject = j.subject_id")
        why.append(("j.visit <> $anchor AND j.taken_at >= resc.rescue_at",
                    "'after rescue product use (hypothetical strategy)'"))
    if r.discontinuation == "hypothetical":
        joins.append("LEFT JOIN (SELECT subject_id AS disc_subject, discontinued_after FROM subjects) disc "
                     "ON disc.disc_subject = j.subject_id")
        why.append((f"{_case(r, 'j.visit', 'pos')} > {_case(r, 'disc.discontinued_after', 'pos')}",
                    "'after the last visit on treatment (hypothetical strategy)'"))
    cases = [f"CASE WHEN {cond} THEN {text} END" for cond, text in why]
    reason = f"coalesce({', '.join(cases)})" if len(cases) > 1 else cases[0] if cases else "CAST(NULL AS VARCHAR)"
    # `used` is `reason IS NULL` without building the text
    used = f"NOT ({' OR '.join(f'coalesce({cond}, false)' for cond, _ in why)})" if why else "true"
    pick = ("row_number() OVER (PARTITION BY subject_id, coalesce(avisit, analysis_id), used "
            "ORDER BY dist NULLS LAST, taken_at DESC NULLS LAST, analysis_id)")
    if r.windows == "nearest":  # the window picks the visit: every record used is ranked, among those used
        ranked = f"SELECT *, CASE WHEN used THEN {pick} ELSE 1 END AS pick FROM r0"
    elif not r.several:  # no visit holds two captures: nothing to choose (and r0 is read once, not materialized)
        ranked = "SELECT *, 1 AS pick FROM r0"
    else:  # only where a visit holds several captures (a session's `dup` is its whole visit's): at 1M records,
        # a window over every row was the records' largest cost
        ranked = (f"SELECT r0.*, pick FROM r0 LEFT JOIN (SELECT analysis_id AS picked_id, {pick} AS pick FROM r0 "
                  "WHERE used AND coalesce(dup, false)) p ON picked_id = analysis_id")
    sql = RECORDS_START + "".join(c + ",\n" for c in ctes) + f"""
    m AS ({source}),
    j AS (SELECT i.subject_id, i.visit, i.taken_at, i.days, i.seq, i.dup, m.value, {ids}
          {captures} WHERE m.value IS NOT NULL),
    r0 AS (
        SELECT j.subject_id, j.visit, j.taken_at, j.days, j.seq, j.dup, j.value, j.analysis_id, {avisit} AS avisit,
                  {study_day} AS study_day, {dist} AS dist, {reason} AS why, {used} AS used
           FROM j {' '.join(joins)}),
    ranked AS ({ranked}),
    recs AS (SELECT subject_id, visit, avisit, taken_at, days, study_day, value, analysis_id, seq,
                    coalesce(why, CASE WHEN pick > 1 THEN 'another capture of this visit is used' END) AS reason,
                    used AND NOT coalesce(pick > 1, false) AS used
             FROM ranked)""" + RECORDS_END
    return sql, params


def observations_sql(key: str, r: Rules) -> tuple[str, dict]:
    """CTEs ending in `tl` (subject_id, visit, taken_at, days, value, analysis_id, seq): the records used,
    each at its analysis visit."""
    sql, params = records_sql(key, r)
    return sql + """,
    tl AS (SELECT subject_id, avisit AS visit, taken_at, days, value, analysis_id, seq FROM recs
           WHERE used)""", params


def out_of_window(study) -> pd.DataFrame:
    """Every capture outside its visit's window (study day from the subject's capture at the plan's baseline
    visit), and what the plan does with it: where (the response file), problem."""
    r = rules(study)
    if not any(w is not None and d is not None for _, d, w in r.schedule) or r.anchor is None:
        return pd.DataFrame(columns=["where", "problem"])
    target, width = _case(r, "i.visit", "day"), _case(r, "i.visit", "width")
    day = "date_diff('day', CAST(b.base_at AS DATE), CAST(i.taken_at AS DATE))"
    fate = {"exclude": "left out of the analyses", "nearest": "analysed at the visit whose window holds it, if any",
            "nominal": "analysed at its visit all the same (windows = nominal)"}[r.windows]
    return study.sql(f"""
        WITH b AS (SELECT subject_id, min(taken_at) AS base_at FROM session_index WHERE visit = $anchor
                   GROUP BY subject_id),
             w AS (SELECT i.subject_id, i.visit, i.analysis_id, {day} AS day, {target} AS target, {width} AS width
                   FROM session_index i JOIN b USING (subject_id) WHERE i.visit <> $anchor)
        SELECT coalesce(a.source, w.analysis_id) AS "where",
               w.subject_id || ' ' || w.visit || ': day ' || CAST(w.day AS VARCHAR) || ', outside the window ' ||
               CAST(w.target AS VARCHAR) || ' +/- ' || CAST(w.width AS VARCHAR) || '; ' || $fate AS problem
        FROM w LEFT JOIN analyses_raw a USING (analysis_id)
        WHERE w.width IS NOT NULL AND abs(w.day - w.target) > w.width ORDER BY 1""",
                     {"anchor": r.anchor, "fate": fate, **_schedule_params(r)})
