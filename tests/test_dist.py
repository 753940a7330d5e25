"""skintrack.analysis.dist gives exactly scipy.stats's floats (it calls the scipy.special functions scipy.stats
calls, without importing scipy.stats): checked on grids that reach the tails and small, fractional and huge df."""
import inspect
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.stats

from skintrack.analysis import dist, stats

X = np.concatenate([-np.logspace(-6, 2, 40), [0.0], np.logspace(-6, 2, 40)])
Q = np.concatenate([np.logspace(-12, -1, 30), np.linspace(0.1, 0.9, 17), 1 - np.logspace(-12, -1, 30)])
DF = [0.7, 1, 2.5, 4, 9.3, 30, 117.8, 1e4, 1e7]


@pytest.mark.parametrize("df", DF)
def test_t_equals_scipy_stats(df):
    assert np.array_equal(dist.t_cdf(X, df), scipy.stats.t.cdf(X, df))
    assert np.array_equal(dist.t_sf(X, df), scipy.stats.t.sf(X, df))
    assert np.array_equal(dist.t_ppf(Q, df), scipy.stats.t.ppf(Q, df))
    assert np.array_equal(dist.chi2_ppf(Q, df), scipy.stats.chi2.ppf(Q, df))
    for other in DF:
        assert np.array_equal(dist.f_ppf(Q, df, other), scipy.stats.f.ppf(Q, df, other))


def test_normal_equals_scipy_stats():
    assert np.array_equal(dist.norm_cdf(X), scipy.stats.norm.cdf(X))
    assert np.array_equal(dist.norm_sf(X), scipy.stats.norm.sf(X))
    assert np.array_equal(dist.norm_ppf(Q), scipy.stats.norm.ppf(Q))


def test_a_vector_of_df_as_the_mmrm_passes_it():
    df = np.array([3.3, 10.7, 22.1, 1e6])
    assert np.array_equal(dist.t_ppf(0.975, df), scipy.stats.t.ppf(0.975, df))
    assert np.array_equal(2 * dist.t_sf(np.abs(X[:4]), df), 2 * scipy.stats.t.sf(np.abs(X[:4]), df))


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(3)
    for x in (rng.normal(size=50), rng.integers(0, 6, 200).astype(float), np.array([2.0, 2.0, 2.0]),
              np.array([1.5]), np.round(rng.normal(size=1000), 1)):
        assert np.array_equal(dist.average_ranks(x), scipy.stats.rankdata(x))


@pytest.mark.parametrize("df", [3, 7.5, 22, 100])
def test_noncentral_t_equals_scipy_stats(df):
    t = np.linspace(-5, 8, 53)
    for nc in (-2.0, 0.0, 0.3, 1.7, 5.0):
        assert np.array_equal(dist.nct_cdf(t, df, nc), scipy.stats.nct.cdf(t, df, nc), equal_nan=True)


def test_one_sample_t_equals_scipy_stats():
    rng = np.random.default_rng(3)
    samples = [rng.normal(0.3, 1, n) for n in (2, 3, 5, 12, 40, 200)] + [
        rng.integers(-3, 4, 25).astype(float),  # ties and zeros, as changes in whole grades are
        1e6 + rng.normal(0, 1e-3, 10),  # a large mean and a tiny spread
        np.array([2.0, 2.0, 2.0]),  # no spread: t infinite, p 0
        np.array([1.0, np.nan, 2.0])]  # a missing value propagates
    for x in samples:
        with warnings.catch_warnings():  # scipy warns of the precision lost in the last two
            warnings.simplefilter("ignore", RuntimeWarning)
            theirs = scipy.stats.ttest_1samp(x, 0.0)
        t, p = stats.one_sample_t(x)
        assert np.array_equal(p, theirs.pvalue, equal_nan=True), x
        assert np.array_equal(t, theirs.statistic, equal_nan=True), x


def test_welch_t_equals_scipy_stats():
    """Welch's t test by hand gives ttest_ind(equal_var=False)'s floats, on samples with ties, unequal sizes,
    a large mean with a tiny spread, one sample or both without spread, and a missing value."""
    rng = np.random.default_rng(4)
    pairs = [(rng.normal(0, 1, n1), rng.normal(0.4, 2, n2)) for n1, n2 in ((2, 2), (3, 9), (12, 11), (40, 7))] + [
        (rng.integers(-3, 4, 25).astype(float), rng.integers(-3, 4, 18).astype(float)),
        (1e6 + rng.normal(0, 1e-3, 10), 1e6 + rng.normal(0, 1e-3, 8)),
        (np.array([2.0, 2.0, 2.0]), rng.normal(0, 1, 6)), (np.array([2.0, 2.0]), np.array([3.0, 3.0])),
        (np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0]))]
    for a, b in pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            theirs = scipy.stats.ttest_ind(a, b, equal_var=False)
            t, p = stats.welch_t(a, b)
        assert np.array_equal(p, theirs.pvalue, equal_nan=True), (a, b)
        assert np.array_equal(t, theirs.statistic, equal_nan=True), (a, b)


FRESH = """
import importlib.util, sys
if sys.argv[1] == "no-stand-in":  # the package's stand-in cannot be made, as under a scipy laid out otherwise
    importlib.util.find_spec = None
from skintrack.analysis import dist
q = dist.t_ppf(0.975, 9.5), dist.t_sf(2.1, 9.5), dist.nct_cdf(1.0, 7.0, 0.3), dist.chi2_ppf(0.9, 3.0)
print(sorted(m for m in sys.modules if m.startswith("scipy.special")) == [
    "scipy.special._ellip_harm_2", "scipy.special._gufuncs", "scipy.special._special_ufuncs",
    "scipy.special._ufuncs", "scipy.special._ufuncs_cxx"], "numpy.f2py" in sys.modules)
import scipy.special, scipy.stats
print(q == (scipy.stats.t.ppf(0.975, 9.5), scipy.stats.t.sf(2.1, 9.5), scipy.stats.nct.cdf(1.0, 7.0, 0.3),
            scipy.stats.chi2.ppf(0.9, 3.0)), all(getattr(dist._special(), name) is getattr(scipy.special, name)
                                                  for name in dist.UFUNCS), scipy.special.stdtr(3, 0.0))
"""


@pytest.mark.parametrize("how", ["ufuncs-alone", "no-stand-in"])
def test_a_fresh_process_loads_scipys_ufuncs_alone_and_scipy_special_still_imports_whole(how):
    """The first call loads only scipy.special's compiled ufuncs (not its package, whose array-API layer imports
    numpy.f2py); a later `import scipy.special` imports in full around those same ufuncs. Where that fails, the
    package import stands in: the same floats either way."""
    out = subprocess.run([sys.executable, "-c", FRESH, how], check=True, capture_output=True, text=True).stdout
    alone = how == "ufuncs-alone"
    assert out.split("\n")[:2] == [f"{alone} {not alone}", "True True 0.5"]


def test_every_ufunc_dist_calls_is_one_its_load_checks():
    assert set(re.findall(r"_special\(\)\.(\w+)", inspect.getsource(dist))) == set(dist.UFUNCS)
