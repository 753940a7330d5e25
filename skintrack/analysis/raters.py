"""Agreement between the raters of a measure (an expert's grade given by two or more raters).

Over the subjects' visits that every rater graded (a rater's replicates and sides averaged first):

* ICC(2,1), two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979, case 2), from
  the two-way ANOVA mean squares, with its 95% interval by Satterthwaite's approximation: as R's
  ``psych::ICC(x, lmer = FALSE)``, row ICC2;
* for graded measures (grade, Likert item, flag), weighted kappa with quadratic weights
  1 - (i - j)^2 / (k - 1)^2 over the measure's declared levels, for each pair of raters (as R's
  ``psych::cohen.kappa``), with the large-sample variance of Fleiss, Cohen & Everitt (1969) (as
  statsmodels' ``cohens_kappa``; psych's own variance takes the second rater's mean weights from the
  wrong margin and can come out negative, which it then prints as an interval of width 0).

Example
-------
>>> import numpy as np
>>> x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
>>> round(icc2(x)["estimate"], 4)  # Shrout & Fleiss's own example: 0.29
0.2898
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd

from ..tables.catalog import metric_info
from . import dist
from .stats import Z

COLUMNS = ["metric", "statistic", "raters", "n", "estimate", "ci_low", "ci_high"]
GRADED = ("grade", "presence")


def icc2(x: np.ndarray, alpha: float = 0.05) -> dict:
    """ICC(2,1) of an n targets x k raters table without gaps: estimate, ci_low, ci_high, n."""
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msb, msj, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):  # every grade the same: no ICC at all, NaN without a warning
        icc = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
        fj = msj / mse
        vn = (k - 1) * (n - 1) * (k * icc * fj + n * (1 + (k - 1) * icc) - k * icc) ** 2
        vd = (n - 1) * k ** 2 * icc ** 2 * fj ** 2 + (n * (1 + (k - 1) * icc) - k * icc) ** 2
        # no residual (the raters agree, up to a constant shift): Fj is infinite and Satterthwaite's df at its
        # limit, k - 1, which R's psych reaches through a residual of rounding size
        v = vn / vd if mse != 0 else k - 1.0
        f_u, f_l = dist.f_ppf(1 - alpha / 2, n - 1, v), dist.f_ppf(1 - alpha / 2, v, n - 1)
        low = n * (msb - f_u * mse) / (f_u * (k * msj + (k * n - k - n) * mse) + n * msb)
        high = n * (f_l * msb - mse) / (k * msj + (k * n - k - n) * mse + n * f_l * msb)
    return {"estimate": float(icc), "ci_low": float(low), "ci_high": float(high), "n": n}


def weighted_kappa(a, b, levels) -> dict:
    """Quadratic-weighted kappa of two raters' grades `a`, `b` over `levels` (in order): estimate, ci_low,
    ci_high (95%, cut at -1 and 1; none where its variance is 0: agreement on every subject, or a rater giving
    one grade throughout, whose kappa is 0 by construction), n."""
    levels = list(levels)
    m = len(levels)
    index = {v: i for i, v in enumerate(levels)}
    x = np.zeros((m, m))
    for u, v in zip(a, b):
        x[index[u], index[v]] += 1
    n = x.sum()
    x /= n
    rs, cs = x.sum(axis=1), x.sum(axis=0)
    i, j = np.indices((m, m))
    w = 1 - (i - j) ** 2 / (m - 1) ** 2
    wpo, wpc = (w * x).sum(), (w * np.outer(rs, cs)).sum()
    row_w, col_w = w @ cs, rs @ w  # each row's (column's) mean weight under the other rater's margins
    with np.errstate(divide="ignore", invalid="ignore"):  # both raters give one grade throughout: no kappa (NaN)
        var = ((x * (w * (1 - wpc) - np.add.outer(row_w, col_w) * (1 - wpo)) ** 2).sum()
               - (wpo * wpc - 2 * wpc + wpo) ** 2) / (n * (1 - wpc) ** 4)
        kappa = (wpo - wpc) / (1 - wpc)
    # a variance of 0 (to rounding; psych's can come out negative) where the raters agree on every subject or one
    # gives a single grade: the large-sample interval collapses to a point, which is no 95% interval
    half = Z * math.sqrt(var) if var > 1e-14 else math.nan
    return {"estimate": float(kappa), "ci_low": float(np.clip(kappa - half, -1, 1)),  # NaN stays NaN
            "ci_high": float(np.clip(kappa + half, -1, 1)), "n": int(n)}


def raters(study, metrics=None) -> pd.DataFrame:
    """Per measure graded by two or more raters (default: every such measure of the study): ICC(2,1) and,
    for graded measures, the weighted kappa of each pair of raters (see the module docstring)."""
    grades = study.sql("SELECT 'measure.' || measure AS metric, subject_id, visit, rater, avg(value) AS value "
                       "FROM measures WHERE rater IS NOT NULL GROUP BY ALL ORDER BY metric, rater")
    keys = study.metric_list(metrics) if metrics else list(grades["metric"].unique())
    rows = []
    for key in keys:
        info = metric_info(key)
        table = grades[grades["metric"] == key].pivot_table(index=["subject_id", "visit"], columns="rater",
                                                            values="value").dropna()
        if table.shape[1] < 2 or len(table) < 2:
            continue
        names = list(table.columns)
        rows.append({"metric": key, "statistic": "ICC(2,1)", "raters": ", ".join(names),
                     **icc2(table.to_numpy(float))})
        levels = sorted(float(v) for v in json.loads(info["labels"])) if info["labels"] else []
        if info["type"] in GRADED and levels and table.isin(levels).all().all():  # a rater's mean of repeats is not a grade
            for r1, r2 in itertools.combinations(names, 2):
                rows.append({"metric": key, "statistic": "weighted kappa (quadratic)", "raters": f"{r1}, {r2}",
                             **weighted_kappa(table[r1], table[r2], levels)})
    return pd.DataFrame(rows, columns=COLUMNS)
