"""The claim table a cosmetic dossier prints: per metric, arm and post-baseline visit, the mean change and
mean % change from baseline with 95% t intervals (the % change of the subjects whose baseline is not 0, `pct_n`
of the `n`: a count can start at 0), the p-value of the change against baseline (paired t,
or Wilcoxon signed-rank with ``test="wilcoxon"``), and the share of subjects improved (in the metric's
better direction, any amount) with its Wilson interval; for a Likert item of a questionnaire (a measure
declared with the levels that count as agreeing), the share of subjects agreeing at each visit with its
Wilson interval, as its answer is already a judgement of change. Captures are taken under the plan's rules. The
p-values are each visit's own, unadjusted: a claim against baseline is descriptive, the plan's endpoints
carry the confirmatory tests. Where every subject changed by the same amount the t interval and the paired
t p-value are NaN (R's t.test stops: "data are essentially constant"); no change at all has p 1.

Example
-------
>>> from skintrack.demo import demo_study
>>> t = claims(demo_study(), ["score.water"])
>>> t.loc[(t["arm"] == "active") & (t["visit"] == "W12"), ["n", "improved"]].values.tolist()
[[11, 11]]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy  # its submodules load on first use: opening a study stays quick

from ..errors import UsageError
from ..tables.catalog import metric_info
from .stats import mean_interval, one_sample_t, wilson

COLUMNS = ["metric", "arm", "visit", "n", "baseline_mean", "mean_change", "change_ci_low", "change_ci_high",
           "mean_pct_change", "pct_ci_low", "pct_ci_high", "pct_n", "p", "test", "improved", "improved_pct",
           "improved_ci_low", "improved_ci_high", "agreeing", "agreeing_pct", "agreeing_ci_low", "agreeing_ci_high"]
TESTS = ("paired_t", "wilcoxon")


def claims(study, metrics=None, test: str = "paired_t", exclude_flagged: bool | None = None) -> pd.DataFrame:
    """One row per metric, arm and post-baseline visit (see the module docstring); `metrics` default to
    the plan's endpoints."""
    if test not in TESTS:
        raise UsageError(f"test {test!r}: use {' or '.join(TESTS)}")
    plan = study.plan
    # the plan may name a metric at two visits: its endpoints' metrics once each
    metrics = study.metric_list(metrics) if metrics else list(dict.fromkeys(e.metric for e in plan.endpoints))
    if not metrics:
        raise UsageError("no metrics: name them, or give the plan its endpoints")
    arms = study.sql("SELECT subject_id, arm FROM subjects") if "arm" in study.columns("subjects") else None
    order = plan.arms if plan.control else []
    rows = []
    for key in metrics:
        info = metric_info(key)
        if info.get("agree"):
            rows += _agreeing(study, key, info["agree"], arms, order, exclude_flagged)
            continue
        better = info["better"]
        ch = study.change_from_baseline(key, exclude_flagged=exclude_flagged)
        ch = ch[~ch["is_baseline"].astype(bool)]
        ch = ch.merge(arms, on="subject_id", how="left") if arms is not None else ch.assign(arm="all")
        ch["arm"] = ch["arm"].fillna("(no arm)")
        visits = [v for v in study.visits if v in set(ch["visit"])]
        for arm in _in_order(ch["arm"], order):
            for visit in visits:
                g = ch[(ch["arm"] == arm) & (ch["visit"] == visit)]
                if len(g):
                    rows.append({"metric": key, "arm": arm, "visit": visit, **_row(g, better, test)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _in_order(arms, order: list) -> list:
    """The arms present, control first and treatments in the plan's order, then any other by name."""
    return sorted(set(arms), key=lambda a: (order.index(a) if a in order else len(order), a))


def _agreeing(study, key: str, agree: list, arms, order: list, exclude_flagged) -> list[dict]:
    """Rows of a Likert item: per arm and visit, the subjects agreeing (answer in `agree`) with a Wilson CI."""
    tl = study.timeline(key, exclude_flagged)
    tl = tl.merge(arms, on="subject_id", how="left") if arms is not None else tl.assign(arm="all")
    tl["arm"] = tl["arm"].fillna("(no arm)")
    rows = []
    for arm in _in_order(tl["arm"], order):
        for visit in [v for v in study.visits if v in set(tl["visit"])]:
            g = tl[(tl["arm"] == arm) & (tl["visit"] == visit)]
            if len(g):
                k, n = int(g["value"].isin(agree).sum()), len(g)
                low, high = (float(v) for v in wilson(k, n))
                rows.append({"metric": key, "arm": arm, "visit": visit, "n": n, "test": "share agreeing",
                             "agreeing": k, "agreeing_pct": 100 * k / n, "agreeing_ci_low": 100 * low,
                             "agreeing_ci_high": 100 * high})
    return rows


def _row(g: pd.DataFrame, better: str, test: str) -> dict:
    delta, pct = g["delta"].to_numpy(float), g["pct_change"].dropna().to_numpy(float)
    n = len(delta)
    out = {"n": n, "baseline_mean": float(g["baseline_value"].mean()), "test": test, "pct_n": len(pct)}
    for name, x in (("change", delta), ("pct", pct)):
        out["mean_change" if name == "change" else "mean_pct_change"] = float(x.mean()) if len(x) else math.nan
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = mean_interval(x)
    if n < 2 or not np.any(delta != 0):
        out["p"] = math.nan if n < 2 else 1.0
    elif test == "paired_t" and np.ptp(delta) == 0:  # the same change in everyone: t is infinite, p no number
        out["p"] = math.nan
    elif test == "wilcoxon":
        nonzero = np.abs(delta[delta != 0])
        exact = len(nonzero) == n < 50 and len(np.unique(nonzero)) == n  # as R's wilcox.test decides
        out["p"] = float(scipy.stats.wilcoxon(delta, correction=True, method="exact" if exact else "approx").pvalue)
    else:
        out["p"] = one_sample_t(delta)[1]
    if better in ("higher", "lower"):
        k = int(g["improved"].fillna(False).astype(bool).sum())
        low, high = (float(v) for v in wilson(k, n))
        out.update(improved=k, improved_pct=100 * k / n, improved_ci_low=100 * low, improved_ci_high=100 * high)
    else:
        out.update(improved=math.nan, improved_pct=math.nan, improved_ci_low=math.nan, improved_ci_high=math.nan)
    return out
