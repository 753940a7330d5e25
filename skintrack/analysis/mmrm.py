"""The mixed model for repeated measures (MMRM) of trials, written on numpy.

    change ~ baseline + arm * visit (+ baseline * visit)

fitted by REML with the covariance structure the plan names (`skintrack.analysis.covariance`: unstructured
by default). The REML objective is maximised by Newton steps with its analytic gradient and Hessian in
the structure's natural parameters, halving a step that leaves the positive definite matrices.

Inference, as a SAP states it:

* model-based standard errors with **Kenward-Roger** degrees of freedom and the adjusted covariance of
  the fixed effects (Kenward & Roger 1997, Biometrics 53:983, eqs. 2-5 and the approximation for one
  and several contrasts; the expected information, as pbkrtest; second derivatives where the structure
  is not linear in its parameters), or **Satterthwaite** degrees of freedom (the observed information);
* when the planned structure cannot be fitted (no convergence, an information matrix that is not
  positive definite), the fit falls back to a *heterogeneous* structure only (TOEPH, then ARH(1), then
  CSH) and its inference becomes **empirical**: the CR2 bias-reduced sandwich of Bell & McCaffrey
  (2002) with their Satterthwaite degrees of freedom (as R clubSandwich), which keeps 5% when the
  structure is wrong. Any structure other than unstructured uses the empirical covariance too, unless
  the plan asks for model-based inference. The result says which structure, why, and how;
* a **small-trial guard**: below 15 subjects in the smallest arm, the two paths `benchmarks/operating.py`
  finds liberal at 8 per arm are not taken: Satterthwaite's degrees of freedom (type I error 5.7%, their
  standard errors' small-sample bias uncorrected) become Kenward-Roger's, and heterogeneous Toeplitz with
  CR2 (5.9%: too many parameters for the clusters) leaves the structures tried. The result says so
  (`guarded`); ``guard=False`` fits exactly what is asked (the comparisons with R do).

LS-means take the baseline at its mean over the rows analysed, as R's emmeans and SAS's LSMEANS do.

The numbers match R: ``nlme::gls`` (``corSymm``/``corAR1``/``corCompSymm``/``corExp`` with ``varIdent``),
emmeans, pbkrtest and lmerTest (Kenward-Roger on compound symmetry), clubSandwich (CR2), and a
Kenward-Roger written in R from the paper (``tests/r/kr.R``) for the unstructured model.

Example
-------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(1)
>>> rows = [{"subject": f"S{i}", "arm": "active" if i % 2 else "placebo", "visit": v, "base": b,
...          "chg": 0.5 * b + (2.0 if i % 2 and v == "W8" else 0.0) + rng.normal()}
...         for i, b in enumerate(rng.normal(50, 5, 40)) for v in ("W4", "W8")]
>>> fit = fit_mmrm(pd.DataFrame(rows), visits=["W4", "W8"], control="placebo")
>>> fit.covariance, fit.df_method, fit.converged
('unstructured', 'kenward-roger', True)
>>> fit.diffs[["visit", "treatment", "control"]].values.tolist()
[['W4', 'active', 'placebo'], ['W8', 'active', 'placebo']]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import UsageError
from . import dist
from .covariance import FALLBACK, STRUCTURES

LEVEL = 0.95
EIGEN_ZERO = 1e-10  # an eigenvalue below this share of its matrix's largest is zero (CR2's inverse root)
DF_METHODS = ("kenward-roger", "satterthwaite")
VARIANCES = ("auto", "model", "empirical")


# ---- the data, grouped by the visits (and for spatial power the days) subjects share ---------------------------
@dataclass
class _Group:
    idx: np.ndarray  # visit indices observed
    days: np.ndarray | None
    X: np.ndarray  # n x m x p
    y: np.ndarray  # n x m
    subjects: list


@dataclass
class _Design:
    columns: list
    groups: list
    t: int
    n_obs: int


def _columns(v: np.ndarray, a: np.ndarray, base: np.ndarray, visits: list, arms: list, base_by_visit: bool):
    """(names, X): the full-rank treatment coding of rows with visit codes `v`, arm codes `a` and baseline
    `base`: intercept, base, arm (not the first), visit (not the first), arm:visit, (base:visit)."""
    cols, blocks = ["(Intercept)", "base"], [np.ones(len(v)), base]
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
            blocks.append(base * (v == j))
    return cols, np.column_stack(blocks)


def _design(data: pd.DataFrame, visits: list, arms: list, base_by_visit: bool, by_days: bool) -> _Design:
    """The design (`_columns`), its rows grouped by subject, subjects grouped by their observed visits (and
    days)."""
    v = pd.Categorical(data["visit"], categories=visits).codes
    a = pd.Categorical(data["arm"], categories=arms).codes
    cols, X = _columns(v, a, data["base"].to_numpy(float), visits, arms, base_by_visit)
    y = data["chg"].to_numpy(float)
    days = data["days"].to_numpy(float) if by_days else None
    subject = data["subject"].to_numpy()
    order = np.lexsort((v, subject))
    groups: dict[tuple, list] = {}
    start = 0
    for s in range(1, len(order) + 1):
        if s == len(order) or subject[order[s]] != subject[order[start]]:
            rows = order[start:s]
            key = (tuple(v[rows]),) + ((tuple(days[rows]),) if by_days else ())
            groups.setdefault(key, []).append(rows)
            start = s
    out = []
    for key, members in groups.items():
        rows = np.array(members)
        out.append(_Group(np.array(key[0]), np.array(key[1]) if by_days else None, X[rows], y[rows],
                          [subject[r[0]] for r in members]))
    return _Design(cols, out, len(visits), len(data))


def _cholesky(a: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of `a`, or None when `a` is not positive definite: numpy's LAPACK potrf.
    scipy.linalg would do the same, but importing it costs 0.3 s of CPU: more than a trial's MMRM."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        return None


def _cho_inverse(c: np.ndarray) -> np.ndarray:
    """(c c')^-1 for the factor `_cholesky` gives, as c'^-1 c^-1."""
    ci = np.linalg.inv(c)
    return ci.T @ ci


# ---- REML: the objective, its analytic gradient and Hessian, and the pieces inference needs ---------------------
class _Reml:
    """-2 x the REML log-likelihood (without constants) of the design under one structure, in the structure's
    natural parameters phi. Each group's arrays are kept visit-major (m x n x p), so that every product
    over its subjects is one matrix multiplication."""

    def __init__(self, d: _Design, structure):
        self.d, self.s = d, structure
        self.p = len(d.columns)
        self.groups = [(g, g.X.transpose(1, 0, 2).copy(), g.y.T.copy()) for g in d.groups]  # (m, n, p), (m, n)

    def _blocks(self, phi):
        """Per group: (S^-1, logdet S, dS, d2S), or None when some S is not positive definite."""
        out = []
        for g, _, _ in self.groups:
            S, dS, d2S = self.s.build(phi, g.idx, g.days)
            if not np.all(np.isfinite(S)):
                return None
            c = _cholesky(S)
            if c is None:
                return None
            Si = _cho_inverse(c)
            out.append((Si, 2 * np.sum(np.log(np.diag(c))), dS, d2S))
        return out

    def valid(self, phi) -> bool:
        return self._blocks(phi) is not None

    def evaluate(self, phi, order: int = 2) -> dict | None:
        """{f, beta, Phi = (X'V^-1X)^-1, and with order >= 1 grad, A_k = X'V^-1 dV_k V^-1 X, with order 2 hess and
        the expected information}; None where phi is not admissible."""
        blocks = self._blocks(phi)
        if blocks is None:
            return None
        p, K = self.p, len(phi)
        M, b, logdet = np.zeros((p, p)), np.zeros(p), 0.0
        SXs = []
        for (g, Xv, yv), (Si, ld, _, _) in zip(self.groups, blocks):
            m, n = yv.shape
            SX = (Si @ Xv.reshape(m, n * p)).reshape(m * n, p)  # S^-1 X, rows (visit, subject)
            SXs.append(SX)
            M += Xv.reshape(m * n, p).T @ SX
            b += SX.T @ yv.ravel()
            logdet += n * ld
        cm = _cholesky(M) if np.all(np.isfinite(M)) else None
        if cm is None:
            return None
        Phi = _cho_inverse(cm)
        beta = Phi @ b
        quad, resid = 0.0, []
        for (g, Xv, yv), (Si, _, _, _) in zip(self.groups, blocks):
            r = yv - Xv @ beta  # (m, n)
            sres = Si @ r
            resid.append((r.T, sres))
            quad += float(np.sum(r * sres))
        f = logdet + 2 * np.sum(np.log(np.diag(cm))) + quad
        out = {"f": f, "beta": beta, "Phi": Phi, "blocks": blocks, "SX": SXs, "resid": resid}
        if order == 0:
            return out
        grad, A, parts = np.zeros(K), np.zeros((K, p, p)), []
        for (g, Xv, yv), (Si, _, dS, d2S), SX, (r, sres) in zip(self.groups, blocks, SXs, resid):
            m, n = yv.shape
            W = (dS @ SX.reshape(m, n * p)).reshape(K, m * n, p)  # dV_k V^-1 X
            A += SX.T @ W
            ts = dS @ sres  # dV_k V^-1 r, (K, m, n)
            grad += n * np.sum(Si * dS, axis=(1, 2)) - np.sum(ts * sres, axis=(1, 2))
            parts.append((W, ts))
        grad -= np.sum(Phi * A, axis=(1, 2))
        out.update(grad=grad, A=A)
        if order == 1:
            return out
        hess, info, B = np.zeros((K, K)), np.zeros((K, K)), np.zeros((K, p))
        PhiA = Phi @ A
        trPAPA = PhiA.reshape(K, -1) @ PhiA.transpose(0, 2, 1).reshape(K, -1).T
        for (g, Xv, yv), (Si, _, dS, d2S), SX, (r, sres), (W, ts) in zip(self.groups, blocks, SXs, resid, parts):
            m, n = yv.shape
            D = Si @ dS
            trDD = n * (D.reshape(K, -1) @ D.transpose(0, 2, 1).reshape(K, -1).T)
            SW = (Si @ W.reshape(K, m, n * p)).reshape(K, -1)
            trPhiQ = (W @ Phi).reshape(K, -1) @ SW.T  # tr(Phi Q_kl)
            Sts = Si @ ts
            u = ts.reshape(K, -1) @ Sts.reshape(K, -1).T  # r'V^-1 dV_k V^-1 dV_l V^-1 r
            B += ts.reshape(K, -1) @ SX  # X' V^-1 dV_k V^-1 r
            hess += -trDD + 2 * trPhiQ + 2 * u
            info += trDD - 2 * trPhiQ
            if d2S is not None:
                outer = sres @ sres.T
                hess += n * np.sum(Si * d2S, axis=(2, 3)) - np.sum(d2S * outer, axis=(2, 3))
                R = SX.T @ (d2S @ SX.reshape(m, n * p)).reshape(K, K, m * n, p)
                hess -= np.sum(Phi * R, axis=(2, 3))
        hess -= trPAPA + 2 * B @ Phi @ B.T
        info = (info + trPAPA) / 2
        out.update(hess=(hess + hess.T) / 2, info=(info + info.T) / 2)
        return out

    def kr_pieces(self, phi, blocks, SXs):
        """Q_kl = X'V^-1 dV_k V^-1 dV_l V^-1 X and R_kl = X'V^-1 d2V_kl V^-1 X (K x K x p x p)."""
        K, p = len(phi), self.p
        Q, R = np.zeros((K, K, p, p)), np.zeros((K, K, p, p))
        for (g, Xv, yv), (Si, _, dS, d2S), SX in zip(self.groups, blocks, SXs):
            m, n = yv.shape
            W = (dS @ SX.reshape(m, n * p)).reshape(K, m * n, p)
            SW = (Si @ W.reshape(K, m, n * p)).reshape(K, m * n, p)
            Q += W.transpose(0, 2, 1)[:, None] @ SW[None]
            if d2S is not None:
                R += SX.T @ (d2S @ SX.reshape(m, n * p)).reshape(K, K, m * n, p)
        return Q, R


def _newton(reml: _Reml, phi0, max_iter: int = 200):
    """Maximise the REML likelihood from phi0: Newton steps (on a Hessian made positive definite where it is
    not), halved until admissible and downhill. Returns (phi, evaluation) at convergence, or None."""
    phi = np.asarray(phi0, float)
    e = reml.evaluate(phi)
    if e is None:
        return None
    for _ in range(max_iter):
        # on the Hessian scaled to a unit diagonal: the variances' units (a metric's scale) drop out, so that a
        # floor relative to its largest eigenvalue means the same for an area in 0.01 as for a count in 1000s
        unit, scale = _unit_diagonal(e["hess"])
        w, vec = np.linalg.eigh(unit)
        floor = 1e-8 * max(1.0, np.max(np.abs(w)))
        step = -scale * ((vec / np.maximum(np.abs(w), floor)) @ (vec.T @ (scale * e["grad"])))
        decrement = float(-e["grad"] @ step)
        if decrement < 1e-14 * max(1.0, abs(e["f"])) and np.all(w > 0):
            return phi, e
        stalled = (phi, e) if decrement < 1e-8 * max(1.0, abs(e["f"])) and np.all(w > 0) else None
        t = 1.0
        while t > 1e-12:
            cand = phi + t * step
            c = reml.evaluate(cand, order=2 if t == 1.0 else 0)  # a halved step: its objective alone, until taken
            if c is not None and c["f"] <= e["f"] - 1e-4 * t * decrement:
                break
            t /= 2
        else:
            return stalled
        if c["f"] >= e["f"]:  # a step so short the objective cannot tell: at the optimum to rounding, or stuck
            return stalled
        phi, e = cand, c if t == 1.0 else reml.evaluate(cand)
    return None


def _rises_to_singular(reml: _Reml, phi0) -> bool:
    """Why Newton found no unstructured optimum: whether the REML likelihood, searched over every positive
    definite covariance (scipy's BFGS over its Cholesky factor, the diagonal on the log scale, as nlme's own
    parameters; the analytic gradient carried over), rises toward a singular covariance. nlme then stops near
    that edge at a point whose gradient is not 0 and prints its numbers; the fit here refuses it instead."""
    from scipy.optimize import minimize

    t = reml.d.t
    rows, cols = np.tril_indices(t)
    diag = rows == cols

    def factor(theta):
        L = np.zeros((t, t))
        L[rows, cols] = np.where(diag, np.exp(np.minimum(theta, 350.0)), theta)
        return L

    def objective(theta):
        L = factor(theta)
        e = reml.evaluate((L @ L.T)[rows, cols], order=1)
        if e is None:
            return np.inf, np.zeros_like(theta)
        G = np.zeros((t, t))
        G[rows, cols] = e["grad"]
        M = (G + G.T) / 2  # d f / d S, symmetric: a covariance parameter stands for two cells of S
        dL = 2 * (M @ L)[rows, cols]  # d tr(M L L') / d L, its lower triangle
        return e["f"], np.where(diag, dL * L[rows, cols], dL)

    start = np.linalg.cholesky(reml.s.full(phi0, t))
    theta = minimize(objective, np.where(diag, np.log(np.diag(start)[rows]), start[rows, cols]), jac=True,
                     method="BFGS", options={"maxiter": 2000}).x
    L = factor(theta)
    w = np.linalg.eigvalsh(_unit_diagonal(L @ L.T)[0])
    return bool(w[0] < 1e-6 * w[-1])


def _unit_diagonal(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D a D, d): the symmetric matrix `a` scaled by the diagonal D = diag(d) to a unit diagonal (Jacobi; d is 1
    where a diagonal entry is 0)."""
    d = np.abs(np.diag(a))
    scale = 1 / np.sqrt(np.where(d > 0, d, 1.0))
    return a * np.outer(scale, scale), scale


def _positive_definite(a: np.ndarray) -> bool:
    """Whether the symmetric matrix `a` is positive definite, judged at a unit diagonal."""
    return bool(np.min(np.linalg.eigvalsh(_unit_diagonal(a)[0])) > 0)


def _scaled_inv(a: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric matrix `a`, taken at a unit diagonal: the variances' units would otherwise
    spread its entries over 20 orders of magnitude for a metric in 1000s."""
    unit, scale = _unit_diagonal(a)
    return np.linalg.inv(unit) * np.outer(scale, scale)


def _pairwise_cov(d: _Design, resid: np.ndarray):
    """Residual covariance of the visits from the subjects that have both (made positive definite)."""
    t = d.t
    rows = [(g.idx, r) for g, rr in zip(d.groups, resid) for r in rr]
    wide = np.full((len(rows), t), np.nan)
    for i, (idx, r) in enumerate(rows):
        wide[i, idx] = r
    cov = pd.DataFrame(wide).cov(min_periods=2).to_numpy()
    flat = np.concatenate([r for _, r in rows])
    var = np.where(np.isfinite(np.diag(cov)) & (np.diag(cov) > 0), np.diag(cov), np.mean(flat ** 2))
    cov = np.where(np.isfinite(cov), cov, 0.0)
    cov[np.diag_indices(t)] = var
    w, vec = np.linalg.eigh(cov)
    return (vec * np.maximum(w, 1e-3 * var.mean())) @ vec.T


def _fit(d: _Design, structure, sigma0, gap, diagnose: bool = True):
    """(reml, (phi, evaluation), "") of one structure, or (reml, None, why it failed). Newton starts from the
    pairwise covariance `sigma0`; where it does not converge from there, from the visits' variances alone with no
    correlation (nlme's own start): a pairwise covariance of a small trial with missing visits can be near
    singular, and its steps then wander along the edge of the admissible set (R converges from its start).
    `diagnose`: tell an unstructured likelihood that rises toward a singular covariance from one that did not
    converge (a search of its own; a bootstrap sample that fails is drawn again, and needs no why)."""
    reml = _Reml(d, structure)
    for sigma in (sigma0, np.diag(np.diag(sigma0))):
        phi0 = structure.start(sigma, gap)
        shrink = 1.0
        while not reml.valid(phi0) and shrink > 1e-3:  # a start outside the admissible set: correlations toward 0
            shrink /= 2
            phi0 = structure.start(sigma * shrink + np.diag(np.diag(sigma)) * (1 - shrink), gap)
        if (got := _newton(reml, phi0)) is not None:
            break
    else:
        if diagnose and structure.name == "unstructured" and _rises_to_singular(reml, phi0):
            return reml, None, ("its likelihood keeps rising toward a singular covariance of the visits (no optimum "
                                "inside: too few subjects at the visits for an unstructured covariance, or visits "
                                "whose changes move together exactly)")
        return reml, None, "did not converge"
    phi, e = got
    if not (_positive_definite(e["hess"]) and _positive_definite(e["info"])):
        return reml, None, "its information matrix is not positive definite"
    return reml, (phi, e), ""


# ---- inference ---------------------------------------------------------------------------------------------------
class _Inference:
    """The covariance of beta and the degrees of freedom of any contrast, by the method chosen."""

    def __init__(self, reml: _Reml, phi, e, method: str, variance: str):
        self.method, self.variance, self.beta, self.Phi = method, variance, e["beta"], e["Phi"]
        self.A = e["A"]
        if variance == "empirical":
            self.V, self._cr2 = _cr2(reml, e)
        elif method == "kenward-roger":
            self.W = _scaled_inv(e["info"])
            Q, R = reml.kr_pieces(phi, e["blocks"], e["SX"])
            Phi, A = self.Phi, self.A
            U = np.einsum("kl,klpq->pq", self.W, Q - np.einsum("kpq,qr,lrs->klps", A, Phi, A) - R / 4)
            self.V = Phi + 2 * Phi @ U @ Phi
        else:
            self.W = 2 * _scaled_inv(e["hess"])  # cov(phi) from the observed information of -2 log L
            self.V = self.Phi

    def df(self, C: np.ndarray) -> np.ndarray:
        """The degrees of freedom of each contrast (a row of C)."""
        C = np.atleast_2d(C)
        if self.variance == "empirical":
            return _cr2_df(C, *self._cr2)
        CP = C @ self.Phi
        g = np.sum((CP @ self.A) * CP, axis=2).T  # d(c' Phi c)/dphi_k, one row per contrast
        var = np.sum(CP * C, axis=1)
        if self.method == "kenward-roger":  # one contrast: m = 2 / A2, A2 = a' W a (Kenward & Roger 1997)
            a = g / var[:, None]
            a2 = np.einsum("rk,kl,rl->r", a, self.W, a)
            return np.where(a2 > 0, 2 / np.where(a2 > 0, a2, 1), np.inf)
        denom = np.einsum("rk,kl,rl->r", g, self.W, g)
        return np.where(denom > 0, 2 * var ** 2 / np.where(denom > 0, denom, 1), np.inf)


def _cr2(reml: _Reml, e) -> tuple[np.ndarray, tuple]:
    """The CR2 sandwich (clubSandwich's vcovCR(type = "CR2") of a gls fit, its working covariance the
    fitted one) and what its Satterthwaite df needs, computed for each group's subjects at once."""
    M, p = e["Phi"], reml.p
    meat = np.zeros((p, p))
    G, H = [], []
    LM = np.linalg.cholesky(M)
    for g, (Si, _, _, _), (r, _) in zip(reml.d.groups, e["blocks"], e["resid"]):
        theta = np.linalg.inv(Si)
        L = np.linalg.cholesky(theta)  # theta = L L', R's chol(theta) is L'
        X = g.X  # (n, m, p)
        Gj = L.T @ (theta - X @ M @ X.transpose(0, 2, 1)) @ L
        w, vec = np.linalg.eigh((Gj + Gj.transpose(0, 2, 1)) / 2)
        # the inverse root where an eigenvalue is not zero: relative to the block's largest, as clubSandwich's
        # absolute 1e-12 depends on the metric's units (a subject fitted exactly, leverage 1, left 1.5e-12
        # against 345, and an inverse root of 8e5 made every df of the fit meaningless)
        kept = w > EIGEN_ZERO * np.max(w, axis=1, keepdims=True)
        inv_sqrt = (vec / np.sqrt(np.where(kept, w, np.inf))[:, None, :]) @ vec.transpose(0, 2, 1)
        E = X.transpose(0, 2, 1) @ Si @ (L @ inv_sqrt @ L.T)  # (n, p, m)
        u = (E @ r[:, :, None])[:, :, 0]
        meat += u.T @ u
        ME = M @ E
        G.append(ME @ L)
        H.append(ME @ X @ LM)
    return M @ meat @ M, (G, np.concatenate(H))


def _cr2_df(C, G, H) -> np.ndarray:
    """Bell and McCaffrey's Satterthwaite df of each c' V_CR2 c under the working model (clubSandwich's
    coef_test/linear_contrast, test = "Satterthwaite"): tr(P)^2 / ||P||^2 with P = diag(g) - h h', computed
    without forming P."""
    gdiag = np.concatenate([np.sum(np.einsum("rp,npm->rnm", C, Gg) ** 2, axis=2) for Gg in G], axis=1)  # (r, J)
    out = []
    for c, gd in zip(C, gdiag):
        h = np.einsum("p,jpq->jq", c, H)  # (J, p)
        hh = np.sum(h * h, axis=1)
        trace = float(np.sum(gd - hh))
        # ||P||^2: P's diagonal from its differences, its off-diagonal h_j'h_k from h'h (never g^2 - 2 g hh + hh^2,
        # whose terms cancel); NaN where it is 0: no df
        square = float(np.sum((gd - hh) ** 2) + max(np.sum((h.T @ h) ** 2) - np.sum(hh ** 2), 0.0))
        out.append(trace ** 2 / square if square > 0 and trace > 0 else math.nan)
    return np.array(out)


def _table(rows, inf: _Inference, level) -> pd.DataFrame:
    labels, C = [r[0] for r in rows], np.array([r[1] for r in rows], float)
    est = C @ inf.beta
    se = np.sqrt(np.maximum(np.sum((C @ inf.V) * C, axis=1), 0.0))
    df = inf.df(C)
    q = dist.t_ppf(0.5 + level / 2, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, est / se, np.nan)
    p = np.where(se > 0, 2 * dist.t_sf(np.abs(t), df), np.nan)
    return pd.DataFrame([{**lab, "estimate": e, "std_error": s_, "df": d, "ci_low": e - q_ * s_, "ci_high": e + q_ * s_,
                          "t": t_, "p": p_} for lab, e, s_, d, q_, t_, p_ in zip(labels, est, se, df, q, t, p)])


# ---- the result --------------------------------------------------------------------------------------------------
SMALL_ARM = 15  # below this many subjects in an arm, the guard keeps the fit off the liberal paths
LIBERAL_SMALL = {"satterthwaite": "Satterthwaite's degrees of freedom replaced by Kenward-Roger's (below 15 subjects "
                                  "per arm they leave the standard errors' bias uncorrected: type I error 5.7% at 8 "
                                  "per arm in benchmarks/operating.py)",
                 "toeplitz_h": "heterogeneous Toeplitz not used (below 15 subjects per arm its CR2 standard errors "
                               "are liberal: type I error 5.9% at 8 per arm in benchmarks/operating.py)"}


@dataclass
class MMRMResult:
    """A fitted MMRM: `.lsmeans` (arm x visit) and `.diffs` (each treatment minus control per visit), each
    with estimate, std_error, df, ci_low, ci_high, p; the covariance structure used, why, and how its
    inference was made (`df_method`, `variance`), what was tried before it, and `contrast()` for any other."""

    metric: str
    lsmeans: pd.DataFrame
    diffs: pd.DataFrame
    covariance: str
    sigma: pd.DataFrame
    converged: bool
    n_subjects: int
    n_obs: int
    df_method: str = "kenward-roger"
    variance: str = "model"
    why: str = ""
    tried: list = field(default_factory=list)
    coefficients: pd.DataFrame | None = None
    parameters: dict = field(default_factory=dict)
    base_mean: float = math.nan
    excluded: pd.DataFrame | None = None
    assumed: list = field(default_factory=list)
    qc: str = ""
    level: float = LEVEL
    smallest_arm: int = 0  # subjects in the smallest arm
    guarded: list = field(default_factory=list)  # what the small-trial guard changed, in words
    _inference: _Inference | None = field(default=None, repr=False)
    _row: object = field(default=None, repr=False)

    def __deepcopy__(self, memo) -> MMRMResult:
        """The fit itself: a frame holding it in `.attrs` (pandas deep-copies those at every operation) shares
        it, as every caller of `Study.mmrm` does."""
        return self

    def diff(self, visit, treatment=None) -> dict:
        """The row of `.diffs` at `visit` (for `treatment`, default the only one) as a dict of plain values:
        visit, treatment, control, estimate, std_error, df, ci_low, ci_high, t, p. (A row of a frame that mixes
        text and numbers would be a Series of objects, which pandas shows rounded to 6 decimals: p 3e-08 as 0.0.)

        >>> from skintrack.demo import demo_study
        >>> d = demo_study().mmrm("score.water").diff("W12")
        >>> d["treatment"], d["p"] < 1e-6
        ('active', True)
        """
        rows = self.diffs[self.diffs["visit"] == visit]
        if treatment is not None:
            rows = rows[rows["treatment"] == treatment]
        if len(rows) != 1:
            have = "; ".join(f"{v} ({t})" for v, t in zip(self.diffs["visit"], self.diffs["treatment"]))
            raise UsageError(f"{self.metric + ': ' if self.metric else ''}no single difference at visit {visit!r}"
                             + (f" for {treatment!r}" if treatment else "")
                             + f": the fit has {have or 'none'}")
        return {k: v.item() if hasattr(v, "item") else v for k, v in rows.iloc[0].items()}

    def contrast_vector(self, visit, treatment, control=None) -> np.ndarray:
        """The contrast of `treatment` minus `control` (default the fit's) at `visit`."""
        return self._row(treatment, visit) - self._row(control or self.diffs["control"].iloc[0], visit)

    def contrasts(self, vectors: dict, level: float | None = None) -> pd.DataFrame:
        """Estimate, SE, df, CI (at `level`), t and p of each {label: contrast vector}, by the fit's method."""
        return _table([({"contrast": k}, np.asarray(v, float)) for k, v in vectors.items()], self._inference,
                      level or self.level)

    def covariance_of(self, vectors: list) -> np.ndarray:
        """The covariance of several contrasts (for simultaneous inference such as Dunnett's)."""
        C = np.array(vectors, float)
        return C @ self._inference.V @ C.T

    @property
    def method(self) -> str:
        """How the numbers were made, in a sentence for a methods section."""
        inference = ("empirical (CR2 sandwich) standard errors with Bell-McCaffrey degrees of freedom"
                     if self.variance == "empirical" else
                     f"model-based standard errors with {self.df_method.title()} degrees of freedom"
                     + (" and the Kenward-Roger adjusted covariance" if self.df_method == "kenward-roger" else ""))
        caution = "".join(f"; {g}" for g in self.guarded)
        return (f"MMRM of the change on baseline, arm, visit and arm by visit; {STRUCTURES[self.covariance].sas} "
                f"covariance ({self.why}); REML; {inference}{caution}")

    @property
    def headline(self) -> str:
        """The fit in a sentence: the metric, how it was fitted, on how many subjects and observations."""
        return (f"MMRM of {self.metric}: {self.method}; {self.n_subjects} subjects, {self.n_obs} post-baseline "
                "observations" + ("" if self.converged else " (DID NOT CONVERGE)"))

    def summary(self) -> str:
        show = lambda df: df.to_string(index=False, float_format=lambda x: f"{x:.4g}")  # noqa: E731
        return f"{self.headline}\n\nLS-means\n{show(self.lsmeans)}\n\nDifferences\n{show(self.diffs)}"

    __str__ = summary

    def __repr__(self) -> str:
        return (f"<MMRMResult {self.metric}: {self.covariance}, {self.df_method}, {self.variance}, "
                f"{self.n_subjects} subjects>")

    def _repr_html_(self) -> str:
        """Jupyter's view: the method, then the differences and LS-means rounded as the report rounds them."""
        from ..show.display import fit_html

        return fit_html(self)


def fit_mmrm(data: pd.DataFrame, visits: list, control: str, treatments=None, base_by_visit: bool = False,
             structures=None, df: str = "kenward-roger", variance: str = "auto", level: float = LEVEL,
             metric: str = "", guard: bool = True) -> MMRMResult:
    """Fit the MMRM to `data` (columns subject, arm, visit, base, chg, and days for spatial power: one row
    per post-baseline observation). `visits` are the post-baseline visits in order; `control` is the
    reference arm and `treatments` the arms compared with it (default: every other arm present).

    `structures` is the planned structure and what may follow it (default: unstructured, then the
    heterogeneous fallbacks); `df` is "kenward-roger" or "satterthwaite"; `variance` is "model",
    "empirical" or "auto" (model-based for the unstructured structure, empirical for any other); `guard`
    keeps a trial with fewer than 15 subjects in an arm off the liberal paths (see the module docstring)."""
    if df not in DF_METHODS:
        raise UsageError(f"df {df!r}: use {' or '.join(DF_METHODS)}")
    if variance not in VARIANCES:
        raise UsageError(f"variance {variance!r}: use {', '.join(VARIANCES)}")
    structures = list(structures or ("unstructured", *FALLBACK))
    unknown = [s for s in structures if s not in STRUCTURES]
    if unknown:
        raise UsageError(f"covariance {', '.join(unknown)}: use one of {', '.join(STRUCTURES)}")
    data, visits, treatments = _analysed(data, visits, control, treatments, metric)
    arms = [control, *treatments]
    smallest = int(data.groupby("arm")["subject"].nunique().min())
    guarded = []
    if guard and smallest < SMALL_ARM:
        if df == "satterthwaite" and variance != "empirical":
            df = "kenward-roger"
            guarded.append(LIBERAL_SMALL["satterthwaite"])
        if "toeplitz_h" in structures:
            structures = [s for s in structures if s != "toeplitz_h"] or ["ar1_h", "cs_h"]
            guarded.append(LIBERAL_SMALL["toeplitz_h"])
    base_mean, tried = float(data["base"].mean()), []
    while True:  # the first structure fitted whose every LS-mean and difference has a standard error and df
        d, name, reml, phi, e = _search(data, visits, arms, base_by_visit, structures, metric, tried)
        how = ("model" if name == "unstructured" else "empirical") if variance == "auto" else variance
        inference = _Inference(reml, phi, e, df, how)
        row = lambda arm, visit: design_row(d.columns, arm, visit, base_mean)  # noqa: E731
        ls = _table([({"arm": a, "visit": v}, row(a, v)) for v in visits for a in arms], inference, level)
        diffs = _table([({"visit": v, "treatment": a, "control": control}, row(a, v) - row(control, v))
                        for v in visits for a in treatments], inference, level)
        undefined = [f"{r.arm} {r.visit}" for r in ls.itertuples() if not (r.std_error > 0 and r.df > 0)] + [
            f"{r.treatment} - {r.control} {r.visit}" for r in diffs.itertuples() if not (r.std_error > 0 and r.df > 0)]
        if not undefined:
            break
        tried.append(f"{STRUCTURES[name].sas}: no {'empirical (CR2)' if how == 'empirical' else 'model-based'} "
                     f"standard error or df at {', '.join(undefined)} (too few subjects there)")
        structures = structures[structures.index(name) + 1:]
        if not structures or len(visits) == 1:  # one visit has one structure
            raise _unfitted(metric, tried)
    why = "as planned" if not tried else f"fell back: {'; '.join(tried)}"
    t = d.t
    sigma = pd.DataFrame(_sigma(data, name, phi, t), index=visits, columns=visits)
    coef = pd.DataFrame({"term": d.columns, "estimate": e["beta"], "std_error": np.sqrt(np.diag(inference.V))})
    result = MMRMResult(metric, ls, diffs, name, sigma, True, int(data["subject"].nunique()), len(data),
                        df_method="bell-mccaffrey" if how == "empirical" else df, variance=how, why=why, tried=tried,
                        coefficients=coef, parameters=STRUCTURES[name].describe(phi, t), base_mean=base_mean,
                        level=level, smallest_arm=smallest, guarded=guarded)
    result._inference, result._row = inference, row
    return result


class Resamples:
    """REML fits of the MMRM of the change (arm by visit, baseline by visit) to resamples of one trial's
    subjects, from arrays: what multiple imputation does a hundred times a report. `wide` holds each
    subject's changes (subjects x visits, NaN where missing), `arms` and `base` their arm and baseline.
    The first of `structures` that fits the trial as observed (`.structure`) is fitted to every resample.

    >>> wide = np.array([[1.0, 2.0], [0.5, np.nan], [3.0, 4.5], [2.0, 2.5], [0.0, 1.0], [4.0, 5.5]])
    >>> fits = Resamples(wide, np.array(["p", "p", "a", "p", "a", "a"]), np.array([50.0, 52, 49, 51, 48, 53]),
    ...                  ["W4", "W8"], "p", ["a"], ["cs_h"])
    >>> beta, sigma = fits.fit(np.array([0, 1, 3, 3, 2, 4, 5, 5]))
    >>> fits.structure, beta.shape, sigma.shape, fits.means(beta)[0].shape
    ('cs_h', (6,), (2, 2), (6, 2))
    """

    def __init__(self, wide, arms, base, visits, control, treatments, structures):
        n, t = wide.shape
        self.wide, self.observed = wide, ~np.isnan(wide) & ~np.isnan(base)[:, None]
        i, j = np.nonzero(self.observed)
        data = pd.DataFrame({"subject": i, "arm": arms[i], "visit": np.asarray(visits, object)[j], "base": base[i],
                             "chg": wide[i, j]})
        data, held, treatments = _analysed(data, visits, control, treatments, "")
        if held != list(visits):  # a visit nobody attended has no covariance to draw from
            missing = ", ".join(v for v in visits if v not in held)
            raise UsageError(f"no subject has a value at {missing}: leave the visit out of the imputation model")
        order = [control, *treatments]
        d, self.structure, *_ = _search(data, held, order, True, structures, "", [])  # by visit: no days

        def every_visit(arm_codes):  # the design's rows of every subject at every visit (n x t x p)
            return _columns(np.tile(np.arange(t), n), np.repeat(arm_codes, t), np.repeat(base, t), held, order,
                            True)[1].reshape(n, t, -1)

        self.columns, self.t = d.columns, t
        self.X, self.X_ref = every_visit(pd.Categorical(arms, categories=order).codes), every_visit(np.zeros(n, int))

    def fit(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(beta, the covariance of the visits) fitted to the subjects at `rows` (repeats allowed); a UsageError
        when they cannot be fitted."""
        observed = self.observed[rows]
        patterns, which = np.unique(observed, axis=0, return_inverse=True)
        groups = []
        for k, pattern in enumerate(patterns):
            idx, members = np.flatnonzero(pattern), rows[which.ravel() == k]
            if len(idx):
                groups.append(_Group(idx, None, self.X[members][:, idx], self.wide[members][:, idx], list(members)))
        d = _Design(self.columns, groups, self.t, int(observed.sum()))
        structure = STRUCTURES[self.structure]
        _, got, why = _fit(d, structure, _start(d, "resample"), 1.0, diagnose=False)
        if got is None:
            raise UsageError(f"resample: {why}")
        return got[1]["beta"], structure.full(got[0], self.t)

    def means(self, beta) -> tuple[np.ndarray, np.ndarray]:
        """Each subject's fitted mean at every visit (subjects x visits) under their own arm, and under the
        control arm."""
        return self.X @ beta, self.X_ref @ beta


def _analysed(data, visits, control, treatments, metric):
    """(the rows the model reads, the visits they have, the treatment arms present)."""
    keep = data["chg"].notna().to_numpy() & data["base"].notna().to_numpy() & data["visit"].isin(visits).to_numpy()
    arm = data["arm"].to_numpy()
    present = set(arm[keep])
    if not present:
        raise UsageError(f"{metric}: no value of it after the baseline in this study")
    if control not in present:
        raise UsageError(f"{metric}: the control arm {control!r} has no post-baseline observation")
    treatments = [a for a in (treatments or sorted(present - {control})) if a in present]
    if not treatments:
        raise UsageError(f"{metric}: no treatment arm with post-baseline observations to compare with {control!r}")
    data = data[keep & np.isin(arm, [control, *treatments])]  # one mask: the rows in their order
    held = [v for v in visits if v in set(data["visit"])]
    for column, what in (("chg", "change from baseline"), ("base", "baseline value")):
        if data[column].nunique() == 1:  # a metric that never moved (0 wrinkles throughout) has nothing to model
            raise UsageError(f"{metric}: every subject's {what} is {data[column].iloc[0]:g}: the MMRM has nothing to "
                             "estimate it from")
    cells = set(zip(data["arm"], data["visit"]))
    empty = [f"{a} at {v}" for v in held for a in (control, *treatments) if (a, v) not in cells]
    if empty:
        raise UsageError(f"{metric}: no observation of {', '.join(empty)}: the model estimates each arm at each "
                         "visit")
    return data, held, treatments


def _search(data, visits, arms, base_by_visit, structures, metric, tried: list):
    """(design, structure, its REML, phi, evaluation): the first of `structures` fitted; what failed before it
    is added to `tried`."""
    if len(visits) == 1:  # one visit: a variance, nothing to structure
        structures = ["unstructured"]
    by_days = any(STRUCTURES[s].uses_days for s in structures)
    if by_days and ("days" not in data or data["days"].isna().any()):
        raise UsageError(f"{metric}: spatial power needs the day of every capture (taken_at)")
    d = _design(data, visits, arms, base_by_visit, False)
    sigma0 = _start(d, metric)
    gap = float(np.mean(np.diff(sorted(data.groupby("visit")["days"].mean())))) if by_days and len(visits) > 1 \
        else 1.0
    for name in structures:
        design = _design(data, visits, arms, base_by_visit, True) if STRUCTURES[name].uses_days else d
        reml, got, why = _fit(design, STRUCTURES[name], sigma0, gap)
        if got is not None:
            return d, name, reml, *got
        tried.append(f"{STRUCTURES[name].sas}: {why}")
    raise _unfitted(metric, tried)


def _unfitted(metric: str, tried: list) -> UsageError:
    return UsageError(f"{metric + ': ' if metric else ''}the MMRM could not be fitted with any covariance structure "
                      f"({'; '.join(tried)})")


def _stacked(d: _Design, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): the design's rows stacked; a UsageError when the design is not of full rank."""
    X = np.concatenate([g.X.reshape(-1, g.X.shape[2]) for g in d.groups])
    if np.linalg.matrix_rank(X) < X.shape[1] or d.n_obs - X.shape[1] < 1:
        raise UsageError(f"{metric}: too few observations for the model (every arm needs data at every visit)")
    return X, np.concatenate([g.y.ravel() for g in d.groups])


def _start(d: _Design, metric: str) -> np.ndarray:
    """The starting covariance of the visits: pairwise, from least-squares residuals."""
    X, y = _stacked(d, metric)
    beta0 = np.linalg.lstsq(X, y, rcond=None)[0]
    return _pairwise_cov(d, [g.y - g.X @ beta0 for g in d.groups])


def _sigma(data, name, phi, t) -> np.ndarray:
    days = np.array(sorted(data.groupby("visit")["days"].median())) if STRUCTURES[name].uses_days else None
    return STRUCTURES[name].full(phi, t, days)


def design_row(columns, arm, visit, base) -> np.ndarray:
    """The row of the design for `arm` at `visit` with baseline `base` (columns as the fit names them)."""
    x = np.zeros(len(columns))
    values = {"(Intercept)": 1.0, "base": base, f"arm[{arm}]": 1.0, f"visit[{visit}]": 1.0,
              f"arm[{arm}]:visit[{visit}]": 1.0, f"base:visit[{visit}]": base}
    for i, c in enumerate(columns):
        x[i] = values.get(c, 0.0)
    return x
