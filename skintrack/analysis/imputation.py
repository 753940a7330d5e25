"""Missing-data sensitivity of the primary endpoint: multiple imputation under MAR, reference-based
imputation (jump to reference, copy reference) and a delta-adjusted tipping point, as R's rbmi does them.

The imputation model is the MMRM of the change (arm by visit, baseline by visit, unstructured covariance,
REML). Each of the `m` imputations (rbmi's "approximate Bayesian" method) refits it on a bootstrap sample
of the subjects, stratified by arm, and draws every missing change from its conditional normal
distribution given the subject's observed changes:

* ``mar``: every subject's own arm mean (missing at random, the primary analysis's assumption);
* ``j2r`` (jump to reference): after a treated subject's last observed visit, the mean of the control arm;
* ``cr`` (copy reference): a treated subject who dropped out takes the control arm's mean profile at
  every visit, so their observed residuals carry over;

the control arm is always imputed under MAR, and a visit missed between observed ones is missing at
random. Each completed data set is analysed by ANCOVA of the change at the endpoint's visit on arm and
baseline, and the results are pooled by Rubin's rules with Barnard and Rubin's degrees of freedom (as R's
mice::pool). The tipping point shifts the imputed changes of the treated subjects at the endpoint's
visit by delta, against the treatment, until the conclusion flips. Every draw comes from one seeded
generator: the same seed gives the same numbers.

Example
-------
>>> round(rubin([1.0, 1.2, 0.9], [0.04, 0.05, 0.04], df_complete=20)["estimate"], 6)
1.033333
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UsageError
from . import dist
from .roots import brentq
from .covariance import FALLBACK
from .mmrm import Resamples, design_row  # noqa: F401 - design_row is for callers building means

METHODS = ("mar", "j2r", "cr")
NAMES = {"mar": "multiple imputation, missing at random", "j2r": "multiple imputation, jump to reference",
         "cr": "multiple imputation, copy reference"}


def rubin(estimates, variances, df_complete: float, level: float = 0.95) -> dict:
    """Rubin's rules for one quantity: pooled estimate, its standard error, Barnard and Rubin's df, CI, p."""
    q, u = np.asarray(estimates, float), np.asarray(variances, float)
    m = len(q)
    qbar, ubar = float(q.mean()), float(u.mean())
    b = float(q.var(ddof=1)) if m > 1 else 0.0
    t = ubar + (1 + 1 / m) * b
    gamma = (1 + 1 / m) * b / t if t > 0 else 0.0
    df_old = (m - 1) / gamma ** 2 if gamma > 0 else math.inf
    df_obs = (df_complete + 1) / (df_complete + 3) * df_complete * (1 - gamma)
    df = 1 / (1 / df_old + 1 / df_obs) if np.isfinite(df_old) else df_obs
    se = math.sqrt(t)
    half = dist.t_ppf(0.5 + level / 2, df) * se
    return {"estimate": qbar, "std_error": se, "df": df, "ci_low": qbar - half, "ci_high": qbar + half,
            "p": float(2 * dist.t_sf(abs(qbar / se), df)) if se > 0 else math.nan, "within": ubar, "between": b}


@dataclass
class Imputations:
    """The completed changes at the endpoint's visit, per imputation and method, ready to be analysed (and
    shifted by a delta): `values[method]` is m x n, `imputed` marks the treated cells a delta moves."""

    subjects: list
    arms: np.ndarray
    base: np.ndarray
    values: dict
    imputed: np.ndarray
    control: str
    treatments: list
    m: int
    seed: int

    def ancova(self, method: str, delta: float = 0.0) -> pd.DataFrame:
        """Each treatment against the control by ANCOVA on every completed data set, pooled (Rubin)."""
        return pd.DataFrame(self.pooled(method, delta))

    def pooled(self, method: str, delta: float = 0.0) -> list[dict]:
        """`ancova`'s rows, as dicts (what the tipping point's search reads, many times)."""
        X = np.column_stack([np.ones(len(self.base))] + [(self.arms == t).astype(float) for t in self.treatments]
                            + [self.base])
        xtx_inv = np.linalg.inv(X.T @ X)
        df_complete = len(self.base) - X.shape[1]
        y = self.values[method] + delta * self.imputed  # every completed data set at once, one per row
        beta = y @ (xtx_inv @ X.T).T
        sigma2 = np.sum((y - beta @ X.T) ** 2, axis=1) / df_complete
        arm_terms = slice(1, 1 + len(self.treatments))
        est, var = beta[:, arm_terms], np.diag(xtx_inv)[arm_terms] * sigma2[:, None]
        return [{"treatment": t, "control": self.control, **rubin(est[:, k], var[:, k], df_complete)}
                for k, t in enumerate(self.treatments)]

    def completed(self, method: str, k: int) -> pd.DataFrame:
        """The k-th completed data set at the visit (subject, arm, base, chg): what R's pooling test reads."""
        return pd.DataFrame({"subject": self.subjects, "arm": self.arms, "base": self.base,
                             "chg": self.values[method][k]})


