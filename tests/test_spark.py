"""The same helpers and the same ingest on Apache Spark (local[2], Java 17 from Debian's packages) as on
DuckDB: identical tables from both ingests of a SIMULATED 4,000-analysis study, identical helper results."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import debian_install

import skintrack
from skintrack.sample import sample_study_dir
from skintrack.spark.engine import to_spark

# PySpark's gateway (py4j) leaves its local sockets to the garbage collector; that is not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")]
N_SUBJECTS, VISITS = 1000, ("D0", "W4", "W8", "W12")  # 4,000 analyses (benchmarks/scale.py goes to 1M)


def _ensure_java() -> None:
    if shutil.which("java") is None:
        debian_install("openjdk-17-jre-headless")
    assert shutil.which("java"), "Java 17 is needed for the Spark tests: apt-get install openjdk-17-jre-headless"


@pytest.fixture(scope="session")
def spark():
    _ensure_java()
    from skintrack.spark.engine import local_session

    session = local_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def big_corpus(tmp_path_factory):
    """SIMULATED: 1,000 subjects x 4 visits, each response a sample trial response of the same visit with
    its scores shifted at random (a fixed seed), a manifest and a subjects CSV with two arms."""
    folder, sample = tmp_path_factory.mktemp("big"), sample_study_dir()
    (folder / "responses").mkdir()
    rng = np.random.default_rng(7)
    base = {v: [orjson.loads((sample / "responses" / f"S{s:02d}_{v}.json").read_bytes()) for s in range(1, 25)]
            for v in VISITS}
    rows = []
    for i in range(N_SUBJECTS):
        for j, visit in enumerate(VISITS):
            doc = base[visit][i % 24]
            scores = doc["result"]["score_info"]
            shifted = dict(scores, water_score=int(np.clip(scores["water_score"] + rng.integers(-8, 9), 0, 100)))
            name = f"P{i:05d}_{visit}.json"
            (folder / "responses" / name).write_bytes(orjson.dumps(
                dict(doc, request_id=f"big-{i}-{visit}", result=dict(doc["result"], score_info=shifted))))
            rows.append((f"responses/{name}", f"P{i:05d}", visit, None, ""))  # taken_at: set below
    manifest = pd.DataFrame(rows, columns=["file", "subject_id", "visit", "taken_at", "note"])
    manifest["taken_at"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(
        [28 * VISITS.index(v) + int(rng.integers(0, 5)) for v in manifest["visit"]], unit="D")).strftime("%Y-%m-%d")
    manifest.to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"subject_id": [f"P{i:05d}" for i in range(N_SUBJECTS)],
                  "arm": np.where(np.arange(N_SUBJECTS) % 2, "active", "placebo")}).to_csv(folder / "subjects.csv",
                                                                                             index=False)
    return folder


@pytest.fixture(scope="session")
def both(big_corpus, spark, tmp_path_factory):
    """The big corpus ingested locally and by Spark (partitioned, as an ingest of 20,000 or more is), into two
    studies."""
    from skintrack.spark.ingest import ingest as spark_ingest

    local, distributed = tmp_path_factory.mktemp("local") / "s", tmp_path_factory.mktemp("spark") / "s"
    args = dict(manifest=big_corpus / "manifest.csv", subjects=big_corpus / "subjects.csv")
    a = skintrack.ingest([big_corpus / "responses"], local, **args)
    b = spark_ingest(spark, [big_corpus / "responses"], distributed, partitioned=True, **args)
    assert (a.added, b.added, a.sessions, b.sessions) == (4000, 4000, 4000, 4000) and a.ok and b.ok
    assert skintrack.open(local).keyed and skintrack.open(distributed).keyed  # the executors wrote the keys
    return local, distributed


def _rows(study: Path, table: str) -> pd.DataFrame:
    s = skintrack.open(study)
    cols = [c for c in s.sql(f"SELECT * FROM {table} LIMIT 0").columns if c not in ("ingested_at", "assigned_at", "at")]
    return s.sql(f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM {table} ORDER BY ALL")


@pytest.mark.parametrize("table", ["analyses_raw", "scores", "counts", "areas", "severities", "tones", "wrinkles",
                                   "detections", "outlines", "side_results", "boxes", "maps", "extras", "sources",
                                   "sessions", "subjects", "session_index", "metrics"])
def test_spark_and_local_ingest_give_identical_tables(both, table):
    local, distributed = both
    a, b = _rows(local, table), _rows(distributed, table)
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a, b)


def test_a_second_spark_ingest_skips_what_is_held(both, big_corpus, spark):
    from skintrack.spark.ingest import ingest as spark_ingest

    again = spark_ingest(spark, [big_corpus / "responses"], both[1])
    assert (again.added, again.skipped) == (0, 4000)


def test_spark_ingest_keeps_rejects_and_skips_a_copy_of_a_held_response(spark, tmp_path, sample):
    from skintrack.spark.ingest import ingest as spark_ingest

    (tmp_path / "in").mkdir()
    shutil.copy(sample / "responses" / "S01_D0.json", tmp_path / "in" / "a.json")
    shutil.copy(sample / "responses" / "S01_D0.json", tmp_path / "in" / "copy.json")
    (tmp_path / "in" / "bad.json").write_text("{not json")
    report = spark_ingest(spark, [tmp_path / "in"], tmp_path / "s")
    assert (report.added, report.skipped) == (1, 1)
    assert [Path(s).name for s, _ in report.rejected] == ["bad.json"] and "not valid JSON" in report.rejected[0][1]
    s = skintrack.open(tmp_path / "s")
    assert s.sql("SELECT count(*) n FROM scores")["n"].tolist() == [18]  # one analysis, held once
    assert s.sql("SELECT source FROM rejects")["source"].str.endswith("bad.json").tolist() == [True]


HELPERS = {
    "timeline": lambda s: s.timeline("score.water"),
    "change_from_baseline": lambda s: s.change_from_baseline("score.water"),
    "change_from_baseline (QC excluded)": lambda s: s.change_from_baseline("score.water", exclude_flagged=True),
    "slopes": lambda s: s.slopes("score.water"),
    "cohort": lambda s: s.cohort("score.water"),
    "cohort of a count": lambda s: s.cohort("count.blackhead.nose"),
    "responders": lambda s: s.responders("score.water", 5),
}


@pytest.fixture(scope="session")
def demo_on_both(spark):
    from skintrack.demo import demo_study

    duck = demo_study()
    return duck, duck.on(spark)


@pytest.mark.parametrize("helper", HELPERS)
def test_each_helper_gives_the_same_result_on_spark(demo_on_both, helper):
    duck, spark = demo_on_both
    a, b = HELPERS[helper](duck), HELPERS[helper](spark)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, rtol=1e-9)
    assert a.attrs == b.attrs


@pytest.mark.parametrize("helper", ["timeline", "change_from_baseline", "slopes", "cohort"])
def test_helpers_agree_on_the_4000_analysis_study(both, spark, helper):
    duck = skintrack.open(both[0])
    a, b = HELPERS[helper](duck), HELPERS[helper](skintrack.open(both[0], engine=spark))
    assert len(a) >= 8  # the cohort: 4 visits x 2 arms; the others: a row per subject or more
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, rtol=1e-9)


def test_the_adam_export_is_the_same_on_spark(demo_on_both, tmp_path):
    duck, spark = demo_on_both
    some = ["score.water", "score.total", "measure.corneometer"]  # the same code path for each parameter
    skintrack.export(duck, tmp_path / "duck", ["csv"], metrics=some)
    skintrack.export(spark, tmp_path / "spark", ["csv"], metrics=some)
    for name in ("adsl.csv", "adskin.csv", "define.csv"):
        assert (tmp_path / "duck" / name).read_bytes() == (tmp_path / "spark" / name).read_bytes(), name


def test_sqlglot_alone_gets_percentiles_wrong_and_the_fix_matches_duckdb(spark, demo_on_both):
    """sqlglot turns DuckDB's quantile_cont(x, q) into PERCENTILE_CONT(x, q), which Spark does not read as
    the interpolated quantile; skintrack writes Spark's percentile(x, q) instead."""
    import sqlglot

    duck, _ = demo_on_both
    query = "SELECT quantile_cont(value, 0.25) AS q1, median(value) AS m FROM scores WHERE metric = 'water'"
    expected = duck.sql(query)
    spark.createDataFrame(duck.con.sql("SELECT * FROM scores").to_arrow_table()).createOrReplaceTempView("scores")
    plain = sqlglot.transpile(query, read="duckdb", write="spark")[0]
    try:
        wrong = spark.sql(plain).toArrow().to_pandas()
        assert not np.allclose(wrong.values.astype(float), expected.values.astype(float))
    except Exception as e:  # noqa: BLE001 - or Spark refuses it outright
        assert "PERCENTILE_CONT" in str(e).upper() or "WITHIN GROUP" in str(e).upper()
    ours = spark.sql(to_spark(query, {"scores": {"analysis_id": "VARCHAR", "metric": "VARCHAR", "value": "DOUBLE"}}))
    np.testing.assert_allclose(ours.toArrow().to_pandas().values.astype(float), expected.values.astype(float), rtol=1e-12)


