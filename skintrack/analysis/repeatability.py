"""Repeatability: how much a metric moves between two photos of one session (repeat captures).

A session with repeat captures is one subject's visit holding several ok analyses (tell them apart in the
manifest's `replicate` column). Per metric, over those sessions: the within-subject SD (the standard error
of measurement, SEM, pooled over the sessions), the CV (SEM over the grand mean, in %), the one-way random
intraclass correlation ICC(1,1), and the minimal detectable change MDC95 = 1.96 * sqrt(2) * SEM: a change
smaller than that is within the measurement's own noise. Each comes with a 95% interval: the ICC's from the
F distribution (Shrout & Fleiss 1979, as R's psych::ICC), the SEM's from the chi-square of the within-session
mean square, the MDC's the SEM's times 1.96 * sqrt(2).

Example
-------
>>> import pandas as pd
>>> d = pd.DataFrame({"metric": "m", "session": [1, 1, 2, 2, 3, 3], "value": [10, 11, 20, 19, 15, 15]})
>>> round(float(repeatability_table(d)["sem"].iloc[0]), 4)
0.5774
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats as st


ALPHA = 0.05
COLUMNS = ["metric", "sessions", "captures", "mean", "sem", "cv_pct", "icc", "mdc95", "sem_ci_low", "sem_ci_high",
           "icc_ci_low", "icc_ci_high", "mdc95_ci_low", "mdc95_ci_high"]


def repeatability_table(values: pd.DataFrame) -> pd.DataFrame:
    """From rows (metric, session, value) of sessions with repeat captures: per metric sessions, captures,
    mean, sem (within-subject SD), cv_pct, icc, mdc95, and the 95% intervals of sem, icc and mdc95."""
    rows = []
    for metric, g in values.dropna(subset=["value"]).groupby("metric", sort=False):
        g = g.groupby("session").filter(lambda s: len(s) > 1)
        sizes = g.groupby("session")["value"].size()
        k, n = len(sizes), int(sizes.sum())
        if k < 2:
            continue
        means = g.groupby("session")["value"].transform("mean")
        msw = float(((g["value"] - means) ** 2).sum() / (n - k))
        grand = float(g["value"].mean())
        session_means = g.groupby("session")["value"].mean()
        msb = float((sizes * (session_means - grand) ** 2).sum() / (k - 1))
        n0 = (n - float((sizes ** 2).sum()) / n) / (k - 1)
        sem = math.sqrt(msw)
        icc = (msb - msw) / (msb + (n0 - 1) * msw) if msb + (n0 - 1) * msw > 0 else math.nan
        df_b, df_w = k - 1, n - k
        f = msb / msw if msw > 0 else math.inf
        f_low, f_high = f / st.f.ppf(1 - ALPHA / 2, df_b, df_w), f * st.f.ppf(1 - ALPHA / 2, df_w, df_b)
        sem_low = math.sqrt(df_w * msw / st.chi2.ppf(1 - ALPHA / 2, df_w))
        sem_high = math.sqrt(df_w * msw / st.chi2.ppf(ALPHA / 2, df_w))
        mdc = 1.96 * math.sqrt(2)
        rows.append({"metric": metric, "sessions": k, "captures": n, "mean": grand, "sem": sem,
                     "sem_ci_low": sem_low, "sem_ci_high": sem_high,
                     "cv_pct": 100 * sem / abs(grand) if grand else math.nan, "icc": icc,
                     "icc_ci_low": _ratio(f_low - 1, f_low + n0 - 1), "icc_ci_high": _ratio(f_high - 1, f_high + n0 - 1),
                     "mdc95": mdc * sem, "mdc95_ci_low": mdc * sem_low, "mdc95_ci_high": mdc * sem_high})
    return pd.DataFrame(rows, columns=COLUMNS)


def _ratio(a: float, b: float) -> float:
    """a / b, NaN when undefined (repeats that never move give an infinite F: no interval for the ICC)."""
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def repeat_values(study, metrics) -> pd.DataFrame:
    """(metric, session, value) of every ok analysis in a session that holds more than one (one query for
    every metric)."""
    return study.sql("""WITH s AS (SELECT analysis_id, subject_id || ' ' || visit AS session FROM sessions
                                   WHERE subject_id IS NOT NULL AND visit IS NOT NULL
                                     AND analysis_id IN (SELECT analysis_id FROM analyses_raw WHERE ok)),
                             repeated AS (SELECT session FROM s GROUP BY session HAVING count(*) > 1)
                        SELECT m.metric, s.session, m.value FROM metrics m JOIN s USING (analysis_id)
                        WHERE s.session IN (SELECT session FROM repeated) AND m.metric IN (SELECT unnest($keys))
                        ORDER BY list_position($keys, m.metric), s.session""", {"keys": list(metrics)})


def repeatability(study, metrics=None) -> pd.DataFrame:
    """Per metric (default: every score, plus the plan's endpoints): repeatability from repeat captures."""
    if metrics is None:
        from ..tables.catalog import catalog

        cat = catalog()
        metrics = list(dict.fromkeys(cat.loc[cat["family"] == "score", "key"].tolist()
                                     + [e.metric for e in study.plan.endpoints]))
    return repeatability_table(repeat_values(study, [metrics] if isinstance(metrics, str) else metrics))
