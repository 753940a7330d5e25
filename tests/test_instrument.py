"""The instrument under the study: API generations, straddles, the drift sentinel over HTTP, the bridge."""
import hashlib
import re
import shutil
from pathlib import Path

import orjson
import pytest

import skintrack
from skintrack.api.analyze import analyze
from skintrack.api.client import Client, RetryPolicy
from skintrack.api.emulator import _shifted, parse_shift
from skintrack.errors import UsageError
from skintrack.tables import store
from skintrack.tables.generations import NAMES, downgrade, infer
from skintrack.analysis.selection import records_sql
from skintrack.tables.plan import Plan

from conftest import FIXTURES, responses

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05, timeout=(2, 10))

# every real response and the generation its source (PROVENANCE.md) says answered it
SOURCES = {
    "real/community-2023-full.json": "v1.6.2",  # May 2023: between v1.6.2 and v1.6.6
    "real/ailabtools-docs-case1/response-old.json": "v1.6.6",  # the docs' older recording
    "real/ailabtools-docs-case2/response-old.json": "v1.6.6",
    "real/ailabtools-docs-case1/response-v1.7.json": "v1.7.6",  # today's docs
    "real/ailabtools-docs-case2/response-v1.7.json": "v1.7.6",
    "real/community-2025-full.json": "v1.7.6",
    "seed-example.json": "v1.6.6",
    "real/errors/current-docs-422-no-face.json": "unknown",  # a failure has no shape to read
    "real/errors/legacy-docs-422-no-face.json": "unknown",
    "real/errors/newest-docs-no-face.json": "unknown",
}


def load(name):
    return orjson.loads((FIXTURES / name).read_bytes())