def test_cli_ingest_on_spark(tmp_path, sample, run_cli):
    _ensure_java()
    proc = run_cli("ingest", sample / "responses", "--study", tmp_path / "s", "--engine", "spark",
                   "--manifest", sample / "manifest.csv", "--subjects", sample / "subjects.csv", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 96 new analyses" in proc.stdout
    assert skintrack.open(tmp_path / "s").cohort("score.water", exclude_flagged=False)["n"].sum() == 96  # every capture


def test_a_bad_spark_master_is_one_line(tmp_path, sample, run_cli):
    proc = run_cli("ingest", sample / "responses", "--study", tmp_path / "s", "--engine", "spark",
                   "--spark-master", "'local[2]'", timeout=300)
    assert proc.returncode == 2 and "cannot start Spark with master \"'local[2]'\"" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_large_spark_ingest_writes_one_file_per_metric_per_task(both):
    """A partitioned ingest (the default from 20,000 responses; asked for here): each scores file holds one metric, in a metric=... folder,
    and the automatic compaction after it kept that layout (the lake's table is partitioned too)."""
    import pyarrow.parquet as pq

    s = skintrack.open(both[1])
    files = [Path(f) for f, in s.con.execute("SELECT data_file FROM ducklake_list_files('lake', 'scores', "
                                             "snapshot_version => ?)", [s.version]).fetchall()]
    assert files and all(f.parent.name.startswith("metric=") for f in files)  # compaction kept the layout
    for f in files[:20]:
        assert pq.read_table(f, columns=["metric"])["metric"].unique().to_pylist() == [f.parent.name[len("metric="):]]
    assert {f.parent.name for f in files} >= {"metric=water", "metric=total"}
    assert s.sql("SELECT count(*) n FROM scores WHERE metric = 'water'")["n"].tolist() == [4000]
    assert "partition" in set(s.history()["command"])
