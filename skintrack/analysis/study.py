"""`skintrack.open(DIR)`: a study folder as DuckDB views, with query helpers.

Example
-------
>>> import tempfile
>>> s = open(tempfile.mkdtemp())
>>> s.sql("select count(*) as n from analyses")["n"].tolist()
[0]
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.ipc  # noqa: F401 - pa.ipc

from .. import kept
from ..errors import UsageError
from ..show import display  # helpers label their frames for Jupyter (like the plot accessor: DEVELOPERS.md)
from ..tables import keys, measures, store, versions
from ..tables.catalog import declare_measures, measures_owner, metric_list
from ..tables.plan import FILE as PLAN_FILE
from ..tables.plan import Plan
from . import agreement as agreement_, claims as claims_, instrument, qc, raters as raters_, selection, trends, trial
from .endpoints import shift_table
from .mmrm import MMRMResult
from .repeatability import repeatability as measure_repeatability
from .selection import RECORDS_END, RECORDS_START

CACHED_ROWS, CACHED_QUERIES = 200_000, 512  # results kept per version: small ones, and not too many
KEPT_RECORDS = 16  # records tables kept per version (a metric under one set of rules each)
KEEP_RECORDS_LAKE_BYTES = store.ONE_THREAD_BYTES  # a study this large keeps its records in the user's cache
RECORDS_FILE = "records.arrow"
_RECORD_TABLES = itertools.count()  # their names, unique in the process


def _frozen(value):
    """`value` (a query and its parameters) as a hashable key; `TypeError` when it holds anything but plain
    values, lists, tuples and dicts (then the result is not kept)."""
    if isinstance(value, (list, tuple)):
        return type(value).__name__, tuple(map(_frozen, value))
    if isinstance(value, dict):
        return "dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} is not kept as a key")


def _drop(con, name: str) -> None:
    """Drop a temporary table of records, or the Arrow table of kept ones (a failed connection may have lost it)."""
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)
    with contextlib.suppress(duckdb.Error):
        con.execute(f"DROP TABLE IF EXISTS {name}")


def _named(params: dict, sql: str) -> dict:
    """The parameters `sql` names (`$name`): builders pass every one their rules might use."""
    return {k: v for k, v in params.items() if re.search(rf"\${re.escape(k)}\b", sql)}


class Study:
    """A study folder opened for reading: `con` has one view per table plus `metrics` and `metrics_wide`,
    all at one version of the study (`version`).

    Opened without a version, each query sees the newest version (the views move on when a write has
    committed since); opened at `version=N`, the study stays at N, as it was then, plan included.
    """

    def __init__(self, path, create: bool = False, version: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise UsageError(f"{self.path}: no such study folder (skintrack.open(..., create=True) starts one)")
            self.path.mkdir(parents=True)
        if not self.path.is_dir():
            raise UsageError(f"{self.path}: not a study folder")
        if store.is_old_layout(self.path):  # a study written before the lake: converted once, nothing lost
            from ..tables.upgrade import upgrade  # imported here: opening a study stays quick

            upgrade(self.path)
        self._follow = version is None
        self._engine = None
        display.register()
        self._reader = versions.Reader(self.path)
        self._records = {}  # records_sql's CTEs and parameters -> a temporary table of them at this version
        self._connect(version)

    def _connect(self, version=None) -> None:
        self._on_disk = store.is_study(self.path)
        if self._on_disk:  # held before the version is chosen: nothing expires or is deleted under it meanwhile
            self._reader.hold(0)
        self.con = store.connect(self.path, version)
        self._stamp = self._catalog_stamp()
        self._pin(store.views_version(self.con))

    def _pin(self, version) -> None:
        self.version = version
        self._reader.hold(version)
        self._stored_plan = None  # (the plan kept in the lake at this version,), read once
        self._plan = None
        self._facts = {}  # what `_at_version` read once at this version
        self._fits = {}
        self._results = {}  # query results at this version: a version never changes, so neither do they
        self._held, self._sizes = set(), None  # the small tables copied into memory at this version
        for table in filter(None, self._records.values()):  # an earlier version's records
            _drop(self.con, table)
        self._records = {}
        self._measure_rows = None
        if self._on_disk:
            try:
                self._sizes, self._stored_plan, catalog = store.retry_busy(store.read_version, self.con, version,
                                                                       self._held)
            except duckdb.Error as e:
                raise store.damaged(self.path, e) from None
            self._declare_measures(catalog)

    def _declare_measures(self, text: str | None) -> None:
        """The study's measures (catalog `text`) become metric keys measure.<name> (`skintrack.tables.measures`)."""
        self._measure_rows = {}
        names = self.sql("SELECT DISTINCT measure FROM measures")["measure"]
        self._measure_rows = measures.catalog_rows(measures.parse_catalog(text, "the study's measures catalog",
                                                                            given=False), names)
        declare_measures(self._measure_rows, self)

    def refresh(self) -> None:
        """Move to the newest version (queries do this by themselves unless a version was asked for)."""
        if not self._on_disk:
            if store.is_study(self.path):
                self._connect()
            return
        self._stamp = self._catalog_stamp()
        latest = store.retry_busy(store.latest_version, self.con)
        if latest != self.version:
            store.retry_busy(store.create_views, self.con, latest)
            self._pin(latest)

    def _catalog_stamp(self):
        """Changes whenever a local catalog commits (None for a shared catalog: then ask it every time)."""
        with contextlib.suppress(OSError):
            return tuple(os.stat(self.path / f).st_mtime_ns for f in (store.CATALOG, store.CATALOG + "-wal")
                         if (self.path / f).exists()) or None
        return None

    @property
    def version_note(self) -> str:
        """Which data this is, for a report or an export: "study version N (committed ... UTC)".

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().version_note.startswith("study version ")
        True
        """
        if self.version is None:
            return f"an empty study at {self.path}"
        when = self.con.execute(f"SELECT strftime(snapshot_time AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') FROM "
                                f"{store.LAKE}.snapshots() WHERE snapshot_id = ?", [self.version]).fetchall()[0][0]
        return f"study version {self.version} (committed {when} UTC)"

    def history(self) -> pd.DataFrame:
        """Every version kept: version, time, command, by (user@host), changed.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> "ingest" in set(demo_study().history()["command"])
        True
        """
        return versions.history(self.con)

    @property
    def plan(self) -> Plan:
        """The study plan (`STUDY/plan.toml`, as kept at this version), with what it leaves out derived from
        the data and named in `plan.assumed`.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().plan.primary
        Endpoint(metric='score.water', visit='W12')
        """
        self._sync()
        text = self._plan_text()
        if self._plan is None or self._plan[0] != text:
            days = self._visit_days()
            arms = sorted(self.sql("SELECT DISTINCT arm FROM subjects WHERE arm IS NOT NULL")["arm"]) \
                if "arm" in self.columns("subjects") else []
            plan = Plan.parse(text, str(self.path / PLAN_FILE)) if text else Plan()
            events = {e for e, col, view in (("rescue", "rescue", "sessions"),
                                             ("discontinuation", "discontinued_after", "subjects"))
                      if col in self.columns(view)}
            measure = self._first_measure() if plan.primary is None else None  # only where the primary is assumed
            self._plan = (text, plan.resolved(self.visits, days, arms, events, measure))
        return self._plan[1]

    def _first_measure(self) -> str | None:
        """The first measure key of a study that holds no photograph's score (its plan's assumed primary), else
        None."""
        if self.sql("SELECT count(*) AS n FROM scores")["n"].iloc[0]:
            return None
        held = self.sql("SELECT DISTINCT measure FROM measures ORDER BY measure")["measure"]
        return f"measure.{held.iloc[0]}" if len(held) else None

    def _plan_text(self) -> str | None:
        """The plan at this version. Following the newest version, `plan.toml` is the plan, and an edit not
        yet kept is kept now, as a version of its own (unless another process is writing, or the folder is
        read-only: then it is used as it is)."""
        if self._stored_plan is None:  # not read with the version (read_version)
            self._stored_plan = (store.plan_text(self.con, self.version) if self._on_disk else None,)
        stored = self._stored_plan[0]
        path = self.path / PLAN_FILE
        if not self._follow or not path.exists():
            return stored
        text = path.read_text(encoding="utf-8")
        if text != stored and self._on_disk:
            with contextlib.suppress(UsageError), store.locked(self.path):
                con = store.connect(self.path, write=True)
                store.save_plan(con, text)
                con.close()
                self.refresh()
        return text

    def columns(self, view: str) -> list[str]:
        """The columns of one of the study's views (e.g. the subjects CSV's columns in `subjects`)."""
        if view not in ("analyses", "subjects", "sessions"):
            raise UsageError(f"no columns listing for {view!r}")
        return list(self.sql(f"SELECT * FROM {view} LIMIT 0").columns)

    @property
    def visits(self) -> list:
        """Visit labels in the order they happen (median days since each subject's first session)."""
        return list(self._visit_days())

    def _at_version(self, fact: str, read):
        """`read()`, once per version of the study."""
        self._sync()
        if fact not in self._facts:
            self._facts[fact] = read()
        return self._facts[fact]

    def _visit_days(self) -> dict:
        """{visit: median days since each subject's first session}, in visit order."""
        return self._at_version("visit days", lambda: trends.visit_days(self))

    @property
    def several_captures(self) -> bool:
        """Whether a session holds more than one capture (two photos of a subject at one visit): only then do
        the plan's rules choose between captures (`skintrack.analysis.selection`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().several_captures
        False
        """
        return self._at_version("several captures", lambda: bool(self.sql(
            "SELECT count(CASE WHEN dup THEN 1 END) AS n FROM session_index")["n"].iloc[0]))

    @property
    def keyed(self) -> bool:
        """Whether a metric's records join the session index on the lake's integer keys at this version
        (`skintrack.tables.keys.usable`): a study written before them has none until a write upgrades it, and
        a version where two analyses share a key (or a row lacks one) joins on their ids instead.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().keyed
        True
        """
        return self._at_version("keyed", lambda: bool(self._on_disk and self.version is not None and keys.usable(
            self.con, store.retry_busy(store.column_rows, self.con, self.version))))

    def subject_ids(self) -> set:
        """Every subject the study knows: in its subjects CSV, or photographed or measured.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> len(demo_study().subject_ids())
        24
        """
        return set(self.sql("SELECT subject_id FROM subjects UNION SELECT subject_id FROM session_index")["subject_id"])

    def check_visit(self, label, what: str = "visit") -> str:
        """`label` if it is one of the study's visits, else a `UsageError` naming the valid ones."""
        if label not in self.visits:
            raise UsageError(f"no {what} {label!r} in this study (visits: {', '.join(map(str, self.visits)) or 'none'})")
        return label

    def check_followup(self, label) -> str:
        """`label` if it is a visit after the plan's baseline, else a `UsageError`: a change from baseline is
        compared at a later visit (at the baseline every change is 0 and no subject has one to compare)."""
        self.check_visit(label)
        if label == self.plan.baseline:
            later = [str(v) for v in self.visits if v != label]
            raise UsageError(f"{label} is the baseline visit: a change from baseline is compared at a later visit "
                             f"({', '.join(later) or 'this study has none yet'})")
        return label

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, version={self.version})"

    def on(self, spark) -> Study:
        """This study at its current version, with every query (so every helper) run by `spark`, a
        SparkSession, instead of DuckDB (see `skintrack.spark.engine`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().on  # doctest: +ELLIPSIS
        <bound method Study.on of Study(...)>
        """
        from ..spark.engine import SparkEngine

        self.plan  # noqa: B018 - a plan.toml edit not yet kept becomes a version first, then this one is pinned
        other = Study(self.path, version=self.version)
        other._engine = SparkEngine(spark, other.con, other.version, other.path)
        return other

    def _sync(self) -> None:
        if self._follow and (self._stamp is None or self._catalog_stamp() != self._stamp):
            self.refresh()

    def sql(self, query: str, params=None, make_records: bool = True) -> pd.DataFrame:
        """Run a query against the study's views; `params` are bound, never pasted into the SQL. A query that
        reads a few of a metric's records (`selection.records_sql`) says `make_records=False`: it computes them
        itself unless the study holds them as a table already (`_from_kept_records`).

        Example
        -------
        >>> import tempfile
        >>> open(tempfile.mkdtemp()).sql("select ? + 1 as two", [1])["two"].tolist()
        [2]
        """
        self._own_measures()
        if isinstance(params, dict):  # bind what the query names (builders pass what their rules might use)
            params = _named(params, query)
        if self._engine is not None:
            return self._engine.sql(query, params)
        self._sync()
        try:
            key = _frozen((query, params))
        except TypeError:
            key = None
        if key in self._results:
            return self._results[key].copy()

        def run():
            if self._on_disk:
                store.hold_in_memory(self.con, query, self._held, self._sizes)
            # execute, not sql(): a relation with parameters ran 10x slower at 1M rows (benchmarks/study.py)
            cur = self.con.execute(*self._from_kept_records(query, params, make_records))
            return cur.to_arrow_table().to_pandas() if cur.description is not None else pd.DataFrame()

        try:
            result = store.retry_busy(run)
        except duckdb.Error as e:
            if isinstance(e, duckdb.IOException) or ".parquet" in str(e) or store.is_busy(e):
                raise store.damaged(self.path, e) from None
            raise UsageError(f"{self.path}: the query failed: {store.first_line(e)}") from None
        if key is not None and len(result) <= CACHED_ROWS:
            if len(self._results) >= CACHED_QUERIES:
                self._results.clear()
            self._results[key] = result.copy()
        return result

    def _own_measures(self) -> None:
        """Make this study's measures the keys measure.<name> again if another study declared its own since."""
        if self._measure_rows is not None and measures_owner() is not self:
            declare_measures(self._measure_rows, self)

    def metric_list(self, metrics) -> list[str]:
        """`metrics` (one key or several) checked against this study's keys, its measures included: known, and
        none named twice (`skintrack.tables.catalog.metric_list`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().metric_list("measure.corneometer")
        ['measure.corneometer']
        """
        self._own_measures()
        return metric_list(metrics)

    def _from_kept_records(self, query: str, params, make: bool = True):
        """`query` and its parameters reading the records it computes (`selection.records_sql`) from a
        temporary table made once per metric and rules at this version: the helpers, models and report
        read the same records many times. The table's rows are the CTE's own (tests/test_selection.py).
        `_records` maps the records to their table, or to None while they have been asked for once and are
        not worth a table yet (`_make_records`); a query that does not `make` one reads the table if any."""
        start, end = query.find(RECORDS_START), query.find(RECORDS_END)
        if start < 0 or end < 0 or not isinstance(params, dict):
            return query, params
        block = query[start + len(RECORDS_START):end]
        used = _named(params, block)
        key = _frozen((block, used))
        if self._records.get(key) is None:
            if not make:
                return query, params
            if key not in self._records and len(self._records) >= KEPT_RECORDS:
                oldest = self._records.pop(next(iter(self._records)))
                if oldest is not None:
                    _drop(self.con, oldest)
            table = f"kept_records_{next(_RECORD_TABLES)}"
            if not self._make_records(table, block, used, again=key in self._records):
                self._records[key] = None  # read in this query, and made into a table if asked for again
                return query, params
            self._records[key] = table
        query = f"{query[:start]}recs AS (SELECT * FROM {self._records[key]}){query[end + len(RECORDS_END):]}"
        return query, _named(params, query)

    def _make_records(self, table: str, block: str, used: dict, again: bool) -> bool:
        """Make the temporary table of records, or say (False) that the query should compute them itself.

        In a large study (a lake above `KEEP_RECORDS_LAKE_BYTES`) the records are kept in the user's cache
        (`skintrack.kept`, keyed by the study version, the records' SQL and parameters, and the code): another
        process at the same version, a notebook's next kernel, reads them back instead of computing them
        again. Where they will not be kept (the cache off, a shared catalog), a large study's records become
        a table only when asked for `again`: the table costs a third more than the records themselves
        (0.3-0.45 s of CPU at 1M), so a helper called once reads them in its own query (benchmarks/study.py).
        A small study's records are a table from the first ask: there planning the query, not its rows, is
        the cost."""
        large = self._on_disk and sum((self._sizes or {}).values()) > KEEP_RECORDS_LAKE_BYTES
        k = kept.key("records", {"sql": block, "params": used}, self.path, self.version) if large else None
        files = kept.kept_files(k)
        if files is not None and (files / RECORDS_FILE).is_file():
            try:  # an Arrow file, read into memory: 0.1 s for 1M records (0.4 s to decode them from Parquet)
                with pa.OSFile(str(files / RECORDS_FILE), "rb") as source:
                    self.con.register(table, pa.ipc.open_file(source).read_all())
                return True
            except (pa.ArrowException, OSError):
                pass  # unreadable: computed again
        if large and k is None and not again:
            return False
        self.con.execute(f"CREATE TEMP TABLE {table} AS WITH {block} SELECT * FROM recs", used)
        if k is not None:
            with contextlib.suppress(pa.ArrowException, OSError), tempfile.TemporaryDirectory() as folder:
                rows = self.con.execute(f"SELECT * FROM {table}").to_arrow_table()
                with pa.OSFile(os.path.join(folder, RECORDS_FILE), "wb") as sink, \
                        pa.ipc.new_file(sink, rows.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as out:
                    out.write_table(rows)
                kept.keep(k, "", folder)
        return True

    # ---- longitudinal helpers (see trends, trial and qc in skintrack.analysis) ------------------
    def rules(self, exclude_flagged: bool | None = None, baseline: str | None = None) -> selection.Rules:
        """How this study's captures become values (`skintrack.analysis.selection`): the plan's capture QC
        (unless `exclude_flagged` is given), visit windows and intercurrent events, and baseline visit.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> r = demo_study().rules()
        >>> r.baseline, r.exclude_flagged, r.windows
        ('D0', True, 'exclude')
        """
        if baseline is not None:
            self.check_visit(baseline, "baseline visit")
        return selection.rules(self, exclude_flagged, baseline)

    @property
    def plot(self):
        """The study's charts (`skintrack.show.plots.StudyPlots`): `s.plot.trend("score.water")`, `.change`,
        `.waterfall`, `.responders`, `.lsmeans`, `.regions`; each returns a matplotlib Figure."""
        from ..show.plots import StudyPlots

        return StudyPlots(self)

    def timeline(self, metric: str, exclude_flagged: bool | None = None) -> pd.DataFrame:
        """subject_id, visit, taken_at, days (since the subject's first session), value: the values the plan's
        rules keep (QC-flagged captures as the plan says, unless `exclude_flagged` is given).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().timeline("score.water").columns.tolist()
        ['subject_id', 'visit', 'taken_at', 'days', 'value']
        """
        return trends.timeline(self, metric, self.rules(exclude_flagged))

    def change_from_baseline(self, metric: str, baseline: str | None = None,
                             exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Per subject and visit: value, baseline_value, delta, pct_change (in %), improved, is_baseline,
        relative to the plan's baseline visit (or `baseline`); subjects without one are left out and
        listed in ``.attrs["excluded"]``.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> ch = demo_study().change_from_baseline("score.water", exclude_flagged=True)
        >>> ch.attrs["baseline"], ch.attrs["excluded"]
        ('D0', [])
        """
        self.check_visit(baseline or self.plan.baseline, "baseline visit")
        return trends.change_from_baseline(self, metric, self.rules(exclude_flagged, baseline))

    def slopes(self, metric: str, exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Per subject: n, slope_per_30d, intercept, r2, first, last.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> len(demo_study().slopes("area.water.whole_face"))
        24
        """
        return trends.slopes(self, metric, self.rules(exclude_flagged))

    def cohort(self, metric: str, by=None, exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Per group (default: visit and arm, or visit alone without arms; always by visit): n, mean, sd, sem,
        95% CI, median, quartiles, and the mean change from the plan's baseline with its CI (baseline rows
        are no change).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().cohort("score.water")[["visit", "arm", "n"]].head(2).values.tolist()
        [['D0', 'active', 12], ['D0', 'placebo', 12]]
        """
        return trends.cohort(self, metric, by, self.rules(exclude_flagged))

    def compare(self, metrics, baseline: str, followup: str, test: str = "paired_t",
                exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Paired change from one visit to another, per metric and per arm, with Holm and BH adjusted p-values.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().compare(["score.water", "score.total"], "D0", "W12")[["metric", "arm", "n"]].values.tolist()  # S11 W12 QC-flagged
        [['score.water', 'active', 11], ['score.water', 'placebo', 12], ['score.total', 'active', 11], ['score.total', 'placebo', 12]]
        """
        self.check_visit(baseline, "baseline visit")
        self.check_visit(followup, "follow-up visit")
        if baseline == followup:
            raise UsageError(f"the baseline and the follow-up are the same visit ({baseline}): compare two visits")
        return trial.compare(self, metrics, baseline, followup, test, exclude_flagged)

    def compare_arms(self, metric: str, visit: str, test: str = "welch", treatment=None, control=None,
                     exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Each treatment against the control (the plan's) on the change from baseline at a visit (welch,
        mannwhitney, ancova).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().compare_arms("score.water", "W12", test="ancova")[["treatment", "control"]].values.tolist()
        [['active', 'placebo']]
        """
        self.check_followup(visit)
        return trial.compare_arms(self, metric, visit, test, treatment, control, exclude_flagged)

    def responders(self, metric: str, threshold: float, relative: bool = False, baseline: str | None = None,
                   exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Per visit and arm: the share improved by at least `threshold`, with a Wilson 95% CI.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().responders("score.water", 5)["visit"].unique().tolist()
        ['W4', 'W8', 'W12']
        """
        return trends.responders(self, metric, threshold, relative, self.rules(exclude_flagged, baseline))

    def mmrm(self, metric: str, treatments=None, control=None, base_by_visit: bool = False,
             exclude_flagged: bool | None = None) -> MMRMResult:
        """The trial's primary model: change ~ baseline + arm * visit (+ baseline * visit), REML, with the plan's
        covariance structure, degrees of freedom (Kenward-Roger by default) and variance; `.lsmeans` by arm and
        visit, `.diffs` of each treatment against the control per visit, `.method` in words, `.excluded`
        the subjects left out and why (see `skintrack.analysis.mmrm`). QC-flagged captures as the plan says.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> fit = demo_study().mmrm("score.water")
        >>> fit.covariance, fit.df_method, fit.diffs["visit"].tolist()
        ('unstructured', 'kenward-roger', ['W4', 'W8', 'W12'])
        """
        plan = self.plan  # brought up to date: a fit is reused until the data or the plan change
        # keyed by the arms and the rules the fit uses (the plan's defaults spelt out), so that the report,
        # endpoints and sensitivity, asking in different words, share one fit
        key = (metric, tuple(treatments or plan.treatments), control or plan.control, base_by_visit,
               self.rules(exclude_flagged), self.version, self._plan[0])
        if key not in self._fits:
            try:
                self._fits[key] = trial.mmrm(self, metric, treatments, control, base_by_visit, exclude_flagged)
            except UsageError as e:  # a refusal is kept too: trying every structure again would say the same
                self._fits[key] = e
        if isinstance(self._fits[key], UsageError):
            raise self._fits[key].with_traceback(None)
        return self._fits[key]

    def endpoints(self, exclude_flagged: bool | None = None) -> pd.DataFrame:
        """The plan's primary and key secondary endpoints in testing order, by the MMRM, with the plan's
        multiplicity strategy applied (the decisions a sponsor reports).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().endpoints()[["role", "metric", "decision"]].values.tolist()[0]
        ['primary', 'score.water', 'significant']
        """
        return trial.endpoints(self, exclude_flagged)

    def endpoint(self, metric: str, visit: str | None = None, model: str | None = None, margin: float | None = None,
                 exclude_flagged: bool | None = None) -> pd.DataFrame:
        """`metric` at `visit` for each treatment against the control by the model its type calls for
        (negative binomial for counts, proportional odds for grades, logistic for flags, the MMRM with the
        Hodges-Lehmann shift, Hedges' g and TOST for continuous metrics); see `skintrack.analysis.endpoints`.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().endpoint("count.blackhead.nose", "W12")[["model", "treatment"]].values.tolist()
        [['negative_binomial', 'active']]
        """
        return trial.endpoint(self, metric, visit, model=model, margin=margin, exclude_flagged=exclude_flagged)

    def responders_between(self, metric: str, visit: str | None = None, threshold=None,
                           exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Responders (threshold: given, the plan's, or "mdc") per treatment against the control: risk
        difference with Newcombe's interval, odds ratio, Fisher's p.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> r = demo_study().responders_between("score.water", "W12").iloc[0]  # S11's W12 is QC-flagged
        >>> float(r["threshold"]), int(r["n_treatment"]), int(r["n_control"])
        (5.0, 11, 12)
        """
        return trial.responders_between(self, metric, visit, threshold, exclude_flagged=exclude_flagged)

    def sensitivity(self, methods=None, imputations: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """The primary endpoint's sensitivity analyses (the plan's: QC handled the other way, multiple
        imputation under MAR, jump to reference, copy reference, the delta tipping point; see
        `skintrack.analysis.sensitivity`): analysis, treatment, estimate, std_error, df, CI, p, p_adjusted (as the
        plan tests the primary comparison), decision, note.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().sensitivity(methods=["qc"])["analysis"].tolist()
        ['primary: MMRM (missing at random)', 'QC-flagged captures included']
        """
        from .sensitivity import sensitivity

        return sensitivity(self, methods, imputations, seed)

    def shift_table(self, metric: str, visit: str | None = None, exclude_flagged: bool = False) -> pd.DataFrame:
        """Subjects by arm, baseline grade and grade at `visit` (default: the plan's last visit).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().shift_table("severity.pores.chin").columns.tolist()
        ['arm', 'base', 'value', 'n']
        """
        ch = trial.arm_changes(self, metric, exclude_flagged)
        at = ch[ch["visit"] == self.check_followup(visit or self.plan.schedule[-1])]
        return shift_table(at.rename(columns={"baseline_value": "base"}))

    def repeatability(self, metrics=None) -> pd.DataFrame:
        """From sessions holding repeat captures, per metric: SEM (within-subject SD), CV, ICC(1,1), MDC95.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().repeatability().columns.tolist()[:5]
        ['metric', 'sessions', 'captures', 'mean', 'sem']
        """
        return measure_repeatability(self, metrics)

    def claims(self, metrics=None, test: str = "paired_t", exclude_flagged: bool | None = None) -> pd.DataFrame:
        """The claim table: per metric, arm and visit, mean change and % change from baseline (95% CIs), p
        against baseline and the share of subjects improved (see `skintrack.analysis.claims`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().claims(["score.water"])[["arm", "visit", "n"]].values.tolist()[:2]
        [['placebo', 'W4', 11], ['placebo', 'W8', 12]]
        """
        return claims_.claims(self, metrics, test, exclude_flagged)

    def raters(self, metrics=None) -> pd.DataFrame:
        """Agreement between the raters of each measure graded by two or more: ICC(2,1) with its 95% CI and,
        for grades, the weighted kappa of each pair of raters (see `skintrack.analysis.raters`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().raters()[["metric", "statistic"]].values.tolist()[:2]
        [['measure.wrinkle_grade', 'ICC(2,1)'], ['measure.wrinkle_grade', 'weighted kappa (quadratic)']]
        """
        return raters_.raters(self, metrics)

    def readings(self, metric: str | None = None) -> pd.DataFrame:
        """The measures' readings as ingested (subject_id, visit, taken_at, measure, value, unit, device,
        rater, replicate, side, source), of one `metric` (measure.<name>) or all.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> sorted(demo_study().readings()["measure"].unique())[:2]
        ['corneometer', 'feels_hydrated']
        """
        where, params = ("WHERE measure = $m", {"m": metric.removeprefix("measure.")}) if metric else ("", None)
        return self.sql("SELECT subject_id, visit, taken_at, measure, value, unit, device, rater, replicate, side, "
                        f"source FROM measures {where} ORDER BY subject_id, taken_at, visit, measure, rater, replicate, "
                        "side", params)

    def agreement(self, a: str, b: str, exclude_flagged: bool | None = None) -> pd.DataFrame:
        """Does metric `b` move with metric `a` on the same captures? Pearson and Spearman with 95% CIs, on
        the values and on the changes from baseline; with a shared unit, Lin's concordance and Bland-Altman
        bias and limits of agreement (see `skintrack.analysis.agreement`). The pairs are in ``.attrs``.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> t = demo_study().agreement("score.water", "score.rough")
        >>> sorted(set(t["statistic"]))
        ['bias', 'lin_ccc', 'loa_high', 'loa_low', 'pearson', 'spearman']
        """
        return agreement_.agreement(self, a, b, exclude_flagged)

    # ---- the instrument (see skintrack.analysis.instrument) --------------------------------------
    def generations(self) -> pd.DataFrame:
        """The API generations that measured the study: api_generation, analyses, sentinels, first, last, basis.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().generations()["api_generation"].tolist()
        ['v1.7.6']
        """
        return instrument.generations(self)

    def drift(self, metrics=None) -> pd.DataFrame:
        """Each sentinel run against the reference run, per metric: shift, 95% CI, MDC, exceeds_mdc (see
        `skintrack.analysis.instrument.drift`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> bool(demo_study().drift()["exceeds_mdc"].any())
        False
        """
        return instrument.drift(self, metrics)

    def bridge(self, metrics=None) -> pd.DataFrame:
        """Per metric, the offset between API generations from photos analysed under both (see
        `skintrack.analysis.instrument.bridge`).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().bridge().empty  # one generation: nothing to bridge
        True
        """
        return instrument.bridge(self, metrics)

    def check(self) -> pd.DataFrame:
        """Every problem of the study's store and of its assignments (see `skintrack.tables.check`), every
        capture outside its visit window, and every subject, endpoint and batch whose values straddle API
        generations: where, problem.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().check().empty
        True
        """
        from ..tables import check  # imported here (with pyarrow.parquet): opening a study stays quick

        damaged = check.store_problems(self.path)
        if len(damaged):
            return damaged
        self._sync()
        found = [check.problems(self.con)]
        try:
            self.plan  # noqa: B018 - a plan that cannot be used is one of the problems listed, not a stop
        except UsageError as e:
            found.append(pd.DataFrame({"where": [str(self.path / PLAN_FILE)], "problem": [str(e)]}))
        else:  # the visit windows and the endpoints are the plan's
            found += [selection.out_of_window(self), instrument.straddles(self)]
        return pd.concat(found, ignore_index=True).sort_values(["where", "problem"], ignore_index=True)

    def qc(self, limits: qc.QCLimits = qc.QCLimits()) -> pd.DataFrame:
        """One row per ok analysis with a flag per capture problem, `flagged` and `reasons`.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> q = demo_study().qc()
        >>> sorted(q.loc[q.flagged, "reasons"].unique())[:1]
        ['distance_changed']
        """
        return qc.qc_frame(self, limits)


HELPERS = ("history", "timeline", "change_from_baseline", "slopes", "cohort", "compare", "compare_arms", "responders",
           "endpoints", "endpoint", "responders_between", "sensitivity", "shift_table", "repeatability", "claims",
           "raters", "readings", "agreement", "generations", "drift", "bridge", "check", "qc")


def _titled(method):
    """`method` whose DataFrame is labelled with the call that made it (its display in Jupyter:
    `skintrack.show.display`)."""
    @functools.wraps(method)
    def helper(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        if isinstance(out, pd.DataFrame):
            shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
            display.titled(out, f"{method.__name__}({', '.join(shown)})")
        return out
    return helper


for _name in HELPERS:
    setattr(Study, _name, _titled(getattr(Study, _name)))


def open(path, create: bool = False, version: int | None = None, engine=None) -> Study:  # noqa: A001
    """Open a study folder, at its newest version or at `version` (see `Study.history`); a missing folder is
    an error unless `create` (an empty study has empty views). `engine` is a SparkSession to run every
    query on (`Study.on`), or None for DuckDB."""
    study = Study(path, create, version)
    return study.on(engine) if engine is not None else study
