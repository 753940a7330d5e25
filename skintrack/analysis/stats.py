"""Statistics for trial endpoints: confidence intervals, paired and two-sample tests, multiplicity.

Pure functions on numbers and DataFrames (no SQL, no plotting), each with a 95% interval by default.

Example
-------
>>> lo, hi = t_interval(mean=2.0, sd=1.0, n=10)
>>> round(float(lo), 3), round(float(hi), 3)
(1.285, 2.715)
>>> [round(float(x), 3) for x in wilson(7, 20)]
[0.181, 0.567]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy  # its submodules load on first use: opening a study stays quick

from ..errors import UsageError
from . import dist
from .multiplicity import benjamini_hochberg, holm

LEVEL = 0.95
Z = 1.959963984540054  # dist.norm_ppf(0.975), written out: the z of every 95% interval


def decimals(values, digits: int = 2) -> int:
    """The decimals that print `values` together: `digits`, or 3 significant digits of the largest where `digits`
    would show fewer than 2 of it (an area's share of the face moves by hundredths: at 1 decimal its change read
    0.0).

    >>> decimals([0.0123, -0.004]), decimals([0.173, -0.026], 1), decimals([0.81, 0.5]), decimals([float("nan")])
    (4, 3, 2, 2)
    """
    largest = max((abs(float(v)) for v in values if v == v), default=0.0)
    if largest == 0 or largest >= 10.0 ** (1 - digits):
        return digits
    return min(2 - math.floor(math.log10(largest)), 10)


def t_interval(mean, sd, n, level: float = LEVEL):
    """Student-t interval of a mean (vectorised); NaN where n < 2."""
    mean, sd, n = np.asarray(mean, float), np.asarray(sd, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = dist.t_ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean - half, mean + half


def mean_interval(x) -> tuple[float, float]:
    """The t interval of the mean of the values `x`; NaN where there are fewer than 2 or they do not vary: the
    interval would be the mean itself, where R's t.test stops ("data are essentially constant").

    >>> mean_interval([2.0, 2.0, 2.0])
    (nan, nan)
    """
    x = np.asarray(x, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    low, high = t_interval(x.mean(), x.std(ddof=1), len(x))
    return float(low), float(high)


def wilson(k, n, level: float = LEVEL):
    """Wilson score interval of a proportion k/n (vectorised); NaN where n == 0."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    z = dist.norm_ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = np.where(k == 0, 0.0, np.clip(centre - half, 0, 1))  # exact ends: no rounding dust
    hi = np.where(k == n, 1.0, np.clip(centre + half, 0, 1))
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def one_sample_t(x) -> tuple[float, float]:
    """(t, two-sided p) of the t test of mean 0: `scipy.stats.ttest_1samp(x, 0)` by its own arithmetic (the
    same floats: tests/test_dist.py), without importing scipy.stats (a second of CPU for a claim table). The
    paired t test is this on the differences, as `scipy.stats.ttest_rel` computes it.

    >>> [round(v, 4) for v in one_sample_t([1.0, 2.0, 0.5, 1.5])]
    [3.873, 0.0305]
    """
    x = np.asarray(x, float)
    n = len(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.divide(np.mean(x) - 0.0, np.sqrt(_variance(x) / n))
    return float(t), float(2 * dist.t_sf(np.abs(t), np.float64(n - 1)))


def welch_t(a, b) -> tuple[float, float]:
    """(t, two-sided p) of Welch's t test of a against b: `scipy.stats.ttest_ind(a, b, equal_var=False)` by
    its own arithmetic (the same floats: tests/test_dist.py), without importing scipy.stats.

    >>> [round(v, 4) for v in welch_t([1.0, 2.0, 3.5, 4.0], [0.5, 1.0, 0.0])]
    [2.8465, 0.0471]
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    (n1, v1), (n2, v2) = ((len(x), _variance(x)) for x in (a, b))
    vn1, vn2 = v1 / n1, v2 / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (vn1 + vn2) ** 2 / (vn1 ** 2 / (n1 - 1) + vn2 ** 2 / (n2 - 1))
        df = np.where(np.isnan(df), 1.0, df)  # no spread in either: any df (scipy's choice)
        t = np.divide(np.mean(a) - np.mean(b), np.sqrt(vn1 + vn2))
    return float(t), float(2 * dist.t_sf(np.abs(t), df))


def _variance(x: np.ndarray) -> np.ndarray:
    """The sample variance (divisor n - 1) as scipy.stats computes it for its t tests."""
    n = len(x)
    return np.mean((x - np.mean(x, keepdims=True)) ** 2) * (np.float64(n) / np.float64(n - 1))


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test of the table [[a, b], [c, d]], as R's fisher.test: the chance of
    the tables with the same margins that are no likelier than this one (within a relative 1e-7), counted
    in whole numbers, so exactly.

    >>> round(fisher_exact_p(9, 3, 3, 9), 6)
    0.039126
    """
    rows, first = a + b, a + c  # the first row's and the first column's totals
    n = a + b + c + d
    ways = {x: math.comb(first, x) * math.comb(n - first, rows - x)  # tables with x in the first cell
            for x in range(max(0, rows - (n - first)), min(rows, first) + 1)}
    seen = ways[a]
    tail = sum(w for w in ways.values() if w * 10**7 <= seen * (10**7 + 1))
    return min(tail / math.comb(n, rows), 1.0)  # int / int: the correctly rounded quotient


def paired(before: np.ndarray, after: np.ndarray, test: str = "paired_t") -> dict:
    """Paired comparison of `after - before`: n, mean_diff with its t interval, statistic, p, Cohen's dz.

    `test` is "paired_t" (Student's paired t) or "wilcoxon" (signed-rank; zero differences dropped, as
    scipy's default). The interval is always the t interval of the mean difference; where every difference
    is the same, there is none (nor a t), as in the claim table.
    """
    d = np.asarray(after, float) - np.asarray(before, float)
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "statistic": math.nan, "p": math.nan, "dz": math.nan}
    if n < 2:
        return out
    if np.ptp(d) > 0:
        lo, hi = mean_interval(d)
        out.update(ci_low=lo, ci_high=hi, dz=float(d.mean() / d.std(ddof=1)))
    elif test == "paired_t":  # all differences equal: no interval (it would be the point) and no t
        return out
    if test == "paired_t":
        statistic, p = one_sample_t(d)
    elif test == "wilcoxon":
        if not np.any(d != 0):
            return out
        r = scipy.stats.wilcoxon(d)
        statistic, p = r.statistic, r.pvalue
    else:
        raise UsageError(f"unknown paired test {test!r}: use 'paired_t' or 'wilcoxon'")
    out.update(statistic=float(statistic), p=float(p))
    return out


