"""The mixed model for repeated measures (MMRM) of trials, written on numpy and scipy.

    change ~ baseline + arm * visit (+ baseline * visit)

with an unstructured covariance of a subject's post-baseline visits, fitted by REML, and Satterthwaite
degrees of freedom for every LS-mean and difference. When the unstructured fit does not converge (or
its information matrix is not positive definite), Toeplitz, then AR(1), then compound symmetry are
tried, in that order, and the result says which was used. LS-means take the baseline at its mean over
the rows analysed, as R's emmeans and SAS's LSMEANS do.

The numbers match R's ``nlme::gls(chg ~ base + arm * visit, correlation = corSymm(form = ~ vis | subject),
weights = varIdent(form = ~ 1 | visit), method = "REML")`` with ``emmeans(fit, ~ arm | visit,
mode = "satterthwaite")`` (tests/test_mmrm.py runs R on several studies).

Example
-------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(1)
>>> rows = [{"subject": f"S{i}", "arm": "active" if i % 2 else "placebo", "visit": v, "base": b,
...          "chg": 0.5 * b + (2.0 if i % 2 and v == "W8" else 0.0) + rng.normal()}
...         for i, b in enumerate(rng.normal(50, 5, 40)) for v in ("W4", "W8")]
>>> fit = fit_mmrm(pd.DataFrame(rows), visits=["W4", "W8"], control="placebo")
>>> fit.covariance, fit.converged
('unstructured', True)
>>> fit.diffs[["visit", "treatment", "control"]].values.tolist()
[['W4', 'active', 'placebo'], ['W8', 'active', 'placebo']]
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize
from scipy import stats as st

from ..errors import UsageError

STRUCTURES = ("unstructured", "toeplitz", "ar1", "compound_symmetry")
LEVEL = 0.95


# ---- covariance structures: theta (unconstrained) -> Sigma (T x T) ---------------------------------------
def _unstructured(theta, t):
    L = np.zeros((t, t))
    L[np.tril_indices(t)] = theta
    L[np.diag_indices(t)] = np.exp(np.diag(L))
    return L @ L.T


def _toeplitz(theta, t):
    rho = np.tanh(theta[1:])
    band = np.concatenate([[1.0], rho])
    idx = np.abs(np.subtract.outer(np.arange(t), np.arange(t)))
    return math.exp(theta[0]) * band[idx]


def _ar1(theta, t):
    idx = np.abs(np.subtract.outer(np.arange(t), np.arange(t)))
    return math.exp(theta[0]) * np.tanh(theta[1]) ** idx


def _compound_symmetry(theta, t):
    rho = np.tanh(theta[1])
    return math.exp(theta[0]) * ((1 - rho) * np.eye(t) + rho)


_SIGMA = {"unstructured": _unstructured, "toeplitz": _toeplitz, "ar1": _ar1, "compound_symmetry": _compound_symmetry}


def _start(structure, sigma0):
    """Starting values from a covariance estimate `sigma0` (pairwise residual covariances, made PD)."""
    t = len(sigma0)
    var = float(np.mean(np.diag(sigma0)))
    sd = np.sqrt(np.diag(sigma0))
    corr = sigma0 / np.outer(sd, sd)
    mean_r = [float(np.mean(np.diag(corr, d))) for d in range(1, t)]
    clip = lambda r: float(np.arctanh(np.clip(r, -0.9, 0.95)))  # noqa: E731
    if structure == "unstructured":
        L = np.linalg.cholesky(sigma0)
        L[np.diag_indices(t)] = np.log(np.diag(L))
        return L[np.tril_indices(t)]
    if structure == "toeplitz":
        return np.array([math.log(var)] + [clip(r) for r in mean_r])
    return np.array([math.log(var), clip(mean_r[0] if mean_r else 0.3)])


# ---- the data, grouped by pattern of observed visits ---------------------------------------------------
@dataclass
class _Design:
    X: np.ndarray  # rows x p
    y: np.ndarray
    columns: list
    patterns: list  # (visit indices observed, row indices as n_subjects x k array)
    t: int


def _design(data: pd.DataFrame, visits: list, arms: list, base_by_visit: bool) -> _Design:
    """Full-rank treatment coding: intercept, base, arm (not the first), visit (not the first), arm:visit,
    (base:visit)."""
    v = pd.Categorical(data["visit"], categories=visits).codes
    a = pd.Categorical(data["arm"], categories=arms).codes
    cols, blocks = ["(Intercept)", "base"], [np.ones(len(data)), data["base"].to_numpy(float)]
    for k, arm in enumerate(arms[1:], 1):
        cols.append(f"arm[{arm}]")
        blocks.append((a == k).astype(float))
    for j, visit in enumerate(visits[1:], 1):
        cols.append(f"visit[{visit}]")
        blocks.append((v == j).astype(float))
    for k, arm in enumerate(arms[1:], 1):
        for j, visit in enumerate(visits[1:], 1):
            cols.append(f"arm[{arm}]:visit[{visit}]")
            blocks.append(((a == k) & (v == j)).astype(float))
    if base_by_visit:
        for j, visit in enumerate(visits[1:], 1):
            cols.append(f"base:visit[{visit}]")
            blocks.append(data["base"].to_numpy(float) * (v == j))
    X = np.column_stack(blocks)
    order = np.lexsort((v, data["subject"].to_numpy()))
    subjects = data["subject"].to_numpy()[order]
    groups: dict[tuple, list] = {}
    start = 0
    for s in range(1, len(order) + 1):
        if s == len(order) or subjects[s] != subjects[start]:
            rows = order[start:s]
            groups.setdefault(tuple(v[rows]), []).append(rows)
            start = s
    patterns = [(np.array(p), np.array(r)) for p, r in groups.items()]
    return _Design(X, data["chg"].to_numpy(float), cols, patterns, len(visits))


# ---- REML ----------------------------------------------------------------------------------------------
class _Reml:
    """-2 x the REML log-likelihood (without constants), its gradient in Sigma, and (X'V^-1 X)^-1."""

    def __init__(self, d: _Design, structure: str):
        self.d, self.sigma_of = d, (lambda th: _SIGMA[structure](th, d.t))
        self.pat = [(idx, d.X[rows], d.y[rows]) for idx, rows in d.patterns]  # (k,), (n,k,p), (n,k)

    def parts(self, sigma):
        p = self.d.X.shape[1]
        M, b, yy, logdet, per = np.zeros((p, p)), np.zeros(p), 0.0, 0.0, []
        for idx, X, y in self.pat:
            S = sigma[np.ix_(idx, idx)]
            c = linalg.cho_factor(S)
            Si = linalg.cho_solve(c, np.eye(len(idx)))
            logdet += len(y) * 2 * np.sum(np.log(np.diag(c[0])))
            SX = np.einsum("ij,njp->nip", Si, X)
            M += np.einsum("nip,niq->pq", X, SX)
            b += np.einsum("nip,ni->p", SX, y)
            yy += np.einsum("ni,ij,nj->", y, Si, y)
            per.append((Si, SX))
        return M, b, yy, logdet, per

    def objective(self, theta):
        """(f, df/dtheta); f is +inf where Sigma is not positive definite."""
        try:
            sigma = self.sigma_of(theta)
            M, b, yy, logdet, per = self.parts(sigma)
            cm = linalg.cho_factor(M)
        except (linalg.LinAlgError, ValueError):
            return np.inf, np.zeros_like(theta)
        beta = linalg.cho_solve(cm, b)
        Minv = linalg.cho_solve(cm, np.eye(len(b)))
        f = logdet + 2 * np.sum(np.log(np.diag(cm[0]))) + yy - b @ beta
        G = np.zeros_like(sigma)  # df/dSigma = sum_i S_i' (P_ii - Py_i Py_i') S_i
        for (idx, X, y), (Si, SX) in zip(self.pat, per):
            r = np.einsum("ij,nj->ni", Si, y - X @ beta)
            block = len(y) * Si - np.einsum("nip,pq,njq->ij", SX, Minv, SX) - r.T @ r
            G[np.ix_(idx, idx)] += block
        grad = np.array([np.sum(G * dS) for dS in self.dsigma(theta)])
        return f, grad

    def dsigma(self, theta, h=1e-6):
        out = []
        for k in range(len(theta)):
            e = np.zeros_like(theta)
            e[k] = h
            out.append((self.sigma_of(theta + e) - self.sigma_of(theta - e)) / (2 * h))
        return out

    def phi(self, theta):
        M = self.parts(self.sigma_of(theta))[0]
        return linalg.inv(M)

    def beta(self, theta):
        M, b = self.parts(self.sigma_of(theta))[:2]
        return linalg.solve(M, b, assume_a="pos")


def _hessian(fun, x, h=1e-5):
    """Central differences of an analytic gradient, symmetrised."""
    n = len(x)
    H = np.zeros((n, n))
    for k in range(n):
        e = np.zeros(n)
        e[k] = h
        H[:, k] = (fun(x + e)[1] - fun(x - e)[1]) / (2 * h)
    return (H + H.T) / 2


# ---- the result ----------------------------------------------------------------------------------------
@dataclass
class MMRMResult:
    """A fitted MMRM: `.lsmeans` (arm x visit) and `.diffs` (each treatment minus control per visit), each
    with estimate, std_error, df (Satterthwaite), ci_low, ci_high, p; the covariance structure used and
    its estimate, convergence, and what was tried before it."""

    metric: str
    lsmeans: pd.DataFrame
    diffs: pd.DataFrame
    covariance: str
    sigma: pd.DataFrame
    converged: bool
    n_subjects: int
    n_obs: int
    tried: list = field(default_factory=list)
    coefficients: pd.DataFrame | None = None
    base_mean: float = math.nan
    excluded: pd.DataFrame | None = None
    assumed: list = field(default_factory=list)
    qc: str = ""

    def diff(self, visit, treatment=None) -> pd.Series:
        """The row of `.diffs` at `visit` (for `treatment`, default the only one)."""
        rows = self.diffs[self.diffs["visit"] == visit]
        if treatment is not None:
            rows = rows[rows["treatment"] == treatment]
        if len(rows) != 1:
            raise UsageError(f"no single difference at visit {visit!r}" + (f" for {treatment!r}" if treatment else ""))
        return rows.iloc[0]

    def summary(self) -> str:
        head = (f"MMRM of {self.metric}: change ~ baseline + arm * visit, {self.covariance} covariance, REML, "
                f"Satterthwaite df; {self.n_subjects} subjects, {self.n_obs} post-baseline observations"
                + ("" if self.converged else " (DID NOT CONVERGE)"))
        fallback = f"\nFell back from: {'; '.join(self.tried)}" if self.tried else ""
        show = lambda df: df.to_string(index=False, float_format=lambda x: f"{x:.4g}")  # noqa: E731
        return f"{head}{fallback}\n\nLS-means\n{show(self.lsmeans)}\n\nDifferences\n{show(self.diffs)}"

    __str__ = summary

    def __repr__(self) -> str:
        return f"<MMRMResult {self.metric}: {self.covariance}, {self.n_subjects} subjects, converged={self.converged}>"

    def _repr_html_(self) -> str:
        return (f"<p><b>MMRM of {self.metric}</b>: {self.covariance} covariance, REML, Satterthwaite df; "
                f"{self.n_subjects} subjects, {self.n_obs} observations; converged: {self.converged}</p>"
                f"<p>LS-means</p>{self.lsmeans.to_html(index=False)}<p>Differences</p>{self.diffs.to_html(index=False)}")


def _contrast_table(rows, beta, phi, dphi, acov, level):
    """Estimate, SE, Satterthwaite df, CI and p for each (labels, contrast vector)."""
    out = []
    for labels, c in rows:
        est, var = float(c @ beta), float(c @ phi @ c)
        g = np.array([c @ dP @ c for dP in dphi])
        denom = float(g @ acov @ g)
        df = 2 * var ** 2 / denom if denom > 0 else math.inf
        se = math.sqrt(var)
        q = st.t.ppf(0.5 + level / 2, df)
        out.append({**labels, "estimate": est, "std_error": se, "df": df, "ci_low": est - q * se,
                    "ci_high": est + q * se, "t": est / se, "p": 2 * st.t.sf(abs(est / se), df)})
    return pd.DataFrame(out)


def fit_mmrm(data: pd.DataFrame, visits: list, control: str, treatments=None, base_by_visit: bool = False,
             structures=STRUCTURES, level: float = LEVEL, metric: str = "") -> MMRMResult:
    """Fit the MMRM to `data` (columns subject, arm, visit, base, chg: one row per post-baseline
    observation). `visits` are the post-baseline visits in order; `control` is the reference arm and
    `treatments` the arms compared with it (default: every other arm present)."""
    data = data.dropna(subset=["chg", "base"])
    data = data[data["visit"].isin(visits)]
    present = set(data["arm"])
    if control not in present:
        raise UsageError(f"{metric}: the control arm {control!r} has no post-baseline observation")
    treatments = [a for a in (treatments or sorted(present - {control})) if a in present]
    if not treatments:
        raise UsageError(f"{metric}: no treatment arm with post-baseline observations to compare with {control!r}")
    data = data[data["arm"].isin([control, *treatments])]
    visits = [v for v in visits if v in set(data["visit"])]
    arms = [control, *treatments]
    d = _design(data, visits, arms, base_by_visit)
    if np.linalg.matrix_rank(d.X) < d.X.shape[1] or len(data) - d.X.shape[1] < 1:
        raise UsageError(f"{metric}: too few observations for the model (every arm needs data at every visit)")
    resid = d.y - d.X @ np.linalg.lstsq(d.X, d.y, rcond=None)[0]
    sigma0 = _pairwise_cov(resid, d)
    tried = []
    for structure in structures if d.t > 1 else ("unstructured",):  # one visit: a variance, nothing to structure
        fit = _fit(d, structure, sigma0)
        if fit is not None:
            break
        tried.append(f"{structure} did not converge")
    else:
        raise UsageError(f"{metric}: the MMRM did not converge with any covariance structure ({'; '.join(tried)})")
    reml, theta, acov, structure = fit
    beta, phi = reml.beta(theta), reml.phi(theta)
    dphi = [(reml.phi(theta + e) - reml.phi(theta - e)) / 2e-6 for e in np.eye(len(theta)) * 1e-6]
    base_mean = float(data["base"].mean())
    xrow = lambda arm, visit: _row(d.columns, arm, visit, base_mean, arms, visits)  # noqa: E731
    ls = _contrast_table([({"arm": a, "visit": v}, xrow(a, v)) for v in visits for a in arms], beta, phi, dphi,
                         acov, level)
    diffs = _contrast_table([({"visit": v, "treatment": a, "control": control}, xrow(a, v) - xrow(control, v))
                             for v in visits for a in treatments], beta, phi, dphi, acov, level)
    sigma = pd.DataFrame(reml.sigma_of(theta), index=visits, columns=visits)
    coef = pd.DataFrame({"term": d.columns, "estimate": beta, "std_error": np.sqrt(np.diag(phi))})
    return MMRMResult(metric, ls, diffs, structure, sigma, True, int(data["subject"].nunique()), len(data), tried,
                      coef, base_mean)


def _row(columns, arm, visit, base, arms, visits):
    x = np.zeros(len(columns))
    values = {"(Intercept)": 1.0, "base": base, f"arm[{arm}]": 1.0, f"visit[{visit}]": 1.0,
              f"arm[{arm}]:visit[{visit}]": 1.0, f"base:visit[{visit}]": base}
    for i, c in enumerate(columns):
        x[i] = values.get(c, 0.0)
    return x


def _pairwise_cov(resid, d: _Design):
    """Residual covariance of the visits from the subjects that have both (positive definite)."""
    t = d.t
    wide = np.full((sum(len(r) for _, r in d.patterns), t), np.nan)
    i = 0
    for idx, rows in d.patterns:
        wide[i:i + len(rows)][:, idx] = resid[rows]
        i += len(rows)
    cov = pd.DataFrame(wide).cov(min_periods=2).to_numpy()
    var = np.where(np.isfinite(np.diag(cov)) & (np.diag(cov) > 0), np.diag(cov), np.nanmean(resid ** 2))
    cov = np.where(np.isfinite(cov), cov, 0.0)
    cov[np.diag_indices(t)] = var
    w, vec = np.linalg.eigh(cov)
    return (vec * np.maximum(w, 1e-3 * var.mean())) @ vec.T


def _fit(d: _Design, structure: str, sigma0):
    """(reml, theta, cov(theta), structure) when REML converges with a positive definite information, else None
    (an ill-conditioned system on the way counts as not converging)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            return _fit_reml(d, structure, sigma0)
        except (linalg.LinAlgWarning, linalg.LinAlgError):
            return None


def _fit_reml(d: _Design, structure: str, sigma0):
    reml = _Reml(d, structure)
    res = optimize.minimize(reml.objective, _start(structure, sigma0), jac=True, method="BFGS",
                            options={"gtol": 1e-7, "maxiter": 2000})
    theta = res.x
    for _ in range(20):  # Newton polish: the REML optimum to machine precision, as the reference fits it
        f, g = reml.objective(theta)
        H = _hessian(reml.objective, theta)
        try:
            step = linalg.solve(H, g, assume_a="sym")
        except (linalg.LinAlgError, ValueError):
            break
        if not np.all(np.isfinite(step)) or not np.isfinite(reml.objective(theta - step)[0]):
            break
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    f, g = reml.objective(theta)
    H = _hessian(reml.objective, theta)
    if not np.isfinite(f) or np.max(np.abs(g)) > 1e-4 * max(1.0, abs(f)) or np.min(np.linalg.eigvalsh(H)) <= 0:
        return None
    return reml, theta, 2 * linalg.inv(H), structure
