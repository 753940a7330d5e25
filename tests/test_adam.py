"""ADaM = the analysis: ADSKIN's ANL01FL, ABLFL, BASE and CHG come from the very records the primary MMRM
uses (QC rule, baseline rule, visit windows), so R refits the report's numbers from ADSKIN alone, on a study
with a QC-flagged baseline, a flagged capture with an unflagged repeat, an out-of-window capture and a
subject without a baseline visit."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pandas as pd
import pytest

import skintrack
from skintrack.show.adam import paramcd

from test_mmrm import rscript  # noqa: F401 - the session fixture that installs R when missing


R_REFIT = Path(__file__).parent / "r" / "adam_refit.R"


def _turn_head(src: Path, dst: Path) -> None:
    doc = orjson.loads(src.read_bytes())
    doc["result"]["image_quality"]["face_orientation"]["yaw"] = 36.0  # beyond the API's 30 degrees: QC flags it
    dst.write_bytes(orjson.dumps(doc))


@pytest.fixture(scope="session")
def awkward(tmp_path_factory):
    """The SIMULATED sample trial with its D0 repeat captures, where S06's baseline captures are both
    flagged, S05's main baseline capture is flagged (its repeat is not), S08's W4 was taken 10 days late,
    and S10 has no D0 session."""
    from skintrack.sample import sample_study_dir

    sample, root = sample_study_dir(), tmp_path_factory.mktemp("awkward")
    shutil.copytree(sample / "responses", root / "responses")
    shutil.copytree(sample / "repeats", root / "repeats")
    for rel in ("responses/S06_D0.json", "repeats/S06_D0_r1.json", "responses/S05_D0.json"):
        _turn_head(sample / rel, root / rel)
    (root / "responses" / "S10_D0.json").unlink()
    (root / "repeats" / "S10_D0_r1.json").unlink()
    main = pd.read_csv(sample / "manifest.csv")
    late = (main["subject_id"] == "S08") & (main["visit"] == "W4")
    main.loc[late, "taken_at"] = (pd.to_datetime(main.loc[late, "taken_at"]) + pd.Timedelta(days=10)).dt.strftime(
        "%Y-%m-%dT%H:%M:%S")
    main = main[~((main["subject_id"] == "S10") & (main["visit"] == "D0"))]
    main.to_csv(root / "manifest.csv", index=False)
    repeats = pd.read_csv(sample / "repeats.csv")
    repeats[repeats["subject_id"] != "S10"].to_csv(root / "repeats.csv", index=False)
    study = root / "study"
    skintrack.ingest([root / "responses"], study, manifest=root / "manifest.csv", subjects=sample / "subjects.csv")
    skintrack.ingest([root / "repeats"], study, manifest=root / "repeats.csv")
    shutil.copy(sample / "plan.toml", study / "plan.toml")
    return skintrack.open(study)


def test_adskin_flags_exactly_the_records_the_analysis_uses(awkward, tmp_path):
    s = awkward
    skintrack.export(s, tmp_path, ["csv"], ["score.water"])
    text = {c: "" for c in ("ANL01FL", "ABLFL", "ANLREAS", "CRIT1FL")}
    adskin = pd.read_csv(tmp_path / "adskin.csv").fillna(text)
    adsl = pd.read_csv(tmp_path / "adsl.csv").set_index("SUBJID")
    rec = adskin[adskin["PARAMCD"] == paramcd("score.water")].assign(
        subject=lambda d: d["USUBJID"].str.rsplit("-", n=1).str[-1])
    fit = s.mmrm("score.water")
    excluded = dict(zip(fit.excluded["subject_id"], fit.excluded["reason"]))
    assert excluded["S06"].startswith("D0 excluded by capture QC (yaw_out)") and excluded["S10"] == "no D0 session"
    assert (rec["ANL01FL"] == "Y").sum() == fit.n_obs
    assert set(rec.loc[rec["ANL01FL"] == "Y", "subject"]) == set(
        s.change_from_baseline("score.water").query("not is_baseline")["subject_id"])
    s05 = rec[(rec["subject"] == "S05") & (rec["AVISIT"] == "D0")]
    assert len(s05) == 2 and s05.loc[s05["ABLFL"] == "Y", "CRIT1FL"].tolist() == ["N"]  # the unflagged repeat
    assert s05.loc[s05["ABLFL"] != "Y", "ANLREAS"].str.startswith("excluded by capture QC (yaw_out").all()
    assert not (rec.loc[rec["subject"] == "S06", "ANL01FL"] == "Y").any() and (rec["subject"] == "S06").any()
    assert (rec.loc[rec["subject"] == "S06", "ABLFL"] != "Y").all()
    late = rec[(rec["subject"] == "S08") & (rec["AVISIT"] == "W4")]
    assert late["ANL01FL"].tolist() == [""] and late["ANLREAS"].str.startswith("outside the window of W4").all()
    assert (late["AWLO"] == 25).all() and (late["AWHI"] == 31).all() and (late["ADY"] > late["AWHI"]).all()
    assert adsl.loc["S06", "EFFFL"] == "N" and adsl.loc["S10", "EFFFL"] == "N" and adsl.loc["S05", "EFFFL"] == "Y"
    assert any("S08 W4: day 40, outside the window 28 +/- 3" in p for p in s.check()["problem"])


def test_r_refits_the_report_from_adskin_alone(awkward, tmp_path, rscript):  # noqa: F811
    skintrack.export(awkward, tmp_path, ["csv"], ["score.water"])
    subprocess.run([rscript, str(R_REFIT), str(tmp_path / "adskin.csv"), paramcd("score.water"),
                    str(tmp_path / "r")], check=True, capture_output=True)
    r = pd.read_csv(tmp_path / "r-kr.csv").astype({"visit": str})
    ours = awkward.mmrm("score.water").diffs.merge(r, on=["visit", "treatment"], suffixes=("", "_r"))
    assert len(ours) == 3
    rel = lambda a, b: float(((a - b).abs() / b.abs()).max())  # noqa: E731
    assert rel(ours["estimate"], ours["estimate_r"]) < 1e-6
    assert rel(ours["std_error"], ours["se"]) < 1e-6 and rel(ours["df"], ours["df_r"]) < 1e-6
