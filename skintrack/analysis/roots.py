"""A root of f between a and b by Brent's method: `scipy.optimize.brentq`'s C code (Charles Harris's
`brentq.c`), step for step in Python.

Importing `scipy.optimize` costs ~0.6 s of CPU (it loads scipy.sparse and scipy.spatial with it): more than
every root a report finds (Hodges-Lehmann limits, Hedges' g limits, the tipping point, Dunnett's critical
value), and most of what `skintrack endpoints` computes. The same operations on the same floats give the same
root to the last bit; `tests/test_roots.py` compares the two on smooth, flat and step functions.

Example
-------
>>> round(brentq(lambda x: x * x - 2, 0, 2), 12)
1.414213562373
"""
from __future__ import annotations

import math

RTOL = 4 * 2.220446049250313e-16  # scipy's default and smallest relative tolerance: four machine epsilons


def brentq(f, a: float, b: float, xtol: float = 2e-12, rtol: float = RTOL, maxiter: int = 100) -> float:
    """The root of `f` in [a, b], where f(a) and f(b) have opposite signs (else `ValueError`), to within
    xtol + rtol * |root|; `RuntimeError` when `maxiter` steps do not reach it."""
    if xtol <= 0 or rtol < RTOL:
        raise ValueError(f"brentq: xtol must be positive and rtol at least {RTOL}")

    def value(x: float) -> float:
        fx = float(f(x))
        if math.isnan(fx):
            raise ValueError(f"The function value at x={x} is NaN; solver cannot continue.")
        return fx

    xpre, xcur = float(a), float(b)
    xblk = fblk = spre = scur = 0.0
    fpre, fcur = value(xpre), value(xcur)
    if fpre * fcur > 0:
        raise ValueError("f(a) and f(b) must have different signs")
    if fpre == 0:
        return xpre
    if fcur == 0:
        return xcur
    for _ in range(maxiter):
        if fpre * fcur < 0:
            xblk, fblk = xpre, fpre
            spre = scur = xcur - xpre
        if abs(fblk) < abs(fcur):
            xpre, xcur, xblk = xcur, xblk, xcur
            fpre, fcur, fblk = fcur, fblk, fcur
        delta = (xtol + rtol * abs(xcur)) / 2
        sbis = (xblk - xcur) / 2
        if fcur == 0 or abs(sbis) < delta:
            return xcur
        if abs(spre) > delta and abs(fcur) < abs(fpre):
            if xpre == xblk:  # interpolate
                stry = -fcur * (xcur - xpre) / (fcur - fpre)
            else:  # extrapolate
                dpre = (fpre - fcur) / (xpre - xcur)
                dblk = (fblk - fcur) / (xblk - xcur)
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            limit = abs(spre) if abs(spre) < 3 * abs(sbis) - delta else 3 * abs(sbis) - delta  # C's MIN
            if 2 * abs(stry) < limit:  # a good short step
                spre, scur = scur, stry
            else:  # bisect
                spre = scur = sbis
        else:  # bisect
            spre = scur = sbis
        xpre, fpre = xcur, fcur
        xcur += scur if abs(scur) > delta else (delta if sbis > 0 else -delta)
        fcur = value(xcur)
    raise RuntimeError(f"Failed to converge after {maxiter} iterations, value is {xcur}.")
