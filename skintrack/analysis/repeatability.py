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

import numpy as np
import pandas as pd

from . import dist

ALPHA = 0.05
COLUMNS = ["metric", "sessions", "captures", "mean", "sem", "cv_pct", "icc", "mdc95", "sem_ci_low", "sem_ci_high",
           "icc_ci_low", "icc_ci_high", "mdc95_ci_low", "mdc95_ci_high"]


def repeatability_table(values: pd.DataFrame) -> pd.DataFrame:
    """From rows (metric, session, value) of sessions with repeat captures: per metric sessions, captures,
    mean, sem (within-subject SD), cv_pct, icc, mdc95, and the 95% intervals of sem, icc and mdc95."""
    per = (values.dropna(subset=["value"]).groupby(["metric", "session"], sort=False)["value"]
           .agg(["size", "mean", "var"]))
    per = per[per["size"] > 1]
    per = per.assign(total=per["size"] * per["mean"], ss=per["var"] * (per["size"] - 1), sq=per["size"] ** 2)
    m = per.groupby(level="metric", sort=False).agg(k=("size", "size"), n=("size", "sum"), total=("total", "sum"),
                                                     ss=("ss", "sum"), sq=("sq", "sum"))
    m = m[m["k"] >= 2]
    if m.empty:
        return pd.DataFrame(columns=COLUMNS)
    grand = m["total"] / m["n"]
    between = per["size"] * (per["mean"] - grand.reindex(per.index, level="metric")) ** 2
    df_b, df_w = m["k"] - 1, m["n"] - m["k"]
    msw = m["ss"] / df_w
    msb = between.groupby(level="metric", sort=False).sum().reindex(m.index) / df_b
    n0 = (m["n"] - m["sq"] / m["n"]) / df_b
    sem = np.sqrt(msw)
    icc_den = msb + (n0 - 1) * msw
    f = np.where(msw > 0, msb / msw.where(msw > 0, 1), np.inf)
    f_low, f_high = f / dist.f_ppf(1 - ALPHA / 2, df_b, df_w), f * dist.f_ppf(1 - ALPHA / 2, df_w, df_b)
    sem_low = np.sqrt(df_w * msw / dist.chi2_ppf(1 - ALPHA / 2, df_w))
    sem_high = np.sqrt(df_w * msw / dist.chi2_ppf(ALPHA / 2, df_w))
    mdc = 1.96 * math.sqrt(2)
    out = pd.DataFrame({"metric": m.index, "sessions": m["k"].to_numpy(), "captures": m["n"].to_numpy(),
                        "mean": grand.to_numpy(), "sem": sem.to_numpy(),
                        "cv_pct": np.where(grand != 0, 100 * sem / grand.abs().where(grand != 0, 1), np.nan),
                        "icc": np.where(icc_den > 0, (msb - msw) / icc_den.where(icc_den > 0, 1), np.nan),
                        "mdc95": mdc * sem.to_numpy(), "sem_ci_low": sem_low.to_numpy(),
                        "sem_ci_high": sem_high.to_numpy(),
                        "icc_ci_low": _ratio(f_low - 1, f_low + n0.to_numpy() - 1),
                        "icc_ci_high": _ratio(f_high - 1, f_high + n0.to_numpy() - 1),
                        "mdc95_ci_low": mdc * sem_low.to_numpy(), "mdc95_ci_high": mdc * sem_high.to_numpy()})
    return out[COLUMNS].reset_index(drop=True)


def _ratio(a, b) -> np.ndarray:
    """a / b, NaN where undefined (repeats that never move give an infinite F: no interval for the ICC)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    return np.where(ok, a / np.where(ok, b, 1), np.nan)


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
    from ..tables.catalog import catalog

    if metrics is None:
        cat = catalog()
        metrics = list(dict.fromkeys(cat.loc[cat["family"] == "score", "key"].tolist()
                                     + [e.metric for e in study.plan.endpoints]))
    return repeatability_table(repeat_values(study, study.metric_list(metrics)))
