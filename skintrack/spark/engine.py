"""The study's queries on Apache Spark: the same SQL the helpers run on DuckDB, translated by sqlglot.

Every helper builds its query once, in DuckDB's dialect, and runs it through `Study.sql`. On a Study
bound to a Spark session (`Study.on(spark)`, `skintrack.open(DIR, engine=spark)`) that query is
translated to Spark SQL and run there, over the study's tables at the Study's version: the Parquet data
files the lake lists for that version (tables that carry deleted rows are read through DuckDB first).

sqlglot does most of the translation. Three things it gets wrong are fixed here, each found by the
tests that compare both engines: `quantile_cont(x, q)` became `PERCENTILE_CONT(x, q)`, which Spark reads
as a different function (it is `percentile(x, q)`, the same linear interpolation); `list_position` has
no Spark name (it is `array_position`, which gives 0, not NULL, for a missing element); and `SELECT *
EXCLUDE (...)` must be spelled out column by column, which sqlglot's optimizer does given the schema.

Example
-------
>>> to_spark("SELECT quantile_cont(value, 0.25) AS q1 FROM scores", {"scores": {"value": "DOUBLE"}})
'SELECT PERCENTILE(scores.value, 0.25) AS q1 FROM scores AS scores'
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify

from ..errors import UsageError
from ..tables import store


def _fix(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Quantile):  # quantile_cont(x, q): the exact percentile with interpolation
        return exp.Anonymous(this="PERCENTILE", expressions=[node.this, node.args["quantile"]])
    if isinstance(node, exp.PercentileCont) and not isinstance(node.parent, exp.WithinGroup):
        return exp.Anonymous(this="PERCENTILE", expressions=[node.this, node.expression])
    if isinstance(node, exp.ArrayPosition) or (isinstance(node, exp.Anonymous) and
                                               node.name.lower() == "list_position"):
        args = [node.this, node.expression] if isinstance(node, exp.ArrayPosition) else node.expressions
        position = exp.Anonymous(this="ARRAY_POSITION", expressions=args)
        return exp.Nullif(this=position, expression=exp.Literal.number(0))
    return node


def to_spark(sql: str, schema: dict, prefix: str = "") -> str:
    """DuckDB SQL to Spark SQL; `schema` ({table: {column: type}}) lets stars be spelled out, and the
    study's tables are renamed `prefix` + name (each Study's own temporary views in a shared session)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = qualify(tree, schema=schema, dialect="duckdb", validate_qualify_columns=False, quote_identifiers=False,
                   identify=False)
    ctes = {c.alias for c in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if prefix and table.name in schema and table.name not in ctes:
            table.set("this", exp.to_identifier(prefix + table.name))
    return tree.transform(_fix).sql(dialect="spark")


class SparkEngine:
    """Runs a Study's queries on a Spark session, over the study's tables at `version`."""

    TABLES = ("analyses_raw", "scores", "counts", "areas", "severities", "tones", "wrinkles", "detections",
              "outlines", "side_results", "boxes", "maps", "extras", "sources", "sessions", "subjects",
              "session_index", "instrument", "measures")

    def __init__(self, spark, con, version, folder):
        self.spark = spark
        self.prefix = f"st{uuid.uuid4().hex[:8]}_"
        self.cache = Path(folder) / ".spark" / f"v{version}"
        self.schema = {}
        for view in self.TABLES:
            table = "analyses" if view == "analyses_raw" else view
            self.schema[view] = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall())
            self._register(con, view, table, version)
        for view in ("analyses", "metrics"):  # views over views: their DuckDB definitions, translated
            sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ? AND NOT internal",
                              [view]).fetchall()[0][0]
            body = sqlglot.parse_one(sql, read="duckdb").expression
            spark.sql(f"CREATE OR REPLACE TEMP VIEW {self.prefix}{view} AS "
                      f"{to_spark(body.sql('duckdb'), self.schema, self.prefix)}")
            self.schema[view] = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall())

    def _register(self, con, view: str, table: str, version) -> None:
        """A response table: its Parquet files at `version`. The rest (sessions, subjects, the session index:
        small, and rewritten in place), a table with rows deleted at `version` (an upgrade's update: its files
        still hold the rows it replaced), and an empty table: one Parquet file written by DuckDB per version,
        in the study's `.spark/` folder, kept for reuse."""
        files = []
        if version is not None and table not in store.BASE:
            listed = con.execute(f"SELECT data_file, delete_file FROM ducklake_list_files('{store.LAKE}', ?, "
                                 f"snapshot_version => {int(version)})", [table]).fetchall()
            if all(deleted is None for _, deleted in listed):  # rows deleted (an update): read through DuckDB
                files = [f for f, _ in listed]
        if not files:
            path = self.cache / f"{view}.parquet"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                con.execute(f"COPY (SELECT * FROM {view}) TO '{tmp}' (FORMAT parquet)")
                tmp.rename(path)
            files = [str(path)]
        # mergeSchema: files written before a column was added read it as NULL
        self.spark.read.option("mergeSchema", "true").parquet(*files).createOrReplaceTempView(self.prefix + view)

    def sql(self, query: str, params=None) -> pd.DataFrame:
        """Run a DuckDB-dialect query (with `$name` or `?` parameters) on Spark; a pandas DataFrame back."""
        args = {k: _arg(v) for k, v in params.items()} if isinstance(params, dict) else [_arg(v) for v in params or []]
        return self.spark.sql(to_spark(query, self.schema, self.prefix), args=args).toArrow().to_pandas()


def _arg(value):
    if isinstance(value, (list, tuple)):
        from pyspark.sql import functions as F

        return F.array(*[F.lit(v) for v in value])
    return value


def local_session(master: str = "local[2]", memory: str = "2g"):
    """A SparkSession on this machine, set up as skintrack needs it (UTC, Arrow transfers, this Python in the
    workers, no web UI): what `skintrack ingest --engine spark` and the tests use (tests/test_spark.py), as
    in ``skintrack.open("trial", engine=local_session("local[4]"))``."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName("skintrack")
    for key, value in {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                       "spark.sql.session.timeZone": "UTC", "spark.sql.execution.arrow.pyspark.enabled": "true",
                       "spark.driver.memory": memory, "spark.pyspark.python": sys.executable}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # noqa: BLE001 - Java missing, a bad master URL: one line, not a Java trace
        raise UsageError(f"cannot start Spark with master {master!r} (is Java 17 installed, is the URL right?): "
                         f"{str(e).strip().splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark
