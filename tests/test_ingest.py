"""`skintrack ingest` and `skintrack.open`: tables, manifest, idempotence, increments, bad input, crashes."""
import contextlib
import gzip
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import skintrack

from conftest import FIXTURES, load, responses

CONTRACT_COLUMNS = {
    "analyses": "analysis_id subject_id visit taken_at source request_id log_id ok error_code error_status "
                "error_message face_left face_top face_width face_height face_ratio yaw pitch roll hair_occlusion "
                "glasses skin_age skin_type ingested_at",
    "subjects": "subject_id", "scores": "analysis_id metric value", "counts": "analysis_id feature region value",
    "areas": "analysis_id feature region value",
    "severities": "analysis_id feature region value confidence label",
    "tones": "analysis_id ita ita_class ha ha_class skin_tone skin_tone_confidence",
    "wrinkles": "analysis_id region score severity_level norm_length norm_depth pixel_density area_ratio "
                "deep_ratio deep_num shallow_num",
    "detections": "analysis_id kind side idx left top width height confidence polygon",
    "outlines": "analysis_id kind region idx points depth length",
    "side_results": "analysis_id side jawline_quality jawline_angle jawline_angle_level",
    "maps": "analysis_id name path media_type width height", "extras": "analysis_id path value",
    "rejects": "source reason at", "metrics": "analysis_id metric value",
    "metrics_wide": "analysis_id subject_id visit taken_at score.total count.acne.front",
}


