"""`skintrack.open(DIR)`: a study folder as DuckDB views, with query helpers.

Example
-------
>>> import tempfile
>>> s = open(tempfile.mkdtemp())
>>> s.sql("select count(*) as n from analyses")["n"].tolist()
[0]
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd

from ..tables import check, store
from . import qc, trends, trial
from ..errors import UsageError


class Study:
    """A study folder opened for reading: `con` has one view per table plus `metrics` and `metrics_wide`."""

    def __init__(self, path, create: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise UsageError(f"{self.path}: no such study folder (skintrack.open(..., create=True) starts one)")
            self.path.mkdir(parents=True)
        if not self.path.is_dir():
            raise UsageError(f"{self.path}: not a study folder")
        self.con = duckdb.connect()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the folder. Queries do this by themselves when a batch has come or gone since."""
        self._seen = self._stamp()
        store.create_views(self.con, self.path)
        self._indexed = False
        self._visits = None

    def _stamp(self):
        try:
            return os.stat(store.batches_dir(self.path)).st_mtime_ns
        except FileNotFoundError:
            return None

    def columns(self, view: str) -> list[str]:
        """The columns of one of the study's views (e.g. the subjects CSV's columns in `subjects`)."""
        if view not in ("analyses", "subjects", "sessions"):
            raise UsageError(f"no columns listing for {view!r}")
        return list(self.sql(f"SELECT * FROM {view} LIMIT 0").columns)

    def _ensure_index(self) -> None:
        if not self._indexed:
            trends.build_index(self.con)
            self._indexed = True

    @property
    def visits(self) -> list:
        """Visit labels in the order they happen (median days since each subject's first session)."""
        if self._visits is None:
            self._ensure_index()
            self._visits = trends.visit_order(self)
        return self._visits

    def check_visit(self, label, what: str = "visit") -> str:
        """`label` if it is one of the study's visits, else a `UsageError` naming the valid ones."""
        if label not in self.visits:
            raise UsageError(f"no {what} {label!r} in this study (visits: {', '.join(map(str, self.visits)) or 'none'})")
        return label

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r})"

    def sql(self, query: str, params=None) -> pd.DataFrame:
        """Run a query against the study's views; `params` are bound, never pasted into the SQL.

        Example
        -------
        >>> import tempfile
        >>> open(tempfile.mkdtemp()).sql("select ? + 1 as two", [1])["two"].tolist()
        [2]
        """
        if self._stamp() != self._seen:  # an ingest published or removed a batch since we looked
            self.refresh()
        if "session_index" in query:
            self._ensure_index()
        rel = self.con.sql(query, params=params)
        return rel.to_arrow_table().to_pandas() if rel is not None else pd.DataFrame()


    # ---- longitudinal helpers (see trends, trial and qc in skintrack.analysis) ------------------
    def timeline(self, metric: str, exclude_flagged: bool = False) -> pd.DataFrame:
        """subject_id, visit, taken_at, days (since the subject's first session), value.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().timeline("score.water").columns.tolist()
        ['subject_id', 'visit', 'taken_at', 'days', 'value']
        """
        return trends.timeline(self, metric, exclude_flagged)

    def change_from_baseline(self, metric: str, baseline: str = "first", exclude_flagged: bool = False) -> pd.DataFrame:
        """Per subject and visit: value, baseline_value, delta, pct_change (in %), improved.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> ch = demo_study().change_from_baseline("score.water", baseline="D0")
        >>> float(ch.loc[ch.visit == "D0", "delta"].abs().max())
        0.0
        """
        if baseline != "first":
            self.check_visit(baseline, "baseline visit")
        return trends.change_from_baseline(self, metric, baseline, exclude_flagged)

    def slopes(self, metric: str, exclude_flagged: bool = False) -> pd.DataFrame:
        """Per subject: n, slope_per_30d, intercept, r2, first, last.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> len(demo_study().slopes("area.water.whole_face"))
        24
        """
        return trends.slopes(self, metric, exclude_flagged)

    def cohort(self, metric: str, by=None, exclude_flagged: bool = False) -> pd.DataFrame:
        """Per group (default: visit and arm, or visit alone without arms): n, mean, sd, sem, 95% CI, median,
        quartiles, and the mean change from baseline with its CI.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().cohort("score.water")[["visit", "arm", "n"]].head(2).values.tolist()
        [['D0', 'active', 12], ['D0', 'placebo', 12]]
        """
        return trends.cohort(self, metric, by, exclude_flagged)

    def compare(self, metrics, baseline: str, followup: str, test: str = "paired_t",
                exclude_flagged: bool = False) -> pd.DataFrame:
        """Paired change from one visit to another, per metric, with Holm and BH adjusted p-values.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().compare(["score.water", "score.total"], "D0", "W12")["n"].tolist()
        [24, 24]
        """
        self.check_visit(baseline, "baseline visit")
        self.check_visit(followup, "follow-up visit")
        return trial.compare(self, metrics, baseline, followup, test, exclude_flagged)

    def compare_arms(self, metric: str, visit: str, test: str = "welch", treatment=None, control=None,
                     exclude_flagged: bool = False) -> pd.DataFrame:
        """Treatment against control on the change from baseline at a visit (welch, mannwhitney, ancova).

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().compare_arms("score.water", "W12", test="ancova")[["treatment", "control"]].values.tolist()
        [['active', 'placebo']]
        """
        self.check_visit(visit)
        return trial.compare_arms(self, metric, visit, test, treatment, control, exclude_flagged)

    def responders(self, metric: str, threshold: float, relative: bool = False, baseline: str = "first",
                   exclude_flagged: bool = False) -> pd.DataFrame:
        """Per visit and arm: the share improved by at least `threshold`, with a Wilson 95% CI.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().responders("score.water", 5)["visit"].unique().tolist()
        ['W4', 'W8', 'W12']
        """
        if baseline != "first":
            self.check_visit(baseline, "baseline visit")
        return trends.responders(self, metric, threshold, relative, baseline, exclude_flagged)

    def mixed_model(self, metric: str, treatment=None, control=None, exclude_flagged: bool = False) -> pd.DataFrame:
        """MixedLM of the change from baseline on treatment x visit with a random intercept per subject.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().mixed_model("score.water")["term"].tolist()[:2]
        ['Intercept', 'C(visit)[T.W8]']
        """
        return trial.mixed_model(self, metric, treatment, control, exclude_flagged)

    def check(self) -> pd.DataFrame:
        """Every problem of assignment in the study (see `skintrack.tables.check`): where, problem.

        Example
        -------
        >>> from skintrack.demo import demo_study
        >>> demo_study().check().empty
        True
        """
        self.sql("SELECT 1")  # refresh the views if an ingest came since
        return check.problems(self.con)

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


def open(path, create: bool = False) -> Study:  # noqa: A001 - the contract names it skintrack.open
    """Open a study folder; a missing folder is an error unless `create` (an empty study has empty views)."""
    return Study(path, create)
