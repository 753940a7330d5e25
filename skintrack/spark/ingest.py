"""Distributed ingest: Spark flattens a raw archive with the package's own flattener, and the study
commits the Parquet files it wrote, as one version.

Each Spark task takes a slice of the file paths (`mapInArrow`), reads and flattens them exactly as a
local ingest does (`tables.ingest.read_chunk`: the same checks, the same rejects, face maps written to
the study), writes one Parquet file per table into the study's data folder, and returns only what it
wrote and what it saw. The driver then commits those files to the lake in one transaction
(`ducklake_add_data_files`), with the sessions and subjects of the manifest, as `skintrack ingest`
would. Files already ingested are skipped before Spark sees them; a response already held is left out.

Example
-------
>>> from skintrack.spark.ingest import RESULT
>>> RESULT.names[:3]
['kind', 'table', 'path']
"""
from __future__ import annotations

import time
import urllib.parse
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

from ..tables import keys, store, versions
from ..tables.ingest import IngestReport, add_metadata, Part, expand, read_chunk, split_seen
from ..tables.manifest import Manifest, read_subjects

RESULT = pa.schema([("kind", pa.string()), ("table", pa.string()), ("path", pa.string()), ("rows", pa.int64()),
                    ("items", pa.string()), ("batch", pa.string())])
SPARK_RESULT = ", ".join(f"`{f.name}` {'bigint' if f.type == pa.int64() else 'string'}" for f in RESULT)
FILES_PER_TASK = 500
# A large ingest splits each task's rows of these tables by the column every metric query filters on: one
# file per value (in `<table>/<column>=<value>/` folders), so a query of one metric reads only its files
# (DuckLake and Spark skip the others by their statistics).
PARTITION_BY = {"scores": "metric", "counts": "feature", "areas": "feature", "severities": "feature"}
PARTITION_FROM = 20_000  # responses in one ingest


def _files(table: str, rows: pa.Table, folder: Path, name: str, partitioned: bool):
    """(path, rows) of the files one task writes for one table."""
    key = PARTITION_BY.get(table) if partitioned else None
    if key is None or rows[key].null_count:  # (the flattener always sets these keys)
        return [(folder / name, rows)]
    return [(folder / f"{key}={urllib.parse.quote(value, safe='')}" / name, rows.filter(pa.compute.equal(rows[key], value)))
            for value in rows[key].unique().to_pylist()]


def _task(study: str, data: str, partitioned: bool):
    """The function each Spark task runs over its batches of paths (see the module docstring)."""

    def run(batches):
        for batch in batches:
            paths = batch.column("path").to_pylist()
            if not paths:
                continue
            res, batch_id = read_chunk(study, paths), uuid.uuid4().hex
            out = []
            for table, rows in res["tables"].items():
                if not rows.num_rows:
                    continue
                for path, part in _files(table, rows, Path(data) / "main" / table, f"spark-{batch_id}.parquet",
                                         partitioned):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pq.write_table(part, path, compression="zstd")
                    out.append(("file", table, str(path), part.num_rows, None, batch_id))
            for kind in ("accepted", "duplicates", "rejects"):
                out.append((kind, None, None, len(res[kind]), orjson.dumps(res[kind]).decode(), batch_id))
            yield pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(zip(*out), RESULT)], schema=RESULT)

    return run


def ingest(spark, sources, study, manifest=None, subjects=None, partitioned: bool | None = None) -> IngestReport:
    """Ingest response files (files, folders, globs, the study's raw/ archive) into `study` with Spark.

    The study's folder must be reachable by every executor (local disk in local mode; shared storage on
    a cluster). `partitioned` splits the metric tables' files by metric or feature (`PARTITION_BY`); by
    default, when the ingest holds `PARTITION_FROM` responses or more. Returns the same report as a local
    ingest.
    """
    t0 = time.perf_counter()
    study = Path(study).resolve()
    man = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest) if manifest else None
    subj = read_subjects(subjects) if subjects else None
    files, unreadable = expand(sources)
    report = IngestReport()
    with store.locked(study):
        con = store.connect(study, write=True)
        inputs, todo = split_seen(con, files, man is not None)
        report.skipped = len(inputs)
        written, split = [], False
        if todo:
            tasks = max(1, -(-len(todo) // FILES_PER_TASK))
            paths = spark.createDataFrame([(p,) for p in todo], "path string").repartition(tasks)
            data = store.catalog_of(study)[1]
            split = len(todo) >= PARTITION_FROM if partitioned is None else partitioned
            written = paths.mapInArrow(_task(str(study), data, split), SPARK_RESULT).toArrow().to_pylist()
        if written and split:  # the lake keeps the layout too: compaction merges within a value only
            with store.transaction(con, "partition", {"tables": ", ".join(PARTITION_BY)}):
                for table, key in PARTITION_BY.items():
                    con.execute(f"ALTER TABLE {store.LAKE}.main.{table} SET PARTITIONED BY ({key})")
        part = Part(con, report)
        try:
            _commit(con, part, written, inputs, report)
            add_metadata(con, man, subj, None, inputs, report, unreadable, part)
            part.commit(last=True)
        except BaseException:
            store.rollback(con)
            raise
        versions.compact_if_needed(con, study)
        con.close()
    report.seconds = time.perf_counter() - t0
    return report


def _commit(con, part: Part, written: list[dict], inputs: list, report: IngestReport) -> None:
    """Register the tasks' files in the open transaction. Each analysis is kept once: rows of one the
    study already held, or that an earlier task (in a fixed order) also read, are filtered out first."""
    written = sorted(written, key=lambda r: r["batch"])
    items = {k: [(r["batch"], *x) for r in written if r["kind"] == k for x in orjson.loads(r["items"])]
             for k in ("accepted", "duplicates", "rejects")}
    held = store.held(con, [aid for _, _, aid, _ in items["accepted"]])
    owner, accepted, duplicates = {}, [], [tuple(x[1:]) for x in items["duplicates"]]
    for batch, source, aid, photo in items["accepted"]:
        if aid in held or aid in owner:
            duplicates.append((source, aid, photo))
        else:
            owner[aid] = batch
            accepted.append((source, aid, photo))
    for r in (r for r in written if r["kind"] == "file"):
        if r["table"] not in ("sources", "rejects"):
            rows = pq.read_table(r["path"])
            ids = rows["analysis_id"].to_pylist()
            keep = [owner.get(aid) == r["batch"] for aid in ids]
            if not all(keep):
                pq.write_table(rows.filter(pa.array(keep)), r["path"], compression="zstd")
        hive = Path(r["path"]).parent.name.startswith(f"{PARTITION_BY.get(r['table'])}=")
        con.execute(f"CALL ducklake_add_data_files('{store.LAKE}', ?, ?, hive_partitioning => ?)",
                    [r["table"], r["path"], hive])
    keys.note(con, pa.table({keys.KEY: pa.array([keys.key_of(aid) for _, aid, _ in accepted], pa.int64())}))
    report.added, report.rejected = len(accepted), [tuple(x[1:]) for x in items["rejects"]]
    report.skipped += len(duplicates)
    part.info["analyses added"] = len(accepted)
    inputs.extend(accepted + duplicates)
