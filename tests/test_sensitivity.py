"""Missing-data sensitivity against R: Rubin's rules equal mice::pool on the same completed data sets; MI
under MAR agrees with mice's own imputation and converges to the MMRM with the same imputation model; the
conditional means of MAR, jump to reference and copy reference equal rbmi's definitions written in R; the
tipping point flips the conclusion exactly there; every draw is seeded."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skintrack.analysis import imputation
from skintrack.analysis.mmrm import fit_mmrm

from test_mmrm import rscript, simulate  # noqa: F401 - the session fixture that installs R when missing


R_SCRIPT = Path(__file__).parent / "r" / "imputation.R"
VISITS = ["W4", "W8", "W12"]


def trial(seed=21, n=15):
    """SIMULATED 2 x 15 trial with monotone dropout that depends on the last observed change (MAR)."""
    data = simulate(seed, n=n, missing=0.0, effect=3.0)
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in data.groupby("subject"):
        g = g.sort_values("visit", key=lambda v: v.map(VISITS.index))
        for j, r in enumerate(g.itertuples()):
            keep.append(r.Index)
            if j < 2 and rng.random() < 0.12 + 0.08 * (r.chg < 0):
                break
    data = data.loc[keep]
    people = data.drop_duplicates("subject")[["subject", "arm", "base"]]
    return data, people


@pytest.fixture(scope="session")
def imputed():
    data, people = trial()
    return data, people, imputation.impute(data, people, VISITS, "W12", "placebo", ["active"], m=60, seed=5)


def test_rubins_rules_equal_mice_pool_on_the_same_completed_data(imputed, rscript, tmp_path):  # noqa: F811
    _, _, imp = imputed
    (tmp_path / "arms").write_text("placebo\nactive\n")
    for method in ("mar", "j2r"):
        for k in range(imp.m):
            imp.completed(method, k).to_csv(tmp_path / f"completed-{k:03d}.csv", index=False)
        subprocess.run([rscript, str(R_SCRIPT), "pool", str(tmp_path)], check=True, capture_output=True)
        r = pd.read_csv(tmp_path / "pooled.csv").iloc[0]
        ours = imp.ancova(method).iloc[0]
        for col, ref in (("estimate", "estimate"), ("std_error", "se"), ("df", "df"), ("p", "p")):
            assert ours[col] == pytest.approx(r[ref], rel=1e-8), (method, col)


def test_mi_under_mar_agrees_with_mice_and_converges_to_the_mmrm(rscript, tmp_path):  # noqa: F811
    data, people = trial(seed=23, n=20)
    imp = imputation.impute(data, people, VISITS, "W12", "placebo", ["active"], m=200, seed=11, methods=("mar",))
    ours = imp.ancova("mar").iloc[0]
    fit = fit_mmrm(data, VISITS, "placebo", base_by_visit=True, guard=False).diff("W12")  # the imputation model
    assert abs(ours["estimate"] - fit["estimate"]) < 0.1 * fit["std_error"]
    assert ours["std_error"] == pytest.approx(fit["std_error"], rel=0.15)
    wide = data.pivot(index="subject", columns="visit", values="chg").reindex(columns=VISITS)
    wide = people.set_index("subject").join(wide).reset_index()
    wide.to_csv(tmp_path / "wide.csv", index=False)
    (tmp_path / "arms").write_text("placebo\nactive\n")
    pd.DataFrame({"m": [200], "seed": [11]}).to_csv(tmp_path / "settings.csv", index=False)
    subprocess.run([rscript, str(R_SCRIPT), "mice", str(tmp_path)], check=True, capture_output=True)
    mice = pd.read_csv(tmp_path / "mice.csv").iloc[0]
    assert abs(ours["estimate"] - mice["estimate"]) < 0.2 * mice["se"]  # two Monte-Carlo estimates of one quantity
    assert ours["std_error"] == pytest.approx(mice["se"], rel=0.15)


def test_conditional_means_of_mar_j2r_and_cr_equal_rbmis_definitions_in_r(rscript, tmp_path):  # noqa: F811
    data, people = trial(seed=29)
    people = people.sort_values("subject", ignore_index=True)
    wide = data.pivot(index="subject", columns="visit", values="chg").reindex(index=people["subject"], columns=VISITS)
    y = wide.to_numpy(float)
    fit = fit_mmrm(data, VISITS, "placebo", base_by_visit=True, guard=False)
    beta, terms = fit.coefficients["estimate"].to_numpy(), fit.coefficients["term"].tolist()
    sigma = fit.sigma.to_numpy()
    own = np.array([[imputation.design_row(terms, a, v, b) @ beta for v in VISITS]
                    for a, b in zip(people["arm"], people["base"])])
    ref = np.array([[imputation.design_row(terms, "placebo", v, b) @ beta for v in VISITS] for b in people["base"]])
    treated = (people["arm"] != "placebo").to_numpy()
    observed = ~np.isnan(y)
    last = np.array([np.flatnonzero(o).max() if o.any() else -1 for o in observed])
    for name, arr in (("wide", y), ("own", own), ("ref", ref), ("sigma", sigma)):
        pd.DataFrame(arr).to_csv(tmp_path / f"{name}.csv", index=False)
    pd.DataFrame({"treated": treated.astype(int)}).to_csv(tmp_path / "treated.csv", index=False)
    (tmp_path / "arms").write_text("placebo\nactive\n")
    subprocess.run([rscript, str(R_SCRIPT), "means", str(tmp_path)], check=True, capture_output=True)
    assert (~observed).sum() > 5 and (treated[:, None] & ~observed).sum() > 2
    for method in ("mar", "j2r", "cr"):
        mean = imputation.marginal_means(method, own, ref, treated, last)
        ours = imputation.conditional_draw(y, observed, mean, sigma, np.zeros_like(y))
        np.testing.assert_allclose(ours, pd.read_csv(tmp_path / f"means-{method}.csv").to_numpy(), rtol=1e-10,
                                   atol=1e-10, err_msg=method)


def test_a_bootstrap_samples_fit_from_arrays_equals_the_mmrm_of_its_rows():
    """What each imputation fits (`Resamples`, built from arrays) is the MMRM `fit_mmrm` fits to the same
    resampled subjects written out as rows, and its fitted means are the design's rows times beta."""
    data, people = trial(seed=31)
    people = people.sort_values("subject", ignore_index=True)
    wide = data.pivot(index="subject", columns="visit", values="chg").reindex(index=people["subject"], columns=VISITS)
    arms, base = people["arm"].to_numpy(), people["base"].to_numpy(float)
    fits = imputation.Resamples(wide.to_numpy(float), arms, base, VISITS, "placebo", ["active"], ["unstructured"])
    rng = np.random.default_rng(3)
    for _ in range(3):
        boot = np.concatenate([rng.choice(np.flatnonzero(arms == a), size=(arms == a).sum())
                               for a in ("placebo", "active")])
        beta, sigma = fits.fit(boot)
        rows = pd.DataFrame([{"subject": f"b{n}", "arm": arms[i], "visit": v, "base": base[i], "chg": wide.iloc[i][v]}
                             for n, i in enumerate(boot) for v in VISITS if not np.isnan(wide.iloc[i][v])])
        fit = fit_mmrm(rows, VISITS, "placebo", base_by_visit=True, structures=["unstructured"], df="satterthwaite",
                       guard=False)
        np.testing.assert_allclose(beta, fit.coefficients["estimate"], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(sigma, fit.sigma.to_numpy(), rtol=1e-7)
        own, ref = fits.means(beta)
        terms = fit.coefficients["term"].tolist()
        np.testing.assert_allclose(own, [[imputation.design_row(terms, a, v, b) @ beta for v in VISITS]
                                         for a, b in zip(arms, base)], rtol=1e-12)
        np.testing.assert_allclose(ref, [[imputation.design_row(terms, "placebo", v, b) @ beta for v in VISITS]
                                         for b in base], rtol=1e-12)


def test_reference_based_imputation_moves_the_treated_towards_the_control(imputed):
    _, _, imp = imputed
    mar, j2r, cr = (imp.ancova(m).iloc[0]["estimate"] for m in ("mar", "j2r", "cr"))
    assert mar > j2r > 0 and mar > cr > 0  # the simulated product works; dropouts lose its benefit


def test_the_tipping_point_is_where_the_conclusion_flips(imputed):
    _, _, imp = imputed
    tip = imputation.tipping_point(imp, "active", 0.05, direction=-1.0, most=200)
    assert tip["p_at_zero"] < 0.05 and tip["delta"] > 0
    assert imp.ancova("mar", -tip["delta"])["p"].iloc[0] == pytest.approx(0.05, abs=1e-5)
    assert imp.ancova("mar", -0.9 * tip["delta"])["p"].iloc[0] < 0.05


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(imputed):
    data, people, imp = imputed
    again = imputation.impute(data, people, VISITS, "W12", "placebo", ["active"], m=60, seed=5)
    other = imputation.impute(data, people, VISITS, "W12", "placebo", ["active"], m=60, seed=6)
    pd.testing.assert_frame_equal(imp.ancova("j2r"), again.ancova("j2r"))
    assert imp.ancova("j2r")["estimate"].iloc[0] != other.ancova("j2r")["estimate"].iloc[0]


def test_the_study_runs_every_planned_sensitivity_analysis(run_cli):
    from skintrack.demo import demo_study

    s = demo_study()
    table = s.sensitivity(imputations=20)
    assert table["analysis"].tolist() == [
        "primary: MMRM (missing at random)", "QC-flagged captures included", "multiple imputation, missing at random",
        "multiple imputation, jump to reference", "multiple imputation, copy reference", "tipping point (MAR + delta)"]
    assert table.loc[0, "estimate"] == s.endpoints()["estimate"].iloc[0]
    proc = run_cli("sensitivity", s.path, "--methods", "mi", "--imputations", "10", "--csv", check=0)
    assert proc.stdout.splitlines()[2].startswith('"multiple imputation, missing at random",active,placebo,W12,')


def test_a_primary_endpoint_the_mmrm_does_not_analyse_has_no_mmrm_sensitivity_analyses(tmp_path):
    """A count's primary endpoint is a negative binomial rate ratio: an MMRM's rows under it would be another
    model's numbers than the endpoint's (they were printed as "primary: MMRM")."""
    import skintrack
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    plan = (src / "plan.toml").read_text().replace('metric = "score.water"', 'metric = "count.blackhead.nose"')
    (tmp_path / "s" / "plan.toml").write_text(plan)
    s = skintrack.open(tmp_path / "s")
    assert s.endpoints()["model"].iloc[0] == "negative_binomial"
    with pytest.raises(skintrack.NotApplicable, match=r"^count.blackhead.nose: the primary endpoint is analysed by "
                                                      r"negative binomial \(a count\); the sensitivity analyses "
                                                      r"\(MMRM"):
        s.sensitivity()
    # the report says the section does not apply, not that the study could not estimate it
    doc = skintrack.build_report(s, tmp_path / "r", pdf=False, docx=False).document
    section = next(sec for sec in doc.sections if sec.title.startswith("Sensitivity analyses"))
    said = " ".join(getattr(part, "text", "") for part in section.parts)
    assert said.startswith("Not applicable to this study: count.blackhead.nose: the primary endpoint is analysed by")


def test_one_set_of_draw_shapes_serves_every_methods_draw():
    """Issue 23: each imputation finds the conditional distributions' shapes once for its covariance and draws
    every method with them; that is exactly the draw each method makes on its own (the one checked against R
    above), for subjects missing some visits, every visit or none."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 4))
    sigma = a @ a.T + 4 * np.eye(4)
    wide = rng.standard_normal((12, 4))
    wide[[1, 5], 2:] = np.nan  # dropped out
    wide[[2, 7, 9], 1] = np.nan  # a visit missed between observed ones
    wide[4] = np.nan  # nothing observed after baseline
    observed = ~np.isnan(wide)
    shapes = imputation.draw_shapes(sigma, imputation.missing_patterns(observed))
    assert len(shapes) == 3 and sum(len(rows) for rows, *_ in shapes) == 6
    normals = rng.standard_normal(wide.shape)
    own, ref = rng.standard_normal(wide.shape), rng.standard_normal(wide.shape)
    treated, last = np.arange(12) % 2 == 1, np.array([np.flatnonzero(o).max() if o.any() else -1 for o in observed])
    for method in ("mar", "j2r", "cr"):
        mean = imputation.marginal_means(method, own, ref, treated, last)
        shared = imputation.draw_with(wide, mean, normals, shapes)
        np.testing.assert_array_equal(shared, imputation.conditional_draw(wide, observed, mean, sigma, normals))
        np.testing.assert_array_equal(shared[observed], wide[observed])
        assert not np.isnan(shared).any()


def test_each_analysis_concludes_as_the_primary_comparison_is_tested(tmp_path):
    """The sensitivity table decided every row at p < alpha: under Holm's strategy (or Dunnett's over arms) it
    called the primary analysis significant beside an endpoints table that did not (score.total at W12 in the
    sample trial: p 0.032, Holm-adjusted over two endpoints 0.065)."""
    from dataclasses import replace

    import skintrack
    from skintrack.demo import ingest_sample
    from skintrack.tables.plan import Endpoint

    from test_trial import three_arm_study

    ingest_sample(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    replace(s.plan, multiplicity="holm", primary=Endpoint("score.total", "W12"),
            secondary=[Endpoint("score.sensitivity", "W12")]).write(s.path)
    s = skintrack.open(s.path)
    ends, table = s.endpoints(), s.sensitivity(methods=["qc", "mi", "tipping"], imputations=20)
    first = table.iloc[0]
    assert (first["p"], first["p_adjusted"], first["decision"]) == tuple(ends.loc[0, ["p", "p_adjusted", "decision"]])
    assert first["decision"] == "not significant" and first["p"] < 0.05 < first["p_adjusted"]
    others = ends["p"].iloc[1:].tolist()
    for r in table.iloc[1:3].itertuples():  # QC, MI: Holm over this analysis' p and the other endpoint's
        assert r.p_adjusted == pytest.approx(holm_of_two([r.p, others[0]])[0])
        assert r.decision == ("significant" if r.p_adjusted < 0.05 else "not significant")
    tip = table.iloc[3]  # not significant under MAR: no shift against the treatment makes it so
    assert tip["note"].startswith("no shift up to") and tip["p_adjusted"] == table.iloc[2]["p_adjusted"]

    (tmp_path / "three").mkdir()
    three = three_arm_study(tmp_path / "three")
    ends, table = three.endpoints(), three.sensitivity(methods=["mi"], imputations=20)
    primary = table[table["analysis"].str.startswith("primary")]
    np.testing.assert_array_equal(primary["p_adjusted"], ends.loc[ends["order"] == 1, "p_adjusted"])  # Dunnett's
    mi = table[table["analysis"].str.startswith("multiple")]
    np.testing.assert_allclose(mi["p_adjusted"], holm_of_two(mi["p"].tolist()))  # no joint model: Holm's


def holm_of_two(p):
    """Holm's adjusted p-values of two, written out."""
    low, high = sorted(p)
    return [min(1.0, 2 * low) if x == low else max(min(1.0, 2 * low), high) for x in p]
