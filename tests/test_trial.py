"""The study plan and what follows from it: one baseline, any number of arms, endpoints tested in order with
the multiplicity strategy, QC as the plan says, and every output saying what was assumed."""
import csv
import gc
import json
import shutil
import subprocess
import sys

import numpy as np
import orjson
import pytest
from statsmodels.stats.multitest import multipletests

import skintrack
from skintrack import UsageError
from skintrack.analysis import multiplicity
from skintrack.demo import ingest_sample
from skintrack.sample import sample_study_dir
from skintrack.show.report import build_report
from skintrack.tables.plan import Endpoint, Plan


@pytest.fixture(scope="session")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planned")
    ingest_sample(folder / "s")
    return folder / "s"


def test_the_plan_is_checked_where_it_is_written(planned, run_cli):
    for args, message in [
        (("--primary", "score.watr@W12"), "primary endpoint: unknown metric 'score.watr'"),
        (("--primary", "score.water@W13"), "primary endpoint score.water: visit 'W13' is not in the schedule "
                                           "(D0, W4, W8, W12)"),
        (("--primary", "score.water@D0"), "the baseline visit cannot be an endpoint"),
        (("--control", "vehicle"), "arm 'vehicle' is not in the subjects CSV (arms: active, placebo)"),
        (("--baseline", "W2"), "baseline 'W2' is not a visit of the schedule"),
        (("--primary", "score.water"), "write METRIC@VISIT"),
        (("--visits", "D0:0,W4:28:3"), "write LABEL:DAY:WINDOW"),
    ]:
        proc = run_cli("plan", planned, *args)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1, (args, proc)
    assert Plan.read(planned).primary == Endpoint("score.water", "W12")  # nothing bad was stored
    (planned / "plan.toml").write_text("multiplicty = 'holm'\n" + (planned / "plan.toml").read_text())
    with pytest.raises(UsageError, match="unknown keys multiplicty"):
        skintrack.open(planned).plan
    Plan.load(sample_study_dir() / "plan.toml").write(planned)


def test_without_a_plan_every_output_says_what_was_assumed(tmp_path, run_cli):
    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    s = skintrack.open(tmp_path / "s")
    assert s.plan.assumed == [
        "visits (every visit label in the data, in time order)", "baseline visit D0 (the first visit)",
        "control arm placebo (named like a control)", "treatment arms active (every other arm)",
        "primary endpoint score.total at W12 (the total score at the last visit)"]
    assert s.mmrm("score.water").assumed == s.plan.assumed
    proc = run_cli("endpoints", tmp_path / "s", check=0)
    assert "assumed (no plan says otherwise): visits" in proc.stdout
    page = build_report(s, tmp_path / "r", metrics=["score.water"], pdf=False).html.read_text()
    assert "Assumed (not in the plan)" in page and "primary endpoint score.total at W12 (the total score" in page


def three_arm_study(tmp_path):
    """The sample trial with its subjects spread over arms A, B, C (none named like a placebo)."""
    src = sample_study_dir()
    with open(src / "subjects.csv") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        r["arm"] = "ABC"[i % 3]
    with open(tmp_path / "subjects.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv",
                     subjects=tmp_path / "subjects.csv")
    return skintrack.open(tmp_path / "s")


def test_three_arms_with_no_placebo_name_are_analysed_and_reported(tmp_path):
    s = three_arm_study(tmp_path)
    assert (s.plan.control, s.plan.treatments) == ("A", ["B", "C"])
    assert "control arm A (no arm is named like a control: the first by name)" in s.plan.assumed
    fit = s.mmrm("score.water")
    assert fit.diffs[["visit", "treatment", "control"]].values.tolist() == [
        [v, t, "A"] for v in ("W4", "W8", "W12") for t in ("B", "C")]
    assert s.compare_arms("score.water", "W12")["treatment"].tolist() == ["B", "C"]
    assert len(s.endpoints()) == 2 and set(s.endpoints()["treatment"]) == {"B", "C"}
    r = build_report(s, tmp_path / "r", metrics=["score.water"], pdf=False)
    assert len(r.findings) == 2 and ": B " in r.findings[0] and ": C " in r.findings[1]  # one family: Dunnett
    assert all("simultaneous 95% CI" in f and "adjusted p" in f for f in r.findings)


def test_a_fixed_sequence_stops_at_the_first_endpoint_that_fails(planned, tmp_path):
    study = tmp_path / "s"
    shutil.copytree(planned, study)
    plan = Plan.read(study)
    plan.primary = Endpoint("score.pores", "W12")  # the simulated product does nothing to pores
    plan.write(study)
    s = skintrack.open(study)
    ends = s.endpoints()
    assert ends["metric"].tolist() == ["score.pores", "score.rough", "score.melanin"]
    assert ends["p"].iloc[0] > 0.05 and ends["p"].iloc[1] < 0.05  # the second would pass alone ...
    assert ends["decision"].tolist() == ["not significant", "not tested", "not tested"]  # ... but is not tested
    r = build_report(s, tmp_path / "r", metrics=["score.pores"], pdf=False)
    assert "active against placebo not tested, because an earlier comparison in the sequence was not significant" \
        in r.findings[1]
    plan.multiplicity = "holm"
    plan.write(study)
    holm = skintrack.open(study).endpoints()
    np.testing.assert_allclose(holm["p_adjusted"], multipletests(holm["p"], method="holm")[1], rtol=1e-12)
    assert holm["decision"].tolist() == ["not significant", "significant", "significant"]


