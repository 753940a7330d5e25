"""Agreement between two metrics on the same captures, against R (cor.test, epiR::epi.ccc, t.test and the
Bland-Altman and Bonett-Wright formulas written in R) and scipy."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from skintrack.analysis.agreement import statistics

from test_mmrm import rscript  # noqa: F401 - the session's R

R_SCRIPT = Path(__file__).parent / "r" / "agreement.R"


def reference(rscript, tmp_path, x, y) -> pd.DataFrame:  # noqa: F811
    pd.DataFrame({"x": x, "y": y}).to_csv(tmp_path / "xy.csv", index=False)
    subprocess.run([rscript, str(R_SCRIPT), str(tmp_path / "xy.csv"), str(tmp_path / "out.csv")], check=True,
                   capture_output=True)
    return pd.read_csv(tmp_path / "out.csv").set_index("statistic")


@pytest.mark.parametrize("n, shift, noise", [(12, 0.0, 1.0), (40, 2.5, 3.0), (93, -8.6, 10.0)])
def test_every_statistic_equals_r(rscript, tmp_path, n, shift, noise):  # noqa: F811
    """SIMULATED pairs: a second instrument reading the first with a bias and its own noise."""
    rng = np.random.default_rng(n)
    x = rng.normal(60, 12, n).round(1)
    y = (0.8 * x + 12 + shift + rng.normal(0, noise, n)).round(1)
    got = pd.DataFrame(statistics(x, y, same_unit=True)).set_index("statistic")
    ref = reference(rscript, tmp_path, x, y)
    assert list(got.index) == list(ref.index)
    for column in ("estimate", "ci_low", "ci_high"):
        np.testing.assert_allclose(got[column], ref[column], rtol=1e-9, err_msg=column)
    pearson = st.pearsonr(x, y)
    low, high = pearson.confidence_interval(0.95)
    assert got.at["pearson", "ci_low"] == pytest.approx(low, rel=1e-12)  # scipy's Fisher interval too
    assert got.at["pearson", "ci_high"] == pytest.approx(high, rel=1e-12)


def test_correlations_equal_scipys_and_load_no_scipy_stats():
    """Pearson's r and Spearman's rho without scipy.stats (a second of CPU to import) equal pearsonr and
    spearmanr to rounding, on pairs with ties; the agreement table of a study loads no scipy.stats."""
    rng = np.random.default_rng(3)
    for n, digits in ((5, 0), (12, 0), (40, 1), (200, 2)):
        x = rng.normal(60, 12, n).round(digits)
        y = (0.8 * x + rng.normal(0, 5, n)).round(digits)
        rows = pd.DataFrame(statistics(x, y, same_unit=False)).set_index("statistic")["estimate"]
        assert rows["pearson"] == pytest.approx(st.pearsonr(x, y).statistic, rel=1e-13)
        assert rows["spearman"] == pytest.approx(st.spearmanr(x, y).statistic, rel=1e-13)
    code = ("import sys; from skintrack.demo import demo_study; "
            "demo_study().agreement('score.water', 'score.rough'); print('scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "False", done.stdout + done.stderr


def test_different_units_give_correlations_only_and_too_few_pairs_are_nan():
    x, y = np.arange(10.0), np.arange(10.0) ** 1.5
    rows = pd.DataFrame(statistics(x, y, same_unit=False))
    assert rows["statistic"].tolist() == ["pearson", "spearman"] and rows.at[1, "estimate"] == pytest.approx(1.0)
    few = pd.DataFrame(statistics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]), same_unit=True))
    assert few.set_index("statistic").loc[["pearson", "spearman"], "estimate"].isna().all()  # n - 3 = 0


def test_the_study_pairs_captures_and_changes_under_the_plans_rules(run_cli, tmp_path):
    from skintrack.demo import demo_study

    s = demo_study()
    t = s.agreement("score.water", "score.rough")
    values, changes = t.attrs["values"], t.attrs["changes"]
    assert len(values) == 93 and len(changes) == 69  # 96 captures and 72 changes, less the 3 QC-flagged
    direct = s.sql("""SELECT a.subject_id, a.visit, w.value AS a, r.value AS b FROM analyses a
                      JOIN scores w ON w.analysis_id = a.analysis_id AND w.metric = 'water'
                      JOIN scores r ON r.analysis_id = a.analysis_id AND r.metric = 'rough'
                      WHERE a.subject_id IS NOT NULL""")
    flagged = s.qc().query("flagged")[["subject_id", "visit"]]
    direct = direct.merge(flagged, how="left", indicator=True).query("_merge == 'left_only'")
    assert len(direct) == 93
    r = t[(t["on"] == "values") & (t["statistic"] == "pearson")]["estimate"].iloc[0]
    assert r == pytest.approx(st.pearsonr(direct["a"], direct["b"]).statistic, rel=1e-12)
    perfect = s.agreement("score.water", "severity.water")  # the score is a formula of the severity
    assert np.allclose(perfect.loc[perfect["statistic"] == "pearson", "estimate"], -1, atol=1e-12)
    assert "lin_ccc" not in set(perfect["statistic"])  # points against a severity: no shared unit
    proc = run_cli("agreement", s.path, "score.water", "score.rough", "--chart", tmp_path / "a.png", check=0)
    assert "lin_ccc" in proc.stdout and (tmp_path / "a.png").stat().st_size > 10_000
    assert run_cli("agreement", s.path, "score.water", "score.nope", check=2).stderr.count("\n") == 1


# ---- the claim table ----------------------------------------------------------------------------------------
def test_the_claim_table_equals_r_on_the_changes_it_summarises(rscript, tmp_path):  # noqa: F811
    from skintrack.demo import demo_study

    s = demo_study()
    table = s.claims(["score.water", "score.rough"])
    assert len(table) == 2 * 2 * 3 and table["arm"].iloc[0] == "placebo"  # control first, visits by schedule
    ch = s.change_from_baseline("score.rough")
    ch = ch[~ch["is_baseline"]].merge(s.sql("SELECT subject_id, arm FROM subjects"), on="subject_id")
    g = ch[(ch["arm"] == "active") & (ch["visit"] == "W8")]
    pd.DataFrame({"delta": g["delta"], "pct": g["pct_change"]}).to_csv(tmp_path / "g.csv", index=False)
    script = ('d <- read.csv(commandArgs(TRUE)[1]); a <- t.test(d$delta); b <- t.test(d$pct); '
              'w <- suppressWarnings(wilcox.test(d$delta)); '
              'write.csv(data.frame(p = a$p.value, lo = b$conf.int[1], hi = b$conf.int[2], w = w$p.value), '
              'commandArgs(TRUE)[2], row.names = FALSE)')
    (tmp_path / "c.R").write_text(script)
    subprocess.run([rscript, str(tmp_path / "c.R"), str(tmp_path / "g.csv"), str(tmp_path / "o.csv")], check=True)
    ref = pd.read_csv(tmp_path / "o.csv").iloc[0]
    row = table[(table["metric"] == "score.rough") & (table["arm"] == "active") & (table["visit"] == "W8")].iloc[0]
    assert row["n"] == len(g) == 11  # S03 W8 is QC-flagged
    assert row["p"] == pytest.approx(ref["p"], rel=1e-9)
    assert (row["pct_ci_low"], row["pct_ci_high"]) == pytest.approx((ref["lo"], ref["hi"]), rel=1e-9)
    assert row["improved"] == int((g["delta"] > 0).sum())  # roughness score: higher is better
    wil = s.claims(["score.rough"], test="wilcoxon")
    assert wil.loc[(wil["arm"] == "active") & (wil["visit"] == "W8"), "p"].iloc[0] == pytest.approx(ref["w"], rel=1e-6)


def test_a_change_every_subject_shares_has_no_t_interval_and_no_t_p_value(rscript, tmp_path):  # noqa: F811
    """Four subjects each +2: the claim table printed "95% CI +2.0 to +2.0, p <0.001" where R's t.test stops
    ("data are essentially constant"); compare's paired test, and the Bland-Altman bias and limits of an exact
    offset, printed their points as intervals. The Wilcoxon signed-rank p stays, equal to R's."""
    from skintrack.analysis.claims import _row
    from skintrack.analysis.stats import paired  # compare's within-arm test

    g = pd.DataFrame({"delta": [2.0] * 4, "pct_change": [5.0] * 4, "baseline_value": [40.0] * 4,
                      "improved": [True] * 4})
    t = _row(g, "higher", "paired_t")
    assert np.isnan([t["p"], t["change_ci_low"], t["change_ci_high"], t["pct_ci_low"], t["pct_ci_high"]]).all()
    assert (t["mean_change"], t["mean_pct_change"], t["improved"]) == (2.0, 5.0, 4)
    script = "cat(sprintf('%.17g', suppressWarnings(wilcox.test(c(2, 2, 2, 2))$p.value)))"
    done = subprocess.run([rscript, "-e", script], capture_output=True, text=True, check=True)
    assert _row(g, "higher", "wilcoxon")["p"] == pytest.approx(float(done.stdout), rel=1e-9)
    assert _row(g.assign(delta=0.0, pct_change=0.0), "higher", "paired_t")["p"] == 1.0  # no change at all
    same = paired(np.array([40.0, 50, 60, 70]), np.array([42.0, 52, 62, 72]))
    assert same["mean_diff"] == 2.0 and np.isnan([same["ci_low"], same["ci_high"], same["p"]]).all()
    assert paired(np.array([40.0, 50, 60, 70]), np.array([42.0, 52, 62, 72]), "wilcoxon")["p"] > 0
    shifted = statistics(np.array([41.0, 52, 60, 75]), np.array([40.0, 51, 59, 74]), same_unit=True)  # offset 1
    limits = {r["statistic"]: r for r in shifted if r["statistic"] in ("bias", "loa_low", "loa_high")}
    assert all(r["estimate"] == 1.0 and np.isnan([r["ci_low"], r["ci_high"]]).all() for r in limits.values())