@pytest.fixture(scope="session")
def trial(tmp_path_factory):
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    study = tmp_path_factory.mktemp("trial")
    report = skintrack.ingest([src / "responses"], study, manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    assert (report.added, report.sessions, report.subjects, report.rejected) == (96, 96, 24, [])
    return study


@pytest.mark.parametrize("view", CONTRACT_COLUMNS)
def test_contract_columns(trial, view):
    cols = set(skintrack.open(trial).sql(f'select * from "{view}" limit 0').columns)
    assert set(CONTRACT_COLUMNS[view].split()) <= cols


def test_empty_study_has_every_view_typed(tmp_path):
    s = skintrack.open(tmp_path / "new", create=True)
    for view in CONTRACT_COLUMNS:
        assert s.sql(f'select count(*) as n from "{view}"')["n"].tolist() == [0]


def test_manifest_and_subjects_are_joined(trial):
    s = skintrack.open(trial)
    row = s.sql("select subject_id, visit, taken_at, operator from analyses where source like '%S05_W8.json'").iloc[0]
    manifest = [r for r in (Path(skintrack.sample.sample_study_dir()) / "manifest.csv").read_text().splitlines()
                if "S05_W8" in r][0].split(",")
    assert (row["subject_id"], row["visit"], row["operator"]) == ("S05", "W8", manifest[4])
    assert str(row["taken_at"]).replace(" ", "T") == manifest[3]
    arms = s.sql("select arm, count(*) n from subjects group by arm order by arm")
    assert arms.values.tolist() == [["active", 12], ["placebo", 12]]


def test_metrics_view_and_wide_agree(trial):
    s = skintrack.open(trial)
    long = s.sql("select analysis_id, value from metrics where metric = 'score.water' order by 1")
    wide = s.sql('select analysis_id, "score.water" as value from metrics_wide order by 1')
    assert long.values.tolist() == wide.values.tolist() and len(long) == 96
    keys = set(s.sql("select distinct metric from metrics")["metric"])
    assert keys <= set(skintrack.catalog()["key"])


def test_reingest_is_a_noop(trial):
    before = skintrack.open(trial).history()
    src = skintrack.sample.sample_study_dir()
    report = skintrack.ingest([src / "responses"], trial, manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    assert (report.added, report.skipped, report.sessions, report.subjects) == (0, 96, 0, 0)
    after = skintrack.open(trial).history()  # nothing changed, so no new version
    assert after["version"].tolist() == before["version"].tolist()


def test_same_content_under_two_names_is_one_analysis(tmp_path):
    src = FIXTURES / "real" / "community-2025-full.json"
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in" / "a.json")
    (tmp_path / "in" / "b.json.gz").write_bytes(gzip.compress(src.read_bytes()))
    report = skintrack.ingest([tmp_path / "in"], tmp_path / "study")
    assert (report.added, report.skipped) == (1, 1)
    assert skintrack.open(tmp_path / "study").sql("select count(*) n from analyses")["n"].tolist() == [1]


def test_increment_touches_only_new_files(tmp_path, sample):
    files = responses(sample / "responses")
    study = tmp_path / "s"
    first = skintrack.ingest(files[:80], study, chunk_size=20)
    assert first.added == 80
    second = skintrack.ingest(files, study, chunk_size=20)
    assert (second.added, second.skipped) == (16, 80)
    s = skintrack.open(study)
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [96]
    ingests = s.history().query("command == 'ingest'")["changed"].tolist()
    assert ingests == ["80 analyses added", "16 analyses added"]  # one version per ingest


def test_later_manifest_assigns_sessions_without_reingesting(tmp_path, sample):
    study = tmp_path / "s"
    skintrack.ingest([sample / "responses"], study)
    assert skintrack.open(study).sql("select count(subject_id) n from analyses")["n"].tolist() == [0]
    report = skintrack.ingest([sample / "responses"], study, manifest=sample / "manifest.csv")
    assert (report.added, report.sessions) == (0, 96)
    assert skintrack.open(study).sql("select count(subject_id) n from analyses")["n"].tolist() == [96]


def test_maps_are_decoded_into_the_study(tmp_path):
    skintrack.ingest([FIXTURES / "real" / "ailabtools-docs-case1" / "response-v1.7.json"], tmp_path)
    maps = skintrack.open(tmp_path).sql("select * from maps order by name")
    assert len(maps) == 10
    red = maps[maps.name == "red_area"].iloc[0]
    assert (red.media_type, (tmp_path / red.path).read_bytes()[:2]) == ("image/jpeg", b"\xff\xd8")
    from PIL import Image

    with Image.open(tmp_path / red.path) as im:
        assert im.size == (red.width, red.height)


BAD_INPUTS = {
    "truncated.json": lambda good: good[: len(good) // 2],
    "not-json.json": lambda good: b"<html>502 Bad Gateway</html>",
    "array.json": lambda good: b"[1, 2, 3]",
    "string.json": lambda good: b'"hello"',
    "no-result.json": lambda good: b'{"request_id": "x", "error_code": 0}',
    "string-number.json": lambda good: good.replace(b'"total_score": 75', b'"total_score": "75"'),
    "nan.json": lambda good: good.replace(b'"total_score": 75', b'"total_score": NaN'),
    "infinity.json": lambda good: good.replace(b'"water_score": 63', b'"water_score": Infinity'),
    "deep.json": lambda good: b'{"result": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}",
    "latin1.json": lambda good: good.replace(b'"log_id": "75751238"', b'"log_id": "caf\xe9"'),
    "bad.json.gz": lambda good: b"\x1f\x8b not really gzip",
    "bom.json": lambda good: b"\xef\xbb\xbf" + good,  # saved by an editor or PowerShell
    "utf16.json": lambda good: good.decode().encode("utf-16"),
    "utf16le.json": lambda good: good.decode().encode("utf-16-le"),
}


def test_bad_input_is_rejected_and_the_rest_ingested(tmp_path, run_cli):
    good = (FIXTURES / "real" / "community-2025-full.json").read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    for name, make in BAD_INPUTS.items():
        (folder / name).write_bytes(make(good))
    shutil.copy(FIXTURES / "real" / "community-2025-full.json", folder / "good.json")
    (tmp_path / "m.csv").write_text("file,subject_id,visit\ngood.json,S1,D0\ngood.json,S1,W4\nghost.json,S2,D0\n"
                                    "array.json,S3,D0\n")
    proc = run_cli("ingest", folder, "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv", "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    s = skintrack.open(tmp_path / "s")
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [1]
    rejects = dict(s.sql("select source, reason from rejects").values.tolist())
    reasons = {Path(k).name if "m.csv" not in k else k.split("/")[-1]: v for k, v in rejects.items()}
    expected = {"truncated.json": "not valid JSON", "not-json.json": "not valid JSON",
                "array.json": "top-level JSON value is list", "string.json": "top-level JSON value is str",
                "no-result.json": "no `result`", "string-number.json": "total_score: expected a number",
                "nan.json": "not valid JSON", "infinity.json": "not valid JSON", "deep.json": "not valid JSON",
                "latin1.json": "not valid JSON", "bad.json.gz": "not a readable gzip file",
                "bom.json": "not valid JSON (the file starts with a UTF-8 byte order mark; the API sends UTF-8 "
                            "without one: save the response as it came)",
                "utf16.json": "the file starts with a UTF-16 byte order mark",
                "utf16le.json": "the file is UTF-16 or UTF-32 text; the API sends UTF-8",
                "m.csv:2": "listed more than once", "m.csv:3": "listed more than once",
                "m.csv:4": "ghost.json does not exist"}
    for name, fragment in expected.items():
        assert fragment in reasons.get(name, ""), (name, reasons.get(name))
        assert fragment in proc.stderr
    assert len(reasons) == len(expected), set(reasons) - set(expected)


def test_usage_errors_exit_2(tmp_path, run_cli):
    assert run_cli("ingest", "x.json").returncode == 2  # no --study
    (tmp_path / "m.csv").write_text("name,subject_id\nx,1\n")
    proc = run_cli("ingest", FIXTURES / "real" / "community-2025-full.json", "--study", tmp_path / "s",
                   "--manifest", tmp_path / "m.csv")
    assert proc.returncode == 2 and "required column `file` is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def _jittered_corpus(folder: Path, n: int):
    base = load("real/community-2025-full.json")
    folder.mkdir()
    for i in range(n):
        base["request_id"] = f"crash-{i}"
        (folder / f"r{i:04d}.json").write_bytes(orjson.dumps(base))


def _commits(study: Path) -> int:
    """Ingest commits so far, read straight from the catalog (SQLite) while a writer is running."""
    if not (study / "lake.sqlite").exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{study / 'lake.sqlite'}?mode=ro", uri=True, timeout=5)) as db:
        try:
            return db.execute("SELECT count(*) FROM ducklake_snapshot_changes WHERE commit_message = 'ingest'").fetchone()[0]
        except sqlite3.OperationalError:  # the catalog is still being created
            return 0


def _check_whole(study: Path):
    s = skintrack.open(study)
    n = s.sql("select count(*) n from analyses")["n"].iloc[0]
    per = s.sql("select count(distinct analysis_id) n from scores")["n"].iloc[0]
    orphans = s.sql("select count(*) n from scores where analysis_id not in (select analysis_id from analyses)")
    assert per == n and orphans["n"].iloc[0] == 0
    complete = s.sql("select count(*) n from (select analysis_id from counts group by 1 having count(*) = 32)")
    assert complete["n"].iloc[0] == n
    return n


def test_sigkill_at_any_moment_leaves_whole_analyses_and_rerun_completes(tmp_path):
    corpus, study = tmp_path / "corpus", tmp_path / "study"
    _jittered_corpus(corpus, 600)
    exe = Path(sys.executable).with_name("skintrack")

    def cmd(target):
        return [str(exe), "ingest", str(corpus), "--study", str(target), "--batch-size", "10", "--commit-every", "10",
                "--quiet"]


    seen = []
    for published in (5, 10, 15, 20):  # of 60 commits in all: kill as soon as this run has made that many
        proc = subprocess.Popen(cmd(study), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, start = time.monotonic() + 120, _commits(study)
        while time.monotonic() < deadline and proc.poll() is None:
            if _commits(study) - start >= published:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(_check_whole(study))
    assert seen == sorted(seen) and 0 < seen[-1] < 600, seen  # killed mid-way, never going backwards
    assert subprocess.run(cmd(study)).returncode == 0
    assert _check_whole(study) == 600


def test_workers_give_the_same_tables(tmp_path, sample):
    one = skintrack.ingest([sample / "responses"], tmp_path / "one", chunk_size=10)
    two = skintrack.ingest([sample / "responses"], tmp_path / "two", chunk_size=10, workers=2)
    assert one.added == two.added == 96
    q = "select metric, round(sum(value), 6) from metrics group by 1 order by 1"
    assert skintrack.open(tmp_path / "one").sql(q).values.tolist() == skintrack.open(tmp_path / "two").sql(q).values.tolist()


def test_a_bad_response_rejects_only_its_file_and_odd_points_are_kept(tmp_path):
    (tmp_path / "in").mkdir()
    doc = load("real/community-2025-full.json")
    doc["result"]["brown_spot"]["polygon"][2][1]["x"] = "12"  # kept whole in extras, never coerced or lost
    (tmp_path / "in" / "odd.json").write_bytes(orjson.dumps(doc))
    huge = load("real/community-2025-full.json")
    huge["error_detail"]["status_code"] = 2 ** 64 - 1  # once crashed the whole ingest, on every re-run
    (tmp_path / "in" / "huge.json").write_bytes(orjson.dumps(huge))
    point = load("real/community-2025-full.json")
    point["result"]["acne"]["polygon"][0][0] = 5  # a point that is not an object
    (tmp_path / "in" / "point.json").write_bytes(orjson.dumps(point))
    shutil.copy(FIXTURES / "real" / "community-2023-full.json", tmp_path / "in" / "good.json")
    report = skintrack.ingest([tmp_path / "in"], tmp_path / "s")
    assert report.added == 3 and [Path(s).name for s, _ in report.rejected] == ["huge.json"]
    assert "error_detail.status_code: 18446744073709551615 does not fit a 64-bit whole number" in report.rejected[0][1]
    s = skintrack.open(tmp_path / "s")
    kept = s.sql("select path, value from extras where path in ('result.brown_spot.polygon.2', 'result.acne.polygon.0')"
                 " order by path")
    assert kept["path"].tolist() == ["result.acne.polygon.0", "result.brown_spot.polygon.2"]
    assert orjson.loads(kept["value"][1])[1] == {"x": "12", "y": doc["result"]["brown_spot"]["polygon"][2][1]["y"]}
    assert s.sql("select count(*) n from detections where polygon is null")["n"].tolist() == [2]


def _set(path: str, value):
    """Set `value` at a dotted JSON path of a response (numbers index lists)."""
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


@pytest.mark.parametrize("workers", [1, 2])
def test_a_response_refused_after_reading_leaves_no_row_and_no_file(tmp_path, workers):
    """A point's whole number beyond a double's exact range (2**53 + 1) passes the flattener's checks and the
    Arrow column refuses it; a face map that is not base64 comes after nine good ones. Each such response is
    rejected alone, naming the table or the map, with none of its face maps written; every other response of
    the chunk is ingested whole, its polygons, outlines, wrinkle lines and maps as when ingested alone."""
    (tmp_path / "in").mkdir()
    case = "real/ailabtools-docs-case1/response-v1.7.json"
    planted = {"polygon.json": ("detections: a value does not fit its column (ArrowInvalid: ",
                                _set("result.acne.polygon.0.0.y", 2 ** 53 + 1)),
               "outline.json": ("outlines: a value does not fit its column (ArrowInvalid: ",
                                _set("result.wrinkle_mark.glabella_wrinkle_outline.3.y", 2 ** 53 + 1)),
               "wrinkle.json": ("outlines: a value does not fit its column (ArrowInvalid: ", _set(
                   "result.forehead_wrinkle_info.forehead_wrinkle_list.0.wrinkle_coord.1.x", 2 ** 53 + 1)),
               "map.json": ("face map water_area: not valid base64", _set("result.face_maps.water_area", "%%%"))}
    for name, (_, mutate) in planted.items():
        doc = load(case)
        mutate(doc)
        (tmp_path / "in" / name).write_bytes(orjson.dumps(doc))
    for name in ("community-2025-full.json", "community-2023-full.json"):
        shutil.copy(FIXTURES / "real" / name, tmp_path / "in" / name)
    shutil.copy(FIXTURES / case, tmp_path / "in" / "case1.json")
    report = skintrack.ingest([tmp_path / "in"], tmp_path / "s", workers=workers, chunk_size=7)
    assert report.added == 3 and sorted(Path(src).name for src, _ in report.rejected) == sorted(planted)
    for src, reason in report.rejected:
        assert reason.startswith(planted[Path(src).name][0]), reason
    assert skintrack.ingest([FIXTURES / case], tmp_path / "alone").added == 1
    s, one = skintrack.open(tmp_path / "s"), skintrack.open(tmp_path / "alone")
    for table in ("detections", "outlines", "maps"):
        q = f"SELECT * FROM {table} WHERE analysis_id = (SELECT analysis_id FROM sources " \
            "WHERE source LIKE '%case1.json' OR source LIKE '%response-v1.7.json')"
        assert s.sql(q).equals(one.sql(q)), table  # the same rows in the same order
    assert sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s" / "maps").rglob("*.*")) == \
        sorted(s.sql("SELECT path FROM maps")["path"])  # no file of a refused response


def test_workers_write_maps_after_the_parent_has(tmp_path):
    src = (FIXTURES / "real" / "ailabtools-docs-case1" / "response-v1.7.json").read_bytes()
    (tmp_path / "in").mkdir()
    for i in range(4):  # distinct bytes, same content: four analyses with ten maps each
        (tmp_path / "in" / f"r{i}.json").write_bytes(src + b" " * i)
    skintrack.ingest([tmp_path / "in" / "r0.json"], tmp_path / "s")  # the parent's map threads start here
    report = skintrack.ingest([tmp_path / "in"], tmp_path / "s", workers=2, chunk_size=1)
    assert (report.added, report.skipped) == (3, 1)
    maps = skintrack.open(tmp_path / "s").sql("select path from maps")["path"]
    assert len(maps) == 40 and all((tmp_path / "s" / p).stat().st_size > 1000 for p in maps)


def test_an_open_study_sees_later_ingests(tmp_path, sample):
    files = responses(sample / "responses")
    s = skintrack.open(tmp_path / "s", create=True)  # opened before anything exists
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [0]
    skintrack.ingest(files[:8], tmp_path / "s", manifest=sample / "manifest.csv")
    assert len(s.timeline("score.water")) == 8
    skintrack.ingest(files[8:16], tmp_path / "s", manifest=sample / "manifest.csv")
    assert s.sql("select count(*) n from sessions")["n"].tolist() == [16]
    assert len(s.timeline("score.water")) == 15  # S03 W8 is QC-flagged (head turned 36 deg): the default plan leaves it out


def test_an_empty_cell_in_a_free_manifest_column_is_no_value(tmp_path, sample):
    text = (sample / "manifest.csv").read_text().splitlines()
    rows = [text[0] + ",note"] + [line + ("," if i % 2 else ",seen twice") for i, line in enumerate(text[1:])]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    report = skintrack.ingest([sample / "responses"], tmp_path / "s", manifest=tmp_path / "m.csv")
    assert report.ok and report.sessions == 96  # once failed: pandas gives NaN for an empty cell, Arrow wants text
    notes = skintrack.open(tmp_path / "s").sql("SELECT coalesce(note, 'NULL') AS note, count(*) n FROM sessions "
                                               "GROUP BY 1 ORDER BY 1")
    assert notes.values.tolist() == [["NULL", 48], ["seen twice", 48]]