GIVE_UP = 20  # failed bootstrap fits before the imputation gives up, when fits fail more often than not


def impute(data: pd.DataFrame, subjects: pd.DataFrame, visits: list, visit: str, control: str, treatments: list,
           m: int = 100, seed: int = 1, methods=METHODS, structures=None) -> Imputations:
    """Impute the missing changes of `subjects` (subject, arm, base: everyone with a baseline) given the
    observed `data` (subject, arm, visit, base, chg) at the post-baseline `visits`, `m` times per method."""
    if visit not in visits:
        raise UsageError(f"the endpoint's visit {visit!r} is not a post-baseline visit ({', '.join(visits)})")
    subjects = subjects[subjects["arm"].isin([control, *treatments])].drop_duplicates("subject")
    subjects = subjects.sort_values("subject", ignore_index=True)
    t = len(visits)
    wide = np.full((len(subjects), t), np.nan)
    pos = {s: i for i, s in enumerate(subjects["subject"])}
    for r in data[data["visit"].isin(visits) & data["subject"].isin(pos)].itertuples():
        wide[pos[r.subject], visits.index(r.visit)] = r.chg
    arms, base = subjects["arm"].to_numpy(), subjects["base"].to_numpy(float)
    observed = ~np.isnan(wide)
    last = np.array([np.flatnonzero(o).max() if o.any() else -1 for o in observed])
    j = visits.index(visit)
    treated = arms != control
    dropped = treated & (last < j)  # a treated subject whose endpoint visit comes after their last value
    # the imputation model's covariance structure is chosen once, on the data as observed (the first of
    # `structures` that fits); every bootstrap sample is fitted with it, a sample where it fails is drawn again
    fits = Resamples(wide, arms, base, visits, control, list(treatments), structures or ("unstructured", *FALLBACK))
    rng = np.random.default_rng(seed)
    strata = {a: np.flatnonzero(arms == a) for a in [control, *treatments]}
    values = {meth: np.empty((m, len(subjects))) for meth in methods}
    patterns = missing_patterns(observed)
    k, failures = 0, 0
    while k < m:
        boot = np.concatenate([rng.choice(ix, size=len(ix), replace=True) for ix in strata.values()])
        try:
            beta, sigma = fits.fit(boot)
        except UsageError:
            failures += 1
            if failures >= GIVE_UP and failures > k:  # more failures than fits: the trial is too small for it
                raise UsageError(f"the imputation model could not be fitted to {failures} of the first {failures + k} "
                                 "bootstrap samples (too few subjects per arm and visit)") from None
            continue
        own, ref = fits.means(beta)
        normals = rng.standard_normal((len(base), t))  # one set of draws per imputation, shared by the methods
        shapes = draw_shapes(sigma, patterns)  # and so is the conditional distributions' shape
        for meth in methods:
            mean = marginal_means(meth, own, ref, treated, last)
            values[meth][k] = draw_with(wide, mean, normals, shapes)[:, j]
        k += 1
    return Imputations(subjects["subject"].tolist(), arms, base, values, (dropped & ~observed[:, j]).astype(float),
                       control, list(treatments), m, seed)


