"""Covariance structures of the MMRM: a subject's post-baseline visits, as a named menu.

Each structure is a function of its natural parameters ``phi`` (variances, covariances and
correlations, the parameters SAS reports), giving for one group of subjects (who share their visits,
and for spatial power their days) the covariance ``S`` (m x m), its first derivatives ``dS`` (K x m x m)
and, when it is not linear in ``phi``, its second derivatives ``d2S`` (K x K x m x m): what the REML
Newton steps, the Satterthwaite and the Kenward-Roger computations need.

::

    name             SAS             R (nlme::gls)                       parameters
    unstructured     UN              corSymm + varIdent                  every variance and covariance (linear)
    toeplitz_h       TOEPH           corARMA(p = T - 1) + varIdent       T variances, T-1 lag correlations
    ar1_h            ARH(1)          corAR1 + varIdent                   T variances, rho
    cs_h             CSH             corCompSymm + varIdent              T variances, rho
    spatial_power    SP(POW)         corExp(~ day) + varIdent            T variances, rho per day
    toeplitz         TOEP            corARMA(p = T - 1)                  T lag covariances (linear)
    ar1              AR(1)           corAR1                              sigma^2, rho
    cs               CS              corCompSymm / lmer (1 | subject)    subject and residual variance (linear)

Example
-------
>>> import numpy as np
>>> s = STRUCTURES["ar1_h"]
>>> S, dS, d2S = s.build(np.array([1.0, 4.0, 0.5]), np.array([0, 1]), None)
>>> S.tolist(), dS.shape
([[1.0, 1.0], [1.0, 4.0]], (3, 2, 2))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def _lags(idx):
    return np.abs(np.subtract.outer(idx, idx))


@dataclass(frozen=True)
class Structure:
    """One covariance structure: `count(T)` parameters, `build(phi, idx, days)` -> (S, dS, d2S or None)."""

    name: str
    sas: str
    heterogeneous: bool
    linear: bool  # S is linear in phi: no second derivatives (then Kenward-Roger needs no R term)
    uses_days: bool = False

    def count(self, t: int) -> int:
        return _COUNT[self.name](t)

    def build(self, phi, idx, days):
        return _BUILD[self.name](np.asarray(phi, float), np.asarray(idx), None if days is None else
                                 np.asarray(days, float))

    def start(self, sigma0, gap: float = 1.0):
        """Starting values from a positive definite covariance estimate (`gap`: the mean days between visits)."""
        return _START[self.name](np.asarray(sigma0, float), gap)

    def full(self, phi, t: int, days=None):
        """The covariance of all T visits (at `days`, for spatial power)."""
        return self.build(phi, np.arange(t), days)[0]

    def describe(self, phi, t: int) -> dict:
        """The parameters by name (what a report lists)."""
        names = _NAMES[self.name](t)
        return dict(zip(names, np.asarray(phi, float).tolist()))


# ---- heterogeneous: S = s o C(rho), s_ab = sqrt(v_a v_b) --------------------------------------------------
def _het(v_all, idx, corr, dcorr, d2corr):
    """S, dS, d2S of sqrt(v_a v_b) C_ab for the visits `idx`, with C and its derivatives in the correlation
    parameters (dcorr: R x m x m, d2corr: R x R x m x m or None)."""
    t, m, r = len(v_all), len(idx), len(dcorr)
    v = v_all[idx]
    with np.errstate(invalid="ignore"):  # a Newton step past zero variance: NaN, which the fit refuses
        sd = np.sqrt(v)
    s = np.outer(sd, sd)
    hit = np.zeros((t, m, m))  # [a == j] + [b == j] for visit j of the whole schedule
    for pos, j in enumerate(idx):
        hit[j, pos, :] += 1
        hit[j, :, pos] += 1
    vj = np.where(v_all > 0, v_all, np.nan)
    ds = s[None] * hit / (2 * vj[:, None, None])  # d s / d v_j
    d2s = s[None, None] * hit[:, None] * hit[None, :] / (4 * vj[:, None, None, None] * vj[None, :, None, None])
    d2s[np.arange(t), np.arange(t)] -= s[None] * hit / (2 * vj[:, None, None] ** 2)
    ds, d2s = np.nan_to_num(ds), np.nan_to_num(d2s)
    S = s * corr
    dS = np.concatenate([ds * corr[None], s[None] * dcorr])
    d2S = np.zeros((t + r, t + r, m, m))
    d2S[:t, :t] = d2s * corr[None, None]
    cross = ds[:, None] * dcorr[None]  # d2S / dv_j drho_k
    d2S[:t, t:] = cross
    d2S[t:, :t] = cross.transpose(1, 0, 2, 3)
    if d2corr is not None:
        d2S[t:, t:] = s[None, None] * d2corr
    return S, dS, d2S


def _power(rho, lags):
    """rho ** lags with its first and second derivatives in rho (lags may be any non-negative numbers)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.power(rho, lags)
        d1 = np.where(lags > 0, lags * np.power(rho, lags - 1), 0.0)
        d2 = np.where(lags > 1, lags * (lags - 1) * np.power(rho, lags - 2), 0.0)
        d2 = np.where((lags > 0) & (lags < 1), lags * (lags - 1) * np.power(rho, lags - 2), d2)
    return c, d1, d2


