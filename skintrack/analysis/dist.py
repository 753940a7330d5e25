"""The t, noncentral t, normal, F and chi-square distribution functions the analyses print, from
`scipy.special`, and the average ranks of the rank tests.

`scipy.stats` computes each of these with the same `scipy.special` call, behind argument checks, but
importing it costs a second of CPU (it parses every distribution's docstring): more than a trial's whole
MMRM. These give the same floats (`tests/test_dist.py` checks them equal to `scipy.stats`'s), and load
scipy's compiled ufuncs on first use (`_special`), so that opening a study loads no scipy submodule.

>>> round(float(t_ppf(0.975, 10)), 4), round(float(norm_ppf(0.975)), 4)
(2.2281, 1.96)
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys

import numpy as np

UFUNCS = ("stdtr", "stdtrit", "nctdtr", "ndtr", "ndtri", "fdtri", "gammaincinv")  # all that is called below


def t_cdf(x, df):
    return _special().stdtr(df, x)


def t_sf(x, df):
    return _special().stdtr(df, -x)


def t_ppf(q, df):
    return _special().stdtrit(df, q)


def nct_cdf(x, df, nc):
    return _special().nctdtr(df, nc, x)


def norm_cdf(x):
    return _special().ndtr(x)


def norm_sf(x):
    return _special().ndtr(-x)


def norm_ppf(q):
    return _special().ndtri(q)


def f_ppf(q, dfn, dfd):
    return _special().fdtri(dfn, dfd, q)


def chi2_ppf(q, df):
    return 2 * _special().gammaincinv(df / 2, q)


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of `x`, ties given their average rank (`scipy.stats.rankdata`'s default, its algorithm)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="quicksort")
    where = np.empty(order.size, dtype=np.intp)
    where[order] = np.arange(order.size)
    s = x[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = first.cumsum()[where]
    count = np.r_[np.nonzero(first)[0], len(first)]
    return 0.5 * (count[dense] + count[dense - 1] + 1)


@functools.cache
def _special():
    """`scipy.special`'s compiled ufuncs: the very objects it exports, so the very floats.

    They are loaded without running `scipy/special/__init__.py`, whose array-API layer clones numpy's whole
    namespace and so imports numpy.f2py, numpy.testing, numpy.ma...: 0.4 s of CPU, or 0.15 s in a process
    that has imported pandas (a tenth of an endpoints table). A later `import scipy.special` runs in full and
    finds these same ufuncs. Should scipy ever lay them out otherwise, the package import stands in.
    """
    try:
        return _ufuncs_alone()
    except Exception:  # noqa: BLE001 - any failure here leaves the documented import, same floats
        return importlib.import_module("scipy.special")


def _ufuncs_alone():
    """Import `scipy.special._ufuncs` under a stand-in of its package that holds the package's import lock
    (another thread importing scipy.special waits, then imports it in full) and is gone afterwards; the package
    itself when it is imported already."""
    package = importlib.util.find_spec("scipy.special")
    with importlib._bootstrap._ModuleLockManager(package.name):
        if package.name in sys.modules:
            return sys.modules[package.name]
        stand_in = importlib.util.module_from_spec(package)  # the package without its __init__ run
        package._initializing = True  # an import by another thread waits on the lock held here
        sys.modules[package.name] = stand_in
        try:
            ufuncs = importlib.import_module("scipy.special._ufuncs")
        finally:
            del sys.modules[package.name]
    if missing := [name for name in UFUNCS if not hasattr(ufuncs, name)]:
        raise ImportError(f"scipy.special._ufuncs has no {missing}")
    return ufuncs
