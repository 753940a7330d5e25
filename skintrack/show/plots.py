"""`Study.plot`: the study draws its own charts. Each method gathers the frames its chart needs (under the
plan's rules: baseline, QC, arms in the plan's order) and returns a matplotlib Figure, which a notebook
shows and `skintrack.charts.save` writes as PNG, SVG and PDF.

Example
-------
>>> from skintrack.demo import demo_study
>>> s = demo_study()
>>> fig = s.plot.trend("score.water")
>>> fig.axes[0].get_title()
'Skin moisture score: every subject, and the mean by arm'
"""
from __future__ import annotations

import pandas as pd

from ..errors import UsageError
from ..tables.catalog import catalog, metric_info
from . import charts


class StudyPlots:
    """The charts of one study: `s.plot.trend(metric)`, `.change(metric)`, `.waterfall(metric, visit)`,
    `.responders(metric, threshold)`, `.lsmeans(fit or metric)`, `.regions("count.acne", visit)`."""

    def __init__(self, study):
        self.s = study

    def _subjects(self) -> pd.DataFrame:
        return self.s.sql("SELECT * FROM subjects")

    def trend(self, metric: str, exclude_flagged: bool | None = None):
        """Each subject's values (thin) and the mean with its 95% CI by arm (bold), by visit."""
        s = self.s
        return charts.trend_lines(_drawn(s.timeline(metric, exclude_flagged), metric),
                                  s.cohort(metric, exclude_flagged=exclude_flagged),
                                  metric, self._subjects(), self.s.plan.arms)

    def change(self, metric: str, test: str | None = "welch", exclude_flagged: bool | None = None):
        """The mean change from baseline with its 95% CI by visit and arm; with `test` (welch, mannwhitney,
        ancova; None for none) each visit is marked with each treatment's nominal p against the control."""
        s = self.s
        cohort = s.cohort(metric, exclude_flagged=exclude_flagged)
        _drawn(cohort[cohort["change_n"] > 0], f"{metric}'s change from baseline")
        tests = None
        if test and len(self.s.plan.arms) > 1:
            tests = pd.concat([s.compare_arms(metric, v, test, exclude_flagged=exclude_flagged)
                               for v in s.visits if v != s.plan.baseline], ignore_index=True)
        return charts.change_bars(cohort, metric, tests, self.s.plan.arms)

    def waterfall(self, metric: str, visit: str | None = None, exclude_flagged: bool | None = None):
        """Every subject's % change at `visit` (default: the primary endpoint's, else the last), sorted."""
        s = self.s
        visit = s.check_followup(visit or (s.plan.primary.visit if s.plan.primary else s.visits[-1]))
        changes = s.change_from_baseline(metric, exclude_flagged=exclude_flagged)
        _drawn(changes[changes["visit"] == visit], f"{metric}'s change at {visit}")
        return charts.waterfall(changes, metric, visit, self._subjects(), self.s.plan.arms)

    def responders(self, metric: str, threshold: float | None = None, relative: bool = False,
                   exclude_flagged: bool | None = None):
        """The share of responders (improved by at least `threshold`: the plan's by default) by visit and arm."""
        threshold = self.s.plan.responders.get(metric) if threshold is None else threshold
        if threshold is None or threshold == "mdc":
            raise UsageError(f"responders of {metric}: give a threshold (the plan names none as a number)")
        rates = self.s.responders(metric, threshold, relative, exclude_flagged=exclude_flagged)
        _drawn(rates, f"{metric}'s change")
        return charts.responder_bars(rates, metric, threshold, relative, self.s.plan.arms)

    def lsmeans(self, fit):
        """The MMRM's LS-means of the change by arm and visit with each treatment's marks; `fit` is an
        `MMRMResult` (from `s.mmrm`) or a metric key to fit."""
        fit = self.s.mmrm(fit) if isinstance(fit, str) else fit
        return charts.lsmeans_plot(fit.lsmeans, fit.diffs, fit.metric, self.s.plan.arms)

    def regions(self, metric: str, visit: str | None = None, subject: str | None = None):
        """The mean (or one `subject`'s) value of each face region of `metric` (a key without its region, e.g.
        "severity.pores" or "area.red") at `visit` (default: the last), on a face schematic."""
        s = self.s
        cat = catalog()
        keys = cat[cat["key"].str.startswith(metric + ".") & cat["region"].isin(list(charts.REGION_XY))]
        if keys.empty:
            raise UsageError(f"{metric!r} has no keys by face region to draw (try a family and feature such as "
                             "severity.pores or area.red; see `skintrack metrics`)")
        visit = s.check_visit(visit) if visit else s.visits[-1]
        if subject is not None and subject not in s.subject_ids():  # a study without a subjects CSV has its own
            raise UsageError(f"no subject {subject!r} in this study")
        rows = []
        for key, region in zip(keys["key"], keys["region"]):
            tl = s.timeline(key)
            tl = tl[(tl["visit"] == visit) & ((tl["subject_id"] == subject) if subject else True)]
            if len(tl):
                rows.append({"region": region, "value": float(tl["value"].mean())})
        info = metric_info(keys["key"].iloc[0])
        who = f"subject {subject}" if subject else "mean of the subjects"
        return charts.face_regions(_drawn(pd.DataFrame(rows, columns=["region", "value"]), f"{metric} at {visit}"),
                                   f"{metric} at {visit} ({who})", info["unit"])


def _drawn(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """`frame`, unless it holds nothing to draw: then a `UsageError` saying so (an empty chart says nothing)."""
    if frame.empty:
        raise UsageError(f"nothing to draw: no value of {what} in this study under the plan's rules (QC, windows; "
                         "`skintrack check` lists the study's problems)")
    return frame