def marginal_means(method: str, own: np.ndarray, ref: np.ndarray, treated: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Each subject's mean profile (n x T) under `method`: MAR their own arm's; J2R the control arm's after a
    treated subject's last observed visit; CR the control arm's at every visit for a treated subject who
    dropped out. (`own`, `ref`: the fitted means under their arm and under the control arm.)"""
    t = own.shape[1]
    if method == "j2r":
        return np.where(treated[:, None] & (np.arange(t)[None, :] > last[:, None]), ref, own)
    if method == "cr":
        return np.where((treated & (last < t - 1))[:, None], ref, own)
    return own.copy()


def missing_patterns(observed) -> list:
    """(rows, observed visits, missing visits) for each pattern of missing visits: the subjects missing the
    same visits share their conditional distribution's shape. Rows missing nothing are left out."""
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    return [(np.flatnonzero(which.ravel() == k), o, ~o) for k, o in enumerate(patterns) if (~o).any()]


def draw_shapes(sigma, patterns) -> list:
    """Per pattern, under the covariance `sigma`: the gain that carries a row's observed residuals to its
    missing visits (None when it has none) and the scale that turns standard normals into the conditional
    spread. They do not depend on the means, so one set serves every method's draw."""
    shapes = []
    for rows, o, mis in patterns:
        s_mm = sigma[np.ix_(mis, mis)]
        if o.any():
            gain = np.linalg.solve(sigma[np.ix_(o, o)], sigma[np.ix_(o, mis)]).T
            cov = s_mm - gain @ sigma[np.ix_(o, mis)]
        else:
            gain, cov = None, s_mm
        w, vec = np.linalg.eigh((cov + cov.T) / 2)
        shapes.append((rows, o, mis, gain, vec * np.sqrt(np.clip(w, 0, None))))
    return shapes


def conditional_draw(wide, observed, mean, sigma, normals) -> np.ndarray:
    """Every row completed: observed values kept, missing ones drawn from the normal given the observed ones
    (zero `normals` give the conditional means)."""
    return draw_with(wide, mean, normals, draw_shapes(sigma, missing_patterns(observed)))


def draw_with(wide, mean, normals, shapes) -> np.ndarray:
    """`conditional_draw` given the `draw_shapes` of the rows' missing patterns under the covariance."""
    out = wide.copy()
    for rows, o, mis, gain, scale in shapes:
        mu = mean[np.ix_(rows, mis)]
        if gain is not None:
            mu = mu + (wide[np.ix_(rows, o)] - mean[np.ix_(rows, o)]) @ gain.T
        out[np.ix_(rows, mis)] = mu + normals[rows, :mis.sum()] @ scale.T
    return out


def tipping_point(imp: Imputations, treatment: str, alpha: float, direction: float, most: float,
                  adjust=None) -> dict:
    """The shift of the treated subjects' imputed changes (in the direction against the treatment,
    `direction` = -1 for a metric where higher is better) at which the MAR conclusion flips; None when
    no shift up to `most` flips it or no treated value is imputed. The conclusion compares with `alpha` the
    p-values `adjust` gives of the pooled rows (default: their own, unadjusted)."""
    k = imp.treatments.index(treatment)
    adjust = adjust or (lambda rows: [r["p"] for r in rows])

    def p_at(delta):
        return adjust(imp.pooled("mar", direction * delta))[k]

    unshifted = imp.pooled("mar", 0.0)
    start = adjust(unshifted)[k]
    found = {"delta": math.nan, "p_at_zero": unshifted[k]["p"], "adjusted_at_zero": start}
    if not imp.imputed[imp.arms == treatment].any():
        return {**found, "note": "no treated subject's value at the visit is imputed"}
    significant = start < alpha
    previous = 0.0
    for d in np.linspace(0.0, most, 81)[1:]:  # the first crossing (far shifts can turn the effect round)
        if (p_at(d) < alpha) != significant:
            delta = brentq(lambda x: p_at(x) - alpha, previous, d, xtol=min(1e-6, 1e-8 * most))  # any units
            return {**found, "delta": delta, "note": ""}
        previous = d
    return {**found, "note": f"no shift up to {most:g} changes the conclusion"}