def test_every_real_fixture_is_named():
    found = {str(p.relative_to(FIXTURES)) for p in (FIXTURES / "real").rglob("*.json")} | {"seed-example.json"}
    assert found == set(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_real_response_gets_the_generation_its_source_says(name):
    got = infer(load(name))
    assert got.name == SOURCES[name], got.basis


def test_the_call_date_picks_within_the_range_the_shape_allows():
    v17 = load("real/ailabtools-docs-case2/response-v1.7.json")
    assert infer(v17, "2024-01-15").name == "v1.7.1" and infer(v17, "2025-02-01").name == "v1.7.6"
    assert infer(v17, "2023-01-01").name == "v1.7.1"  # the shape proves v1.7.1 or later, whatever the date
    old = load("real/ailabtools-docs-case2/response-old.json")
    assert infer(old, "2026-11-26").name == "v1.6.6"  # the shape wins over a later date
    failure = load("real/errors/current-docs-422-no-face.json")
    assert infer(failure, "2023-05-01").name == "v1.6.2" and "call date" in infer(failure, "2023-05-01").basis


def test_the_documents_examples_get_the_generation_their_shape_says():
    """The v1.7.6 document's example is older than its own field table (no oily full_face, no detection
    counts: real data beats the document), so its shape says v1.6.6; the envelope examples have no result."""
    names = ("v1.7.6-example.json", "envelope-success-example.json", "envelope-error-example.json")
    examples = [load(f"docs-examples/{n}") for n in names]
    assert [infer(e).name for e in examples] == ["v1.6.6", "unknown", "unknown"]
    assert infer(examples[0], "2024-09-01").name == "v1.6.6"


@pytest.mark.parametrize("generation", NAMES)
def test_an_older_shape_is_read_back_as_its_generation(generation):
    current = load("real/community-2025-full.json")
    current["result"]["left_side_result"] = {"left_acne_info": {}, "left_jawline_info": {"left_jawline_angle_level": 1}}
    released = {"v1.5.1": "2023-03-01", "v1.6.2": "2023-05-01", "v1.6.6": "2023-07-01", "v1.7.1": "2024-01-01",
                "v1.7.6": "2025-01-01"}[generation]
    assert infer(downgrade(current, generation), released).name == generation


def _real_pair(folder: Path, cases=(1, 2)) -> Path:
    """The vendor's two recordings of each photo, as `analyze` would have archived them (the photo's SHA-256
    in the envelope), with a manifest: the old recording at D0 and the new one at W4."""
    folder.mkdir(parents=True)
    rows = ["file,subject_id,visit"]
    for i in cases:
        src = FIXTURES / "real" / f"ailabtools-docs-case{i}"
        sha = hashlib.sha256((src / "image.jpeg").read_bytes()).hexdigest()
        for stem, visit in (("response-old", "D0"), ("response-v1.7", "W4")):
            name = f"case{i}-{stem}"
            shutil.copy(src / f"{stem}.json", folder / f"{name}.json")
            (folder / f"{name}.meta.json").write_bytes(orjson.dumps({"photo": str(src / "image.jpeg"),
                                                                       "photo_sha256": sha}))
            rows.append(f"{name}.json,S{i},{visit}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_bridge_on_the_vendors_real_pair_shows_the_wrinkle_jump(tmp_path):
    src = _real_pair(tmp_path / "in")
    skintrack.ingest([src], tmp_path / "s", manifest=src / "manifest.csv")
    s = skintrack.open(tmp_path / "s")
    assert s.sql("SELECT api_generation, count(*) n FROM analyses GROUP BY 1 ORDER BY 1").values.tolist() == [
        ["v1.6.6", 2], ["v1.7.6", 2]]
    b = s.bridge().set_index("metric")
    wrinkle = b.loc["score.wrinkle"]
    assert (wrinkle.from_generation, wrinkle.to_generation, wrinkle.photos) == ("v1.6.6", "v1.7.6", 2)
    case2 = skintrack.open(tmp_path / "s").bridge(["score.wrinkle"])
    assert "+27" in case2["per_photo"].iloc[0]
    skintrack.ingest([_real_pair(tmp_path / "two", cases=(2,))], tmp_path / "c2",
                     manifest=tmp_path / "two" / "manifest.csv")
    only2 = skintrack.open(tmp_path / "c2").bridge().set_index("metric")
    assert only2.at["score.wrinkle", "offset"] == 27  # 67 then 94: the same photo
    scores = only2[only2.index.str.match(r"^score\.[a-z_]+$")]
    assert (scores.drop("score.wrinkle")["offset"] == 0).all()  # every other score equal


def test_a_series_across_generations_is_a_finding_and_the_plan_can_restrict_it(tmp_path, run_cli):
    src = _real_pair(tmp_path / "in")
    study = tmp_path / "s"
    skintrack.ingest([src], study, manifest=src / "manifest.csv")
    found = skintrack.open(study).check()
    subjects = found[found["where"].str.startswith("subject")]
    assert sorted(subjects["where"]) == ["subject S1", "subject S2"]
    assert "v1.6.6 (D0) and v1.7.6 (W4)" in subjects["problem"].iloc[0]
    run_cli("check", study, check=1)
    (tmp_path / "subjects.csv").write_text("subject_id,arm\nS1,placebo\nS2,active\n")
    skintrack.ingest([], study, subjects=tmp_path / "subjects.csv")
    plan = ('visits = [{label = "D0"}, {label = "W4"}]\nbaseline = "D0"\ncontrol = "placebo"\ntreatments = ["active"]\n'
            'primary = { metric = "score.wrinkle", visit = "W4" }\n')
    (study / "plan.toml").write_text(plan)
    found = skintrack.open(study).check()
    ends = found[found["where"] == "endpoint score.wrinkle at W4"]
    assert "v1.6.6, v1.7.6" in ends["problem"].iloc[0]
    (study / "plan.toml").write_text('generation = "v1.7.6"\n' + plan)
    s = skintrack.open(study)
    assert not s.check()["problem"].str.contains("generation").any()
    sql, params = records_sql("score.wrinkle", s.rules())
    recs = s.sql(f"WITH {sql} SELECT visit, reason FROM recs", params)
    assert set(recs.loc[recs["visit"] == "D0", "reason"]) == {"measured by API generation v1.6.6; the plan analyses "
                                                               "v1.7.6 only"}
    (study / "plan.toml").write_text('generation = "v2"\n' + plan)
    with pytest.raises(UsageError, match="generation 'v2' is not one of"):
        skintrack.open(study).plan  # noqa: B018


def test_an_older_study_gains_the_columns_and_its_generations_are_read_again(tmp_path):
    src = _real_pair(tmp_path / "in", cases=(1,))
    study = tmp_path / "s"
    skintrack.ingest([src], study, manifest=src / "manifest.csv")
    added = ["api_generation", "api_generation_basis", "called_at", "sentinel", "batch", "batch_position"]
    con = store.connect(study, write=True)  # what a study written before the columns existed looks like
    with store.transaction(con, "test: an older schema"):
        for column in added:
            con.execute(f"ALTER TABLE {store.LAKE}.main.analyses DROP COLUMN {column}")
    con.close()
    old = skintrack.open(study)
    assert old.sql("SELECT count(*) n FROM analyses WHERE api_generation IS NULL")["n"].tolist() == [2]
    skintrack.ingest([src], study, manifest=src / "manifest.csv")  # nothing new: the upgrade runs
    s = skintrack.open(study)
    assert s.sql("SELECT api_generation FROM analyses ORDER BY visit")["api_generation"].tolist() == ["v1.6.6", "v1.7.6"]
    history = s.history()
    assert "upgrade" in set(history["command"])
    earlier = skintrack.open(study, version=old.version)  # an old version reads the new columns as NULL
    assert earlier.sql("SELECT count(*) n FROM analyses WHERE api_generation IS NULL")["n"].tolist() == [2]


# ---- the sentinel, end to end over HTTP against the emulator ------------------------------------------------
def _batch(photos, tmp_path, n, visit):
    """`n` SIMULATED study photos for one visit's batch, with its manifest."""
    from skintrack.sample import sample_photo

    folder = tmp_path / visit
    first = 1000 * sum(map(ord, visit))  # the same seeds in every process, and no two visits share one (hash()
    # differs between processes: its seeds collided in one run of fourteen, and a photo met twice is paid once)
    made = [sample_photo(folder, f"S{i:02d}_{visit}.jpg", seed=first + i) for i in range(n)]
    (tmp_path / f"{visit}.csv").write_text("file,subject_id,visit\n" + "".join(
        f"{p},S{i:02d},{visit}\n" for i, p in enumerate(made)))
    return folder, tmp_path / f"{visit}.csv"


def _panel(tmp_path, k=3):
    from skintrack.sample import sample_photo

    return [sample_photo(tmp_path / "panel", f"P{i}.jpg", seed=900 + i) for i in range(k)][0].parent


def test_the_sentinel_stops_a_changed_model_before_any_study_photo_is_paid(photos, tmp_path, emulator):
    panel = _panel(tmp_path)
    # 3 sentinel + 4 study + 3 sentinel calls in the W4 batch; the model's wrinkle score moves after them
    emu = emulator(shifts=(parse_shift("score.wrinkle=27@10"),))
    client = Client(api_key="test-key", url=emu.url, retry=FAST)
    study = tmp_path / "s"
    w4, m4 = _batch(photos, tmp_path, 4, "W4")
    first = analyze([w4], study, manifest=m4, client=client, qps=None, sentinel=panel)
    assert first.succeeded == 4 and first.sentinel_calls == 6 and not first.stopped and not first.changed_within
    w8, m8 = _batch(photos, tmp_path, 4, "W8")
    second = analyze([w8], study, manifest=m8, client=client, qps=None, sentinel=panel)
    assert second.succeeded == 0 and re.search(r"score\.wrinkle \+\d+\.\d\d \(MDC 0\.00\)", second.stopped)
    ledger = emu.stats()["ledger"]
    study_photos = {hashlib.sha256(p.read_bytes()).hexdigest() for p in w8.iterdir()}
    assert len(ledger) == 13 and not study_photos & {e["photo_sha256"] for e in ledger}  # no W8 photo paid
    s = skintrack.open(study)
    d = s.drift()
    moved = d[d["exceeds_mdc"]]
    assert set(moved["metric"]) >= {"score.wrinkle"} and set(moved["batch"]) == {second.batch}
    assert s.sql("SELECT count(*) n FROM analyses WHERE visit = 'W8'")["n"].tolist() == [0]
    assert s.sql("SELECT count(*) n FROM analyses_raw WHERE sentinel IS NOT NULL")["n"].tolist() == [9]
    # the user accepts the change: recorded, the batch goes on, and later runs compare with the new model
    third = analyze([w8], study, manifest=m8, client=client, qps=None, sentinel=panel, accept_drift=True)
    assert third.succeeded == 4 and "score.wrinkle" in third.drift
    s = skintrack.open(study)
    events = s.sql("SELECT batch, event FROM instrument")
    assert events.values.tolist() == [[third.batch, "accepted drift"]]
    assert "accepted-drift" in set(s.history()["command"])
    after = s.drift()
    end = after[(after["batch"] == third.batch) & (after["position"] == "end")]
    assert set(end["reference"]) == {f"{third.batch} start"} and not end["exceeds_mdc"].any()


def test_a_change_inside_a_batch_is_caught_by_the_end_run(photos, tmp_path, emulator, run_cli):
    panel = _panel(tmp_path)
    emu = emulator(shifts=(parse_shift("score.wrinkle=27@5"),))  # after 3 sentinel and 2 of 4 study photos
    client = Client(api_key="test-key", url=emu.url, retry=FAST)
    study = tmp_path / "s"
    w4, m4 = _batch(photos, tmp_path, 4, "W4")
    report = analyze([w4], study, manifest=m4, client=client, qps=None, sentinel=panel, concurrency=1)
    assert report.succeeded == 4 and re.search(r"score\.wrinkle \+\d+\.\d\d", report.changed_within)
    found = skintrack.open(study).check()
    assert any(w == f"batch {report.batch}" for w in found["where"])
    proc = run_cli("drift", study, check=1)
    assert re.search(r"score\.wrinkle \+\d+\.\d\d", proc.stdout)


def test_dry_run_counts_the_sentinel_calls(photos, tmp_path, run_cli):
    panel = _panel(tmp_path, k=4)
    photos(5)
    proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--sentinel", panel, "--dry-run",
                   env={"SKINTRACK_API_URL": "http://127.0.0.1:9/none"})
    assert "13 calls would be made (5 study photos, 8 sentinel)" in proc.stdout
    assert "sentinel: 8 calls (a panel of 4 photos" in proc.stdout
    assert not (tmp_path / "s" / "raw").exists()


def test_the_emulator_answers_as_an_older_generation(photos, tmp_path, emulator):
    photos(2)
    client = Client(api_key="test-key", url=emulator(generation="v1.6.6").url, retry=FAST)
    analyze([tmp_path / "photos"], tmp_path / "s", client=client, qps=None)
    got = skintrack.open(tmp_path / "s").sql("SELECT DISTINCT api_generation FROM analyses")
    assert got["api_generation"].tolist() == ["v1.6.6"]


def test_the_sample_trial_shows_its_sentinel_and_nothing_moved():
    from skintrack.demo import demo_study

    s = demo_study()
    d = s.drift()
    assert len(d) and not d["moved"].any() and d["batch"].nunique() == 4
    assert s.generations()["api_generation"].tolist() == ["v1.7.6"]
    assert s.sql("SELECT count(*) n FROM analyses WHERE sentinel IS NOT NULL")["n"].tolist() == [0]


# ---- sensitivity: a primary endpoint measured across generations -------------------------------------------
def test_sensitivity_restricts_to_one_generation_and_bridges_the_other(tmp_path, sample):
    """The sample trial with its W12 visit (and W12 sentinel batch) measured by a v1.6.6 model that scores
    moisture 5 points lower: bridging the offset the sentinel measured gives back the unchanged trial's
    estimate; restricted to v1.7.6 the W12 endpoint has no values and says so."""
    src = tmp_path / "trial"
    shutil.copytree(sample, src)
    changed = responses(src / "responses", "*_W12.json") + list((src / "sentinel" / "W12-batch").glob("P?.*.json"))
    for path in changed:
        if path.name.endswith(".meta.json"):
            meta = orjson.loads(path.read_bytes())
            meta.pop("started_at")
            path.write_bytes(orjson.dumps(meta))
            continue
        doc = orjson.loads(path.read_bytes())
        _shifted(doc, {"score.water": -5})
        path.write_bytes(orjson.dumps(downgrade(doc, "v1.6.6")))
    skintrack.ingest([src / "responses", src / "sentinel"], tmp_path / "s", manifest=src / "manifest.csv",
                     subjects=src / "subjects.csv")
    Plan.read(src).write(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    assert any(s.check()["where"] == "endpoint score.water at W12")
    table = s.sensitivity(methods=("generation", "bridge")).set_index("analysis")
    skintrack.ingest([sample / "responses"], tmp_path / "plain", manifest=sample / "manifest.csv",
                     subjects=sample / "subjects.csv")
    Plan.read(sample).write(tmp_path / "plain")
    truth = skintrack.open(tmp_path / "plain").mmrm("score.water").diff("W12", "active")
    bridged = table.loc["bridged onto API generation v1.7.6"]
    assert bridged["note"] == "v1.6.6 values +5.00"
    assert bridged["estimate"] == pytest.approx(truth["estimate"], abs=1e-6)
    assert bridged["std_error"] == pytest.approx(truth["std_error"], rel=1e-6)
    only = table.loc["API generation v1.7.6 only"]
    assert only["note"].startswith("not estimable")