def test_holm_and_benjamini_hochberg_are_statsmodels_own_floats(monkeypatch):
    """Both adjustments by hand give multipletests' floats bit for bit, on p-values with ties, zeros, ones,
    tiny values and NaN (left out and kept NaN)."""
    monkeypatch.setattr(gc, "collect", lambda: 0)  # multipletests' holm collects garbage at each call (~0.1 s)
    rng = np.random.default_rng(7)
    for case in range(150):
        k = int(rng.integers(1, 12))
        p = [rng.random(k), rng.random(k) ** 8, np.round(rng.random(k), 1),
             rng.choice([0.0, 1.0, 0.05, 0.05, 1e-300, 0.5], k), np.where(rng.random(k) < 0.3, np.nan, rng.random(k))
             ][case % 5]
        ok = np.isfinite(p)
        for ours, method in ((multiplicity.holm, "holm"), (multiplicity.benjamini_hochberg, "fdr_bh")):
            expected = np.full(k, np.nan)
            if ok.any():
                expected[ok] = multipletests(p[ok], method=method)[1]
            np.testing.assert_array_equal(ours(p), expected, err_msg=f"{method} {p}")


def test_compare_loads_neither_statsmodels_nor_scipy_stats(planned):
    """`compare`'s adjusted p-values and its Welch test between arms cost no import of scipy.stats (a second of
    CPU, more than the command)."""
    code = (f"import sys, skintrack; s = skintrack.open({str(planned)!r}); "
            "s.compare(['score.water', 'score.rough'], 'D0', 'W12'); s.compare_arms('score.water', 'W12'); "
            "print(sorted(m for m in ('scipy.stats', 'statsmodels') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_baseline_excluded_by_qc_leaves_the_subject_out_and_says_why(tmp_path):
    src = sample_study_dir()
    shutil.copytree(src / "responses", tmp_path / "in")
    doc = orjson.loads((tmp_path / "in" / "S05_D0.json").read_bytes())
    doc["result"]["image_quality"]["face_orientation"]["yaw"] = 40.0  # a turned head at baseline
    (tmp_path / "in" / "S05_D0.json").write_bytes(orjson.dumps(doc))
    skintrack.ingest([tmp_path / "in"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    Plan.load(src / "plan.toml").write(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    fit = s.mmrm("score.water")  # the plan excludes QC-flagged captures
    assert fit.excluded.values.tolist() == [["S05", "D0 excluded by capture QC (yaw_out)"]]
    assert fit.n_subjects == 23 and "S05" not in set(s.change_from_baseline("score.water", exclude_flagged=True)
                                                     .subject_id)
    included = s.mmrm("score.water", exclude_flagged=False)  # the sensitivity analysis
    assert included.n_subjects == 24 and included.excluded.empty


def test_plan_init_writes_a_commented_starter_that_reads_back(tmp_path, run_cli, sample):
    import skintrack

    skintrack.ingest([sample / "responses"], tmp_path / "s", manifest=sample / "manifest.csv",
                     subjects=sample / "subjects.csv")
    proc = run_cli("plan", tmp_path / "s", "--init", check=0)
    text = (tmp_path / "s" / "plan.toml").read_text()
    assert "wrote" in proc.stdout and text.count("\n# ") >= 8  # each choice explained
    plan = Plan.read(tmp_path / "s")
    assert plan.baseline == "D0" and plan.control == "placebo" and plan.treatments == ["active"]
    assert [v.label for v in plan.visits] == ["D0", "W4", "W8", "W12"] and plan.illustration == {"per_arm": 2, "seed": 1}
    again = run_cli("plan", tmp_path / "s", "--init")
    assert again.returncode == 2 and "already has a plan" in again.stderr


def test_mmrm_cli_prints_the_fit_and_its_differences(planned, run_cli):
    proc = run_cli("mmrm", planned, "score.water", check=0)
    assert proc.stdout.startswith("MMRM of score.water: MMRM of the change") and "LS-means" in proc.stdout
    rows = json.loads(run_cli("mmrm", planned, "score.water", "--json", check=0).stdout)
    fit = skintrack.open(planned).mmrm("score.water")
    assert [r["estimate"] for r in rows] == fit.diffs["estimate"].tolist()  # every digit


def test_the_plans_defaults_spelt_out_share_one_fit(planned):
    """The report, endpoints and sensitivity ask for the primary MMRM in different words (the plan's arms named
    or not, its QC rule given or not): one fit answers them all; another QC rule is another fit."""
    s = skintrack.open(planned)
    plan = s.plan
    fit = s.mmrm("score.water")
    assert s.mmrm("score.water", treatments=plan.treatments, control=plan.control,
                  exclude_flagged=plan.qc == "exclude") is fit
    other = s.mmrm("score.water", exclude_flagged=plan.qc != "exclude")
    assert other is not fit and other.qc != fit.qc


def test_ancova_of_a_baseline_that_adjusts_nothing_or_names_the_arm():
    """compare_arms' ANCOVA where its design is rank deficient: a baseline every subject shares (a metric at 0
    for everyone at D0) adjusts nothing, so the difference is statsmodels' OLS of change on arm alone, with no
    warning about a rank-deficient design; a baseline of one value per arm is the arm itself, so there is no
    adjusted difference (NaN, as for an arm of one subject), where least squares would print a split."""
    import warnings

    import pandas as pd
    import statsmodels.formula.api as smf

    from skintrack.analysis.trial import ancova

    rng = np.random.default_rng(3)
    data = pd.DataFrame({"arm": ["active", "placebo"] * 8, "delta": rng.normal(0, 1, 16), "baseline_value": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ancova(data, "active", "placebo")
    ref = smf.ols("delta ~ treated", data=data.assign(treated=(data["arm"] == "active").astype(float))).fit()
    assert got["diff"] == pytest.approx(ref.params["treated"], rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalues["treated"], rel=1e-12)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(ref.conf_int().loc["treated"]), rel=1e-12)
    by_arm = data.assign(baseline_value=np.where(data["arm"] == "active", 2.0, 1.0))
    assert np.isnan(ancova(by_arm, "active", "placebo")["diff"])
    varied = data.assign(baseline_value=rng.normal(5, 1, 16))
    full = smf.ols("delta ~ treated + baseline_value",
                   data=varied.assign(treated=(varied["arm"] == "active").astype(float))).fit()
    assert ancova(varied, "active", "placebo")["diff"] == pytest.approx(full.params["treated"], rel=1e-12)


def test_check_lists_a_plan_it_cannot_use_instead_of_stopping(tmp_path, run_cli):
    """`skintrack check` is where a user looks when every command refuses the plan: it names the plan's
    problem beside the others (before, it stopped on the same error as every other command)."""
    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    (tmp_path / "s" / "plan.toml").write_text((src / "plan.toml").read_text().replace('"active"', '"verum"'))
    found = skintrack.open(tmp_path / "s").check()
    mine = found[found["where"].str.endswith("plan.toml")]
    assert mine["problem"].tolist() == ["the study plan: arm 'verum' is not in the subjects CSV (arms: active, "
                                        "placebo)"]
    proc = run_cli("check", tmp_path / "s", check=1)
    assert "plan.toml: the study plan: arm 'verum' is not in the subjects CSV" in proc.stdout


def test_a_study_without_arms_says_so_where_arms_are_compared(tmp_path, run_cli):
    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv")  # no subjects CSV
    s = skintrack.open(tmp_path / "s")
    for compare in (s.endpoints, lambda: s.mmrm("score.water"), lambda: s.compare_arms("score.water", "W12")):
        with pytest.raises(skintrack.NotApplicable, match="^arms are compared against a control, and this study "
                                                          r"has no arms \(a subjects CSV with an arm column"):
            compare()
    proc = run_cli("trends", tmp_path / "s", "score.water", "--view", "cohort", "--csv", check=0)  # by visit alone
    assert proc.stdout.splitlines()[0].startswith("visit,n,mean,")


def test_the_statistics_commands_reproduce_an_earlier_version(tmp_path, run_cli):
    """An auditor re-runs the endpoints, the MMRM and the other tables at the version a signed report names
    (`report --version` and `export --version` did; the statistics commands computed only the newest)."""
    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    (tmp_path / "s" / "plan.toml").write_text((src / "plan.toml").read_text())
    skintrack.open(tmp_path / "s").plan  # noqa: B018 - the edited plan.toml is kept as a version when read
    signed = skintrack.open(tmp_path / "s").version
    commands = [("endpoints",), ("mmrm", "score.water"), ("claims",), ("trends", "score.water"),
                ("compare", "score.water", "--arms", "W12"), ("sensitivity", "--methods", "qc")]
    then = {c: run_cli(c[0], tmp_path / "s", *c[1:], "--json", check=0).stdout for c in commands}
    plan = (src / "plan.toml").read_text().replace('metric = "score.water"', 'metric = "score.rough"')
    (tmp_path / "s" / "plan.toml").write_text(plan.replace('qc = "exclude"', 'qc = "include"'))
    now = run_cli("endpoints", tmp_path / "s", "--json", check=0).stdout
    assert now != then[("endpoints",)]
    for c in commands:
        assert run_cli(c[0], tmp_path / "s", *c[1:], "--json", "--version", signed, check=0).stdout == then[c], c