def test_the_percent_change_says_how_many_subjects_it_is_of():
    """A count can start at 0, where no % change exists: the mean % change was of fewer subjects than the n
    beside it (21 of the 23 of count.blackhead.nose each visit in the sample trial), and a row whose every
    baseline was 0 printed "+nan (+nan to +nan)"."""
    from skintrack.demo import demo_study
    from skintrack.show.report import _pct_change

    s = demo_study()
    table = s.claims(["count.blackhead.nose"])
    ch = s.change_from_baseline("count.blackhead.nose")
    ch = ch[~ch["is_baseline"]].merge(s.sql("SELECT subject_id, arm FROM subjects"), on="subject_id")
    for r in table.itertuples():
        g = ch[(ch["arm"] == r.arm) & (ch["visit"] == r.visit)]
        assert (r.n, r.pct_n) == (len(g), (g["baseline_value"] != 0).sum())
        assert r.mean_pct_change == pytest.approx(g.loc[g["baseline_value"] != 0, "pct_change"].mean(), rel=1e-12)
    assert (table["pct_n"] < table["n"]).any()
    assert _pct_change(-12.34, -20.0, -4.5, 9, 11) == "-12.3 (-20.0 to -4.5); of 9, 2 with a baseline of 0"
    assert _pct_change(-12.34, -20.0, -4.5, 11, 11) == "-12.3 (-20.0 to -4.5)"
    assert _pct_change(50.0, float("nan"), float("nan"), 1, 1) == "+50.0"
    assert _pct_change(float("nan"), float("nan"), float("nan"), 0, 4) == "not defined (every baseline is 0)"