def _build_ar1_h(phi, idx, days):
    t = len(phi) - 1
    c, d1, d2 = _power(phi[-1], _lags(idx))
    return _het(phi[:t], idx, c, d1[None], d2[None, None])


def _build_spatial(phi, idx, days):
    t = len(phi) - 1
    c, d1, d2 = _power(phi[-1], np.abs(np.subtract.outer(days, days)))
    return _het(phi[:t], idx, c, d1[None], d2[None, None])


def _build_cs_h(phi, idx, days):
    t, m = len(phi) - 1, len(idx)
    rho = phi[-1]
    c = (1 - rho) * np.eye(m) + rho
    return _het(phi[:t], idx, c, (np.ones((m, m)) - np.eye(m))[None], None)


def _build_toeplitz_h(phi, idx, days):
    t = (len(phi) + 1) // 2
    lags = _lags(idx)
    rho = np.concatenate([[1.0], phi[t:]])
    dcorr = np.array([(lags == k).astype(float) for k in range(1, t)]).reshape(t - 1, len(idx), len(idx))
    return _het(phi[:t], idx, rho[lags], dcorr, None)


# ---- homogeneous ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _unstructured_at(t: int, idx: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(which parameter each cell of the visits `idx` holds, dS): the same for every phi, so built once per
    pattern of visits (a fit builds its groups' covariances thousands of times). Read-only."""
    rows, cols = np.tril_indices(t)
    which = np.zeros((t, t), int)
    which[rows, cols] = which[cols, rows] = np.arange(len(rows))
    unit = np.zeros((len(rows), t, t))
    unit[np.arange(len(rows)), rows, cols] = 1.0
    unit[np.arange(len(rows)), cols, rows] = 1.0
    sub = np.ix_(idx, idx)
    out = which[sub], unit[:, idx][:, :, idx]
    for a in out:
        a.flags.writeable = False
    return out


def _build_unstructured(phi, idx, days):
    which, dS = _unstructured_at(int(round((np.sqrt(8 * len(phi) + 1) - 1) / 2)), tuple(idx.tolist()))
    return phi[which], dS, None


def _build_cs(phi, idx, days):
    m = len(idx)
    return phi[0] * np.ones((m, m)) + phi[1] * np.eye(m), np.array([np.ones((m, m)), np.eye(m)]), None


def _build_toeplitz(phi, idx, days):
    lags = _lags(idx)
    return phi[lags], np.array([(lags == k).astype(float) for k in range(len(phi))]), None


def _build_ar1(phi, idx, days):
    c, d1, d2 = _power(phi[1], _lags(idx))
    S = phi[0] * c
    dS = np.array([c, phi[0] * d1])
    d2S = np.array([[np.zeros_like(c), d1], [d1, phi[0] * d2]])
    return S, dS, d2S


_BUILD = {"unstructured": _build_unstructured, "toeplitz_h": _build_toeplitz_h, "ar1_h": _build_ar1_h,
          "cs_h": _build_cs_h, "spatial_power": _build_spatial, "toeplitz": _build_toeplitz, "ar1": _build_ar1,
          "cs": _build_cs}
_COUNT = {"unstructured": lambda t: t * (t + 1) // 2, "toeplitz_h": lambda t: 2 * t - 1, "ar1_h": lambda t: t + 1,
          "cs_h": lambda t: t + 1, "spatial_power": lambda t: t + 1, "toeplitz": lambda t: t, "ar1": lambda t: 2,
          "cs": lambda t: 2}


def _mean_corr(sigma0, lag=None):
    sd = np.sqrt(np.diag(sigma0))
    corr = sigma0 / np.outer(sd, sd)
    t = len(sigma0)
    if t < 2:
        return 0.3
    if lag is not None:
        return float(np.mean(np.diag(corr, lag)))
    return float(np.mean(corr[~np.eye(t, dtype=bool)]))


def _clip(r, lo=-0.9, hi=0.95):
    return float(np.clip(r, lo, hi))


def _start_unstructured(sigma0, gap):
    return sigma0[np.tril_indices(len(sigma0))]


def _start_cs(sigma0, gap):
    t = len(sigma0)
    a = float(np.mean(sigma0[~np.eye(t, dtype=bool)])) if t > 1 else 0.0
    a = max(a, 0.05 * float(np.mean(np.diag(sigma0))))
    return np.array([a, max(float(np.mean(np.diag(sigma0))) - a, 1e-3 * float(np.mean(np.diag(sigma0))))])


def _start_toeplitz(sigma0, gap):
    return np.array([float(np.mean(np.diag(sigma0, k))) for k in range(len(sigma0))]) * \
        np.array([1.0] + [0.9] * (len(sigma0) - 1))


_START = {
    "unstructured": _start_unstructured,
    "toeplitz_h": lambda s0, gap: np.concatenate([np.diag(s0), [_clip(_mean_corr(s0, k)) * 0.9 ** k
                                                               for k in range(1, len(s0))]]),
    "ar1_h": lambda s0, gap: np.concatenate([np.diag(s0), [_clip(_mean_corr(s0, 1) if len(s0) > 1 else 0.3)]]),
    "cs_h": lambda s0, gap: np.concatenate([np.diag(s0), [_clip(_mean_corr(s0), -0.2, 0.9)]]),
    "spatial_power": lambda s0, gap: np.concatenate([np.diag(s0), [_clip(max(_mean_corr(s0, 1) if len(s0) > 1
                                                                            else 0.3, 0.05) ** (1 / gap), 0.01,
                                                                         0.995)]]),
    "toeplitz": _start_toeplitz,
    "ar1": lambda s0, gap: np.array([float(np.mean(np.diag(s0))), _clip(_mean_corr(s0, 1) if len(s0) > 1 else 0.3)]),
    "cs": _start_cs,
}
_NAMES = {
    "unstructured": lambda t: [f"cov({i + 1},{j + 1})" for i, j in zip(*np.tril_indices(t))],
    "toeplitz_h": lambda t: [f"var({j + 1})" for j in range(t)] + [f"rho(lag {k})" for k in range(1, t)],
    "ar1_h": lambda t: [f"var({j + 1})" for j in range(t)] + ["rho"],
    "cs_h": lambda t: [f"var({j + 1})" for j in range(t)] + ["rho"],
    "spatial_power": lambda t: [f"var({j + 1})" for j in range(t)] + ["rho per day"],
    "toeplitz": lambda t: [f"cov(lag {k})" for k in range(t)],
    "ar1": lambda t: ["sigma^2", "rho"],
    "cs": lambda t: ["subject variance", "residual variance"],
}

STRUCTURES = {
    "unstructured": Structure("unstructured", "UN", True, True),
    "toeplitz_h": Structure("toeplitz_h", "TOEPH", True, False),
    "ar1_h": Structure("ar1_h", "ARH(1)", True, False),
    "cs_h": Structure("cs_h", "CSH", True, False),
    "spatial_power": Structure("spatial_power", "SP(POW) with heterogeneous variances", True, False, uses_days=True),
    "toeplitz": Structure("toeplitz", "TOEP", False, True),
    "ar1": Structure("ar1", "AR(1)", False, False),
    "cs": Structure("cs", "CS", False, True),
}
FALLBACK = ("toeplitz_h", "ar1_h", "cs_h")  # heterogeneous only: the variances of a trial's visits differ
