"""Endpoints of every type, compared between arms: the model follows what the number is.

* counts (lesions, pores, lines): negative binomial regression of the count at the visit on arm and
  log(baseline + 1), as a rate ratio (alpha by maximum likelihood, as R's MASS::glm.nb);
* 0-3 grades: proportional-odds logistic regression on arm and baseline grade (as R's MASS::polr), an
  odds ratio, with shift tables of baseline against visit grade;
* presence flags: logistic regression on arm and baseline flag, an odds ratio; when an arm's flags are
  perfectly predicted (separation, common at 10 per arm) Firth's penalised likelihood, with its Wald
  interval (as R's brglm2, whose bias reduction is Firth's for the logistic model);
* responders: risk difference with Newcombe's hybrid score interval and the odds ratio (Woolf; 0.5 added
  to every cell when one is empty), Fisher's exact p;
* continuous changes: equivalence by two one-sided tests (TOST) with a margin and a 90% interval,
  Hodges-Lehmann shift with its Mann-Whitney interval, and Hedges' g with a noncentral-t interval.

Each function takes plain arrays or a frame with columns arm, base, value and returns a dict; the
study-level entry point is `Study.endpoint(metric, visit)`, which picks the model from the catalog's type
(or the plan's `models`).

Example
-------
>>> r = responder_difference(9, 12, 3, 12)
>>> round(r["risk_difference"], 3), [round(x, 3) for x in (r["rd_ci_low"], r["rd_ci_high"])]
(0.5, [0.101, 0.728])
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..errors import UsageError, finite
from . import dist
from .roots import brentq
from .stats import Z, fisher_exact_p


def _design(frame: pd.DataFrame, treatment: str, control: str, transform=None) -> tuple:
    """(data, X): intercept, arm, and the baseline value unless nobody has one (a questionnaire asked only
    after baseline is compared as it is)."""
    data = frame[frame["arm"].isin([treatment, control])]
    adjusted = bool(data["base"].notna().any())
    data = data.dropna(subset=["base", "value"] if adjusted else ["value"])
    columns = [np.ones(len(data)), (data["arm"] == treatment).to_numpy(float)]
    if adjusted:
        base = data["base"].to_numpy(float)
        columns.append(transform(base) if transform else base)
    return data, np.column_stack(columns)


def _settled(b: float, se: float) -> bool:
    """Whether a log ratio and its SE are a maximum the data hold (a ratio below e^15 = 3e6), not a likelihood
    running off under separation."""
    return math.isfinite(b) and math.isfinite(se) and 0 < se < 50 and abs(b) < 15


def _wald(b: float, se: float, n_t: int, n_c: int, **extra) -> dict:
    if not _settled(b, se):
        raise UsageError("not estimable (the model's estimate did not settle: the arms are too far apart or too "
                         "small for a ratio)")
    return {"n_treatment": n_t, "n_control": n_c, "log_estimate": b, "std_error": se, "estimate": math.exp(b),
            "ci_low": math.exp(b - Z * se), "ci_high": math.exp(b + Z * se), "p": 2 * dist.norm_sf(abs(b / se)),
            **extra}


def _counts(data, treatment):
    return int((data["arm"] == treatment).sum()), int((data["arm"] != treatment).sum())


def negative_binomial(frame: pd.DataFrame, treatment: str, control: str) -> dict:
    """Rate ratio of treatment to control: count ~ arm + log(baseline + 1), NB2 with alpha by maximum
    likelihood; Wald interval (as R's confint.default of MASS::glm.nb)."""
    import statsmodels.api as sm
    from statsmodels.discrete.discrete_model import NegativeBinomial

    data, X = _design(frame, treatment, control, lambda b: np.log(b + 1))
    y = data["value"].to_numpy(float)
    if len(data) < 4 or y.sum() == 0:
        raise UsageError("not estimable (every count is 0)" if len(data) >= 4 else
                         "not estimable (fewer than 4 subjects)")
    for arm in (treatment, control):
        if y[(data["arm"] == arm).to_numpy()].sum() == 0:
            raise UsageError(f"not estimable (every count of {arm} is 0: the rate ratio is 0 or unbounded)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; checked below
        nb = NegativeBinomial(y, X, loglike_method="nb2").fit(method="bfgs", maxiter=2000, disp=False, gtol=1e-10)
    alpha = float(nb.params[-1])
    if not np.isfinite(alpha) or alpha < 1e-6:  # no overdispersion: the negative binomial's limit is Poisson
        glm = sm.GLM(y, X, family=sm.families.Poisson()).fit(tol=1e-12)
        return _wald(float(glm.params[1]), float(glm.bse[1]), *_counts(data, treatment), theta=math.inf,
                     method="poisson (rate ratio; the counts show no overdispersion)")
    glm = sm.GLM(y, X, family=sm.families.NegativeBinomial(alpha=alpha)).fit(tol=1e-12)
    return _wald(float(glm.params[1]), float(glm.bse[1]), *_counts(data, treatment), theta=1 / alpha,
                 method="negative binomial (rate ratio)")


def proportional_odds(frame: pd.DataFrame, treatment: str, control: str) -> dict:
    """Odds ratio of a higher grade, treatment to control: grade ~ arm + baseline grade, logit link
    (as R's MASS::polr; grades nobody has are dropped)."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    data, X = _design(frame, treatment, control)
    levels = sorted(data["value"].unique())
    if len(levels) < 2:
        raise UsageError(f"not estimable (every subject grade {levels[0]:g} at this visit)" if levels else
                         "not estimable (no grade at this visit)")
    if len(levels) == 2:
        out = logistic(data.assign(value=(data["value"] == levels[1]).astype(float)), treatment, control)
        return {**out, "method": f"proportional odds with two grades: {out['method']}"}
    grades = {arm: data.loc[data["arm"] == arm, "value"] for arm in (treatment, control)}
    for high, low in ((treatment, control), (control, treatment)):
        if len(grades[high]) and len(grades[low]) and grades[high].min() > grades[low].max():
            raise UsageError(f"not estimable (every {high} grade is above every {low} grade: the odds ratio is "
                             "unbounded)")
    y = pd.Series(pd.Categorical(data["value"], categories=levels, ordered=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = OrderedModel(y, X[:, 1:], distr="logit").fit(method="bfgs", maxiter=5000, disp=False, gtol=1e-10)
    return _wald(float(fit.params.iloc[0]), float(fit.bse.iloc[0]), *_counts(data, treatment),
                 method="proportional odds (odds ratio of a higher grade)")


def logistic(frame: pd.DataFrame, treatment: str, control: str) -> dict:
    """Odds ratio of presence, treatment to control: flag ~ arm + baseline flag (binomial GLM); under
    separation, Firth's penalised likelihood (`firth`)."""
    import statsmodels.api as sm

    data, X = _design(frame, treatment, control)
    y = data["value"].to_numpy(float)
    if len(y) and y.min() == y.max():
        raise UsageError(f"not estimable (every subject has flag {y[0]:g} at this visit)")
    if len(y) < 4:
        raise UsageError("not estimable (fewer than 4 subjects)")
    if X.shape[1] > 2 and np.ptp(X[:, 2]) == 0:
        X = X[:, :2]  # a baseline that does not vary adjusts nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fit = sm.GLM(y, X, family=sm.families.Binomial()).fit(tol=1e-12)
            b, se = float(fit.params[1]), float(fit.bse[1])
            separated = not _settled(b, se)
        except Exception:  # noqa: BLE001 - perfect separation and its kin
            separated = True
    if not separated:
        return _wald(b, se, *_counts(data, treatment), method="logistic (odds ratio)")
    b, se = firth(X, y)
    return _wald(b[1], se[1], *_counts(data, treatment),
                 method="logistic, Firth's penalised likelihood (odds ratio; an arm's flags are perfectly predicted)")


def firth(X: np.ndarray, y: np.ndarray, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Firth's bias-reduced logistic regression (the Jeffreys-penalised likelihood; Firth 1993): coefficients
    and Wald standard errors from the inverse Fisher information, finite under separation."""
    beta = np.zeros(X.shape[1])

    def penalised(b):
        p = 1 / (1 + np.exp(-(X @ b)))
        info = X.T @ ((p * (1 - p))[:, None] * X)
        sign, logdet = np.linalg.slogdet(info)
        return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)) + 0.5 * logdet) if sign > 0 else -np.inf

    for _ in range(200):
        p = 1 / (1 + np.exp(-(X @ beta)))
        w = p * (1 - p)
        info_inv = np.linalg.inv(X.T @ (w[:, None] * X))
        h = w * np.einsum("ij,jk,ik->i", X, info_inv, X)  # leverages of the weighted hat matrix
        step = info_inv @ (X.T @ (y - p + h * (0.5 - p)))
        t, before = 1.0, penalised(beta)
        while t > 1e-8 and penalised(beta + t * step) < before - 1e-12:
            t /= 2
        beta = beta + t * step
        if np.max(np.abs(t * step)) < tol:
            break
    p = 1 / (1 + np.exp(-(X @ beta)))
    cov = np.linalg.inv(X.T @ ((p * (1 - p))[:, None] * X))
    return beta, np.sqrt(np.diag(cov))


def shift_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Subjects by arm, baseline grade and grade at the visit."""
    return (frame.dropna(subset=["base", "value"]).astype({"base": int, "value": int})
            .groupby(["arm", "base", "value"]).size().rename("n").reset_index())


# ---- responders -----------------------------------------------------------------------------------------
def _wilson(k, n):
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def responder_difference(k_t: int, n_t: int, k_c: int, n_c: int) -> dict:
    """Responders in the treatment (k_t of n_t) against the control (k_c of n_c): risk difference with
    Newcombe's hybrid score 95% interval (his method 10), odds ratio with Woolf's interval, Fisher's p."""
    if min(n_t, n_c) == 0:
        raise UsageError("an arm has no subject to count responders in")
    p1, p2 = k_t / n_t, k_c / n_c
    (l1, u1), (l2, u2) = _wilson(k_t, n_t), _wilson(k_c, n_c)
    rd = p1 - p2
    low = rd - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = rd + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    a, b, c, d = k_t, n_t - k_t, k_c, n_c - k_c
    shift = 0.5 if min(a, b, c, d) == 0 else 0.0
    log_or = math.log((a + shift) * (d + shift) / ((b + shift) * (c + shift)))
    se = math.sqrt(sum(1 / (x + shift) for x in (a, b, c, d)))
    return {"responders_treatment": k_t, "n_treatment": n_t, "responders_control": k_c, "n_control": n_c,
            "risk_difference": rd, "rd_ci_low": low, "rd_ci_high": high, "odds_ratio": math.exp(log_or),
            "or_ci_low": math.exp(log_or - Z * se), "or_ci_high": math.exp(log_or + Z * se),
            "or_zero_cell_correction": shift, "p_fisher": fisher_exact_p(a, b, c, d)}


# ---- continuous changes ---------------------------------------------------------------------------------
def tost(a, b, margin: float, level: float = 0.90) -> dict:
    """Equivalence of the mean of `a` and `b` within +/- `margin` (Welch): two one-sided tests; equivalent
    when the (1 - 2 alpha) = 90% interval of the difference lies inside the margin."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    margin = finite(margin, "the equivalence margin", positive=True)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff = a.mean() - b.mean()
    half = dist.t_ppf(0.5 + level / 2, df) * se
    p_low, p_high = dist.t_sf((diff + margin) / se, df), dist.t_cdf((diff - margin) / se, df)
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "level": level, "margin": margin,
            "df": df, "p_lower": p_low, "p_upper": p_high, "p": max(p_low, p_high),
            "equivalent": bool(max(p_low, p_high) < (1 - level) / 2)}


def tost_from_interval(fit, visit: str, treatment: str, margin: float, level: float = 0.90) -> dict:
    """Equivalence of `treatment` and the fit's control at `visit` within +/- `margin`, from the MMRM itself:
    the two one-sided tests at (1 - level) / 2 each, i.e. its 90% interval inside the margin (same SE and df
    as the primary analysis)."""
    margin = finite(margin, "the equivalence margin", positive=True)
    row = fit.contrasts({"d": fit.contrast_vector(visit, treatment)}, level=level).iloc[0]
    est, se, df = row["estimate"], row["std_error"], row["df"]
    p_low, p_high = dist.t_sf((est + margin) / se, df), dist.t_cdf((est - margin) / se, df)
    return {"tost_ci_low": row["ci_low"], "tost_ci_high": row["ci_high"], "tost_p": max(p_low, p_high),
            "margin": margin, "equivalent": bool(-margin < row["ci_low"] and row["ci_high"] < margin)}


def hedges_g(a, b, level: float = 0.95) -> dict:
    """Hedges' g of `a` against `b` (Cohen's d with the pooled SD, times the small-sample correction J)
    with the interval from the noncentral t distribution of d * sqrt(n_a n_b / (n_a + n_b)); NaN where an arm
    has fewer than 2 values or no value varies, and a limit NaN where SciPy's noncentral t CDF is NaN around it
    (arms that barely vary and differ by 1e5 of their SD)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    df = na + nb - 2
    if min(na, nb) < 2 or np.ptp(a) == np.ptp(b) == 0:  # no spread to scale the difference by: no g
        return {"g": math.nan, "d": math.nan, "ci_low": math.nan, "ci_high": math.nan, "df": df}
    sp = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / df)
    d = (a.mean() - b.mean()) / sp
    j = math.exp(math.lgamma(df / 2) - math.log(math.sqrt(df / 2)) - math.lgamma((df - 1) / 2))
    scale = math.sqrt(na * nb / (na + nb))
    t = d * scale
    q = (1 - level) / 2

    def ncp(prob):
        """The noncentrality at which P(T <= t) = prob. The CDF falls as the noncentrality grows; the bracket
        widens step by step from t (a fixed wide one reaches where SciPy's CDF is NaN for small df), by steps
        in proportion to t (a limit lies near t times a chi quantile). NaN where the CDF is NaN before a
        bracket is found."""
        f = lambda nc: dist.nct_cdf(t, df, nc) - prob  # noqa: E731
        step = max(1.0, abs(t) / 4)
        lo, hi = t - step, t + step
        for _ in range(12):
            f_lo, f_hi = f(lo), f(hi)
            if f_lo > 0 and f_hi < 0:
                return brentq(f, lo, hi, xtol=1e-12)
            if math.isnan(f_lo) or math.isnan(f_hi):
                return math.nan
            step *= 2
            lo, hi = (lo if f_lo > 0 else lo - step), (hi if f_hi < 0 else hi + step)
        return math.nan

    return {"g": d * j, "d": d, "ci_low": ncp(1 - q) / scale * j, "ci_high": ncp(q) / scale * j, "df": df}


def _mann_whitney_quantile(q: float, m: int, n: int) -> int:
    """The q-quantile of the Mann-Whitney U of samples of m and n without ties (exact, as R's qwilcox):
    counts by the recursion f(i, j, u) = f(i - 1, j, u - j) + f(i, j - 1, u)."""
    f = [[None] * (n + 1) for _ in range(m + 1)]
    for i in range(m + 1):
        for j in range(n + 1):
            ways = np.zeros(i * j + 1)
            if i == 0 or j == 0:
                ways[0] = 1.0
            else:
                ways[j:] += f[i - 1][j]
                ways[:i * (j - 1) + 1] += f[i][j - 1]
            f[i][j] = ways
    cdf = np.cumsum(f[m][n]) / f[m][n].sum()
    return int(np.searchsorted(cdf, q * (1 - 1e-12)))


def hodges_lehmann(a, b, level: float = 0.95) -> dict:
    """The Hodges-Lehmann shift of `a` against `b` (median of the pairwise differences) with the interval
    that inverts the Mann-Whitney test: exact without ties and under 50 per sample, otherwise the normal
    approximation with the tie and continuity corrections (as R's wilcox.test(conf.int = TRUE)); NaN where every
    value is the same or an arm has none; the interval NaN where each arm holds one value (R stops there) or
    where the arms are so small that no exact interval comes near `level` (3 and 3: 90% at most; R's rule: a
    shortfall above half of 1 - level)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    m, n = len(a), len(b)
    if not (m and n) or np.ptp(np.concatenate([a, b])) == 0:  # R's wilcox.test refuses the interval too
        return {"shift": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "method": "not estimable (" + ("every value is the same" if m and n else "an arm has no value") + ")"}
    diffs = np.sort(np.subtract.outer(a, b).ravel())
    if diffs[0] == diffs[-1]:  # each arm one value: a shift, and no spread to draw an interval from (R stops)
        return {"shift": float(diffs[0]), "ci_low": math.nan, "ci_high": math.nan,
                "method": "no interval (each arm holds one value)"}
    alpha = 1 - level
    ties = len(np.unique(np.concatenate([a, b]))) < m + n
    if m < 50 and n < 50 and not ties:
        most = 1 - 2 / math.comb(m + n, m)  # the level of the widest exact interval, the extreme differences
        if (1 - most) - alpha > alpha / 2:  # where R warns "not achievable" (and gives the achieved level aside)
            return {"shift": float(np.median(diffs)), "ci_low": math.nan, "ci_high": math.nan,
                    "method": f"no {level:.0%} interval (arms of {m} and {n}: an exact one reaches {most:.0%} at most)"}
        qu = max(_mann_whitney_quantile(alpha / 2, m, n), 1)
        low, high = diffs[qu - 1], diffs[m * n - qu]
        return {"shift": float(np.median(diffs)), "ci_low": float(low), "ci_high": float(high), "method": "exact"}

    def w(d):
        r = dist.average_ranks(np.concatenate([a - d, b]))
        _, t = np.unique(r, return_counts=True)
        dz = r[:m].sum() - m * (m + 1) / 2 - m * n / 2
        sigma = math.sqrt(m * n / 12 * ((m + n + 1) - (t ** 3 - t).sum() / ((m + n) * (m + n - 1))))
        return (dz - np.sign(dz) * 0.5) / sigma

    def root(zq):  # w falls as d grows: the d where it crosses zq, between the extreme differences
        lo, hi = diffs[0], diffs[-1]
        if w(lo) - zq <= 0:
            return lo
        if w(hi) - zq >= 0:
            return hi
        return brentq(lambda d: w(d) - zq, lo, hi, xtol=1e-10)

    return {"shift": float(root(0.0)), "ci_low": float(root(dist.norm_ppf(1 - alpha / 2))),
            "ci_high": float(root(dist.norm_ppf(alpha / 2))), "method": "normal approximation"}
