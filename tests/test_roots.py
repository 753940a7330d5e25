"""skintrack.analysis.roots.brentq is scipy.optimize.brentq step for step: the same root, to the last bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize

from skintrack.analysis import dist
from skintrack.analysis.roots import brentq


def steps(edges):
    """A falling step function (as a rank statistic in a shift is), zero on none of its steps."""
    edges = np.sort(edges)
    return lambda x: 0.5 + len(edges) / 2 - np.searchsorted(edges, x, side="right") - 0.25


rng = np.random.default_rng(7)
CASES = [
    (lambda x: x * x - 2, 0, 2, {}),
    (lambda x: x ** 3 - 2 * x - 5, 2, 3, {"xtol": 1e-12}),
    (math.cos, 0, 3, {}),
    (lambda x: math.exp(x) - 10, -5, 10, {"xtol": 1e-10}),
    (lambda x: np.float64(x) - 1e-9, 0, 1, {}),
    (lambda x: math.atan(x - 0.3) * 1e6, -1e3, 1e3, {}),
    (lambda x: (x - 1) ** 5, 0, 3, {"xtol": 1e-6}),  # flat at its root: slow, many bisections
    (lambda x: x - 1, 1, 2, {}),  # the root at an end
    (lambda x: np.tanh(50 * (x - 0.123)), -1, 1, {"rtol": 1e-10}),
    (steps(rng.normal(size=30)), -10, 10, {"xtol": 1e-10}),
    (steps(rng.integers(0, 5, 40).astype(float)), -10, 10, {"xtol": 1e-10}),  # tied edges
    (lambda x: dist.nct_cdf(2.1, 18, x) - 0.975, -3, 2.1, {"xtol": 1e-12}),  # Hedges' g's limit
    (lambda x: dist.t_sf(x, 7) - 0.025, 0, 20, {"xtol": 1e-10}),
]


@pytest.mark.parametrize("f, a, b, kw", CASES)
def test_the_same_root_as_scipy_to_the_last_bit(f, a, b, kw):
    ours, theirs = brentq(f, a, b, **kw), scipy.optimize.brentq(f, a, b, **kw)
    assert ours.hex() == float(theirs).hex()
    assert brentq(f, b, a, **kw).hex() == float(scipy.optimize.brentq(f, b, a, **kw)).hex()  # either order


def test_the_same_refusals_as_scipy():
    for call in (brentq, scipy.optimize.brentq):
        with pytest.raises(ValueError, match="different signs"):
            call(lambda x: x * x + 1, -1, 1)
        with pytest.raises(ValueError, match="NaN"):
            call(lambda x: math.nan if x > 0.5 else -1.0, 0, 1)
        with pytest.raises(RuntimeError, match="converge"):
            call(lambda x: (x - 1) ** 5, 0, 3, maxiter=3)