def two_sample(a: np.ndarray, b: np.ndarray, test: str = "welch") -> dict:
    """Compare group a with group b: means, difference a - b with Welch's t interval, statistic, p."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = {"n_a": len(a), "n_b": len(b), "mean_a": a.mean() if len(a) else math.nan,
           "mean_b": b.mean() if len(b) else math.nan, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "statistic": math.nan, "p": math.nan}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    se = math.sqrt(va + vb)
    out["diff"] = diff
    if se > 0:
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        half = dist.t_ppf(0.5 + LEVEL / 2, df) * se
        out.update(ci_low=diff - half, ci_high=diff + half)
    if test == "welch":
        if se > 0:
            statistic, p = welch_t(a, b)
            out.update(statistic=statistic, p=p)
    elif test == "mannwhitney":
        r = scipy.stats.mannwhitneyu(a, b, alternative="two-sided")
        out.update(statistic=float(r.statistic), p=float(r.pvalue))
    else:
        raise UsageError(f"unknown two-sample test {test!r}: use 'welch', 'mannwhitney' or 'ancova'")
    return out


def adjust(p: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Holm and Benjamini-Hochberg adjusted p-values (NaN stays NaN)."""
    return pd.Series(holm(p), index=p.index), pd.Series(benjamini_hochberg(p), index=p.index)
