"""Agreement between two measurements of the same captures: does one instrument move with the other?

For two metric keys measured on the same captures (two API metrics, and later a device or a rater), on the
values (captures holding both) and on the changes from baseline (responsiveness; subject and visit holding
both):

* Pearson's r with the Fisher z interval (as R's ``cor.test``);
* Spearman's rho with the Bonett & Wright (2000) interval, z-transform with SE sqrt((1 + rho^2 / 2) / (n - 3));
* when both share a unit: Lin's (1989) concordance correlation with the z-transform interval (as R's
  ``epiR::epi.ccc``), and Bland & Altman's bias (mean of a - b, t interval) and 95% limits of agreement,
  bias +- 1.96 SD, each with the approximate interval of Bland & Altman (1999):
  limit +- t(n - 1) * SD * sqrt(1 / n + 1.96^2 / (2 (n - 1))).

Captures are taken under the plan's rules (QC, visit windows), as every helper takes them.

Example
-------
>>> from skintrack.demo import demo_study
>>> t = agreement(demo_study(), "score.water", "severity.water")
>>> t.loc[t["statistic"] == "pearson", ["on", "n"]].values.tolist()
[['values', 93], ['changes from baseline', 69]]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..tables.catalog import metric_info
from . import dist
from .selection import observations_sql
from .stats import Z, mean_interval

COLUMNS = ["on", "statistic", "estimate", "ci_low", "ci_high", "n"]


def paired(study, a: str, b: str, exclude_flagged: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, changes): subject_id, visit, a, b for the captures holding both (for a measure, the
    subject's visits holding both: an instrument reads the skin, not the photo), and for the subjects'
    post-baseline visits holding a change of both."""
    rules = study.rules(exclude_flagged)
    got = []
    for key in (a, b):
        sql, params = observations_sql(key, rules)
        got.append(study.sql(f"WITH {sql} SELECT analysis_id, subject_id, visit, value FROM tl", params))
    same_capture = not any(k.startswith("measure.") for k in (a, b))
    values = got[0].drop(columns=[] if same_capture else ["analysis_id"]).merge(
        got[1], on=["analysis_id", "subject_id", "visit"] if same_capture else ["subject_id", "visit"],
        suffixes=("_a", "_b"))
    values = values.rename(columns={"value_a": "a", "value_b": "b"})[["subject_id", "visit", "a", "b"]]
    ch = [study.change_from_baseline(k, exclude_flagged=exclude_flagged) for k in (a, b)]
    ch = [c.loc[~c["is_baseline"].astype(bool), ["subject_id", "visit", "delta"]] for c in ch]
    changes = ch[0].merge(ch[1], on=["subject_id", "visit"], suffixes=("_a", "_b"))
    changes = changes.rename(columns={"delta_a": "a", "delta_b": "b"})
    return values.dropna().reset_index(drop=True), changes.dropna().reset_index(drop=True)


def agreement(study, a: str, b: str, exclude_flagged: bool | None = None) -> pd.DataFrame:
    """One row per measure (values, changes from baseline) and statistic (see the module docstring)."""
    if a == b:
        raise UsageError(f"agreement of {a} with itself: name two different metrics")
    same_unit = metric_info(a)["unit"] == metric_info(b)["unit"]
    values, changes = paired(study, a, b, exclude_flagged)
    rows = []
    for on, d in (("values", values), ("changes from baseline", changes)):
        rows += statistics(d["a"].to_numpy(float), d["b"].to_numpy(float), same_unit, on)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs.update(a=a, b=b, same_unit=same_unit, values=values, changes=changes)
    return out


def statistics(x: np.ndarray, y: np.ndarray, same_unit: bool, on: str = "values") -> list[dict]:
    """The rows of one measure; a statistic that needs more pairs than there are is NaN, with its n."""
    n = len(x)
    nan = dict.fromkeys(("estimate", "ci_low", "ci_high"), math.nan)
    varies = n > 1 and np.ptp(x) > 0 and np.ptp(y) > 0
    rows = []
    for name, fn in (("pearson", _pearson), ("spearman", _spearman)):
        rows.append({"on": on, "statistic": name, **(fn(x, y) if varies and n > 3 else nan), "n": n})
    if same_unit:
        rows.append({"on": on, "statistic": "lin_ccc", **(_ccc(x, y) if varies and n > 2 else nan), "n": n})
        rows += [{"on": on, "statistic": k, **v, "n": n} for k, v in _bland_altman(x, y).items()]
    return rows


def _fisher(r: float, se: float) -> dict:
    if abs(r) >= 1 - 1e-12:  # a perfect (deterministic) relation: no interval to draw around it
        return {"estimate": r, "ci_low": r, "ci_high": r}
    z = math.atanh(r)
    return {"estimate": r, "ci_low": math.tanh(z - Z * se), "ci_high": math.tanh(z + Z * se)}


def _r(x, y) -> float:
    """Pearson's r (numpy's, as R's cor; scipy's pearsonr agrees to rounding), without importing scipy.stats:
    a second of CPU, more than the whole agreement table."""
    return float(np.corrcoef(x, y)[0, 1])


def _pearson(x, y) -> dict:
    return _fisher(_r(x, y), 1 / math.sqrt(len(x) - 3))


def _spearman(x, y) -> dict:
    rho = _r(dist.average_ranks(x), dist.average_ranks(y))  # Pearson's r of the average ranks, as spearmanr does
    return _fisher(rho, math.sqrt((1 + rho ** 2 / 2) / (len(x) - 3)))


def _ccc(x, y) -> dict:
    """Lin's concordance correlation and its z-transform interval, as epiR::epi.ccc computes them."""
    k = len(x)
    sx2, sy2 = np.var(x), np.var(y)  # divisor k
    r = _r(x, y)
    p = 2 * r * math.sqrt(sx2 * sy2) / (sx2 + sy2 + (y.mean() - x.mean()) ** 2)
    if abs(p) >= 1 - 1e-12 or r == 0:
        return {"estimate": p, "ci_low": p if r else math.nan, "ci_high": p if r else math.nan}
    u = (y.mean() - x.mean()) / (sx2 * sy2) ** 0.25
    sep = math.sqrt(((1 - r ** 2) * p ** 2 * (1 - p ** 2) / r ** 2 + 2 * p ** 3 * (1 - p) * u ** 2 / r
                     - 0.5 * p ** 4 * u ** 4 / r ** 2) / (k - 2))
    return _fisher(p, sep / (1 - p ** 2))


def _bland_altman(x, y) -> dict:
    d = x - y
    n = len(d)
    bias = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    low, high = mean_interval(d)  # none where every difference is the same: the limits are then the bias alone
    half_loa = (dist.t_ppf(0.975, n - 1) * sd * math.sqrt(1 / n + Z ** 2 / (2 * (n - 1)))
                if not math.isnan(low) else math.nan)
    out = {"bias": {"estimate": bias, "ci_low": low, "ci_high": high}}
    for name, limit in (("loa_low", bias - Z * sd), ("loa_high", bias + Z * sd)):
        out[name] = {"estimate": limit, "ci_low": limit - half_loa, "ci_high": limit + half_loa}
    return out
