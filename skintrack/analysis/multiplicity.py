"""Multiplicity: the plan's testing strategy across endpoints and across treatment arms.

Across treatment arms (one endpoint, each treatment against the control: a *family*):

* ``dunnett``: single-step, from the multivariate t of the contrasts' joint covariance (as R's
  ``multcomp::glht`` with ``adjusted("single-step")``), with simultaneous intervals;
* ``holm``: Holm's step-down on the family's p-values;
* ``dose_order``: the treatments in the plan's order (highest dose first) at the full alpha, each tested
  only when every one before it was rejected;
* ``none``: each at alpha (a single treatment arm needs nothing more).

Across endpoints: ``fixed_sequence`` tests the families in the plan's order, a family only when every
hypothesis of every family before it was rejected (serial gatekeeping; the adjusted p-value of a family
is the largest along the sequence so far), and ``holm`` adjusts every hypothesis of every endpoint
together. A hypothesis that cannot be tested (a model that cannot be fitted) is never rejected.

Example
-------
>>> import numpy as np
>>> p = dunnett(np.array([2.5, 1.0]), np.array([[1.0, 0.5], [0.5, 1.0]]), df=30)
>>> [round(float(x), 4) for x in p]
[0.0336, 0.5099]
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import scipy  # its submodules load on first use: opening a study stays quick

from . import dist
from .roots import brentq

FAMILY = ("dunnett", "holm", "dose_order", "none")


def _box(c: float, corr: np.ndarray) -> float:
    """P(|Z_j| <= c for every j) for Z ~ N(0, corr)."""
    k = len(corr)
    if k == 1:
        return float(2 * dist.norm_cdf(c) - 1)
    upper = np.full(k, c)
    return float(scipy.stats.multivariate_normal.cdf(upper, mean=np.zeros(k), cov=corr, lower_limit=-upper, abseps=1e-11,
                                            releps=1e-11, maxpts=200000 * k))


def max_abs_t_cdf(c: float, corr: np.ndarray, df: float) -> float:
    """P(max_j |T_j| <= c) for T multivariate t with correlation `corr` and `df` degrees of freedom. Two arms:
    the exact bivariate normal box integrated over the chi scale (to ~1e-9); more: Genz and Bretz's
    quasi-Monte Carlo with a fixed seed (to ~1e-5, as R's mvtnorm)."""
    if c <= 0:
        return 0.0
    if not np.isfinite(df):
        return _box(c, corr)
    if len(corr) == 1:
        return float(2 * dist.t_cdf(c, df) - 1)
    if len(corr) > 2:
        upper = np.full(len(corr), c)
        return float(scipy.stats.multivariate_t.cdf(upper, shape=corr, df=df, lower_limit=-upper, maxpts=100_000 * len(corr),
                                           random_state=np.random.default_rng(20241108)))

    def density(s):  # the density of sqrt(chi2_df / df) at s
        return math.exp(math.log(2) + (df / 2) * math.log(df / 2) - math.lgamma(df / 2) + (df - 1) * math.log(s)
                        - df * s * s / 2) if s > 0 else 0.0

    mode = math.sqrt(max(df - 1, 0.5) / df)
    width = 12 / math.sqrt(2 * df)
    lo, hi = max(1e-12, mode - width), mode + width
    with warnings.catch_warnings():  # quad's note that it met the box probability's own rounding, ~1e-12
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
        value, _ = scipy.integrate.quad(lambda s: _box(c * s, corr) * density(s), lo, hi, epsabs=1e-10, epsrel=1e-10,
                                  limit=200)
    return float(value)


def dunnett(t: np.ndarray, corr: np.ndarray, df: float) -> np.ndarray:
    """Single-step adjusted p-values of the statistics `t` (two-sided)."""
    return np.array([1 - max_abs_t_cdf(abs(x), corr, df) if np.isfinite(x) else math.nan for x in t])


def dunnett_quantile(level: float, corr: np.ndarray, df: float) -> float:
    """The critical value c with P(max |T| <= c) = level (for simultaneous intervals). It lies below
    Bonferroni's, which bounds the search where 50 does not (df below ~0.8)."""
    bonferroni = dist.t_ppf(1 - (1 - level) / (2 * len(corr)), df)
    return float(brentq(lambda c: max_abs_t_cdf(c, corr, df) - level, 1e-6, max(50.0, bonferroni), xtol=1e-10))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values: the i-th smallest of n times n - i + 1, never below the one before,
    at most 1 (NaN: not testable, left out and kept NaN).

    >>> holm([0.01, 0.04, 0.03, float("nan")]).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    return _adjusted(p, lambda s: np.maximum.accumulate(s * np.arange(len(s), 0, -1)))


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (the false discovery rate): the i-th smallest of n times n / i,
    never above the one after, at most 1 (NaN kept NaN).

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(4).tolist()
    [0.03, 0.04, 0.04]
    """
    return _adjusted(p, lambda s: np.minimum.accumulate((s / (np.arange(1, len(s) + 1) / float(len(s))))[::-1])[::-1])


def _adjusted(p, step) -> np.ndarray:
    """`step` (sorted p-values -> adjusted) applied to the finite ones of `p`, in their places. The arithmetic
    of statsmodels' `multipletests` ("holm", "fdr_bh"), so the same floats (tests/test_trial.py), without
    importing it: that import loads scipy.stats, a second of CPU for a few multiplications."""
    p = np.asarray(p, float)
    out = np.full(len(p), math.nan)
    ok = np.isfinite(p)
    if ok.any():
        order = np.argsort(p[ok])
        adjusted = np.empty(order.size)
        adjusted[order] = np.minimum(step(p[ok][order]), 1)
        out[ok] = adjusted
    return out


def dose_order(p, alpha: float) -> tuple[np.ndarray, list]:
    """Fixed sequence over the arms in order: (adjusted p = the largest so far, rejected flags)."""
    p = np.asarray(p, float)
    adjusted = np.maximum.accumulate(np.where(np.isfinite(p), p, 1.0))
    rejected, going = [], True
    for x in adjusted:
        going = going and x < alpha
        rejected.append(going)
    return np.where(np.isfinite(p), adjusted, math.nan), rejected
