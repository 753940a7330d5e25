"""`skintrack report`: a dossier-ready trial report, built once as a document (`skintrack.show.document`)
and written as HTML, a paged PDF of it, and DOCX.

The document has a title page (sponsor, product, protocol, plan version, report date, study version) with an
approval block, contents with the lists of tables and figures, and numbered sections whose tables and
figures are numbered, captioned and carry their analysis population. The HTML embeds every figure (PNG data
URIs); print CSS gives A4 (or Letter) pages with a running header (title, sponsor, product, protocol, plan
version) and a footer (date, data version, "page X of Y"), which headless Chromium prints to PDF; the DOCX
(`skintrack.show.word`) holds the same cells. The sections follow the study plan: synopsis, subject
disposition with a flow diagram, baseline and demographics by arm (N per arm), the estimand, the primary
endpoint (MMRM LS-means, differences and a chart of the same fit), the endpoints in testing order with their
decisions, % change and responders, the claim table, the measures beside the photos, the study's photographs
of the subjects the plan's illustration rule picks, the QC listing, the instrument, the sensitivity
analyses, methods written from what was run, and the software and data versions. Each chart is drawn once.

Example
-------
>>> import tempfile
>>> from skintrack.demo import demo_study
>>> r = build_report(demo_study(), tempfile.mkdtemp(), metrics=["score.water"], pdf=False)
>>> r.html.name, len(r.findings)
('report.html', 3)
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import math
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from .. import __version__
from ..analysis.qc import FLAGS
from ..analysis.stats import decimals
from ..errors import NotApplicable, UsageError
from ..sinks import css_string, file_name
from ..sinks import html as html_text
from ..tables import store
from ..tables.catalog import metric_info
from . import charts
from .document import HEADERS, ROUNDING, Document, Flow, Text, fmt_p, levels_with

DEFAULT_METRICS = ("score.water", "score.rough", "score.melanin", "score.total", "score.pores")
PAPER = {"a4": "A4", "letter": "letter"}
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MODEL_NAMES = {"mmrm": "MMRM", "negative_binomial": "negative binomial", "proportional_odds": "proportional odds",
               "logistic": "logistic regression"}


@dataclass
class Report:
    """What `build_report` wrote and found."""

    html: Path
    pdf: Path | None
    figures: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    document: Document | None = None
    docx: Path | None = None
    pdf_engine: str = ""
    seconds: float = 0.0


def adjusted(attrs) -> bool:
    """Whether the endpoints' decisions rest on adjusted p-values (Holm, or several arms against a control)."""
    return attrs["strategy"] == "holm" or attrs.get("arm_comparisons", "none") != "none"


def finding(row, attrs) -> str:
    """One endpoint's result in a sentence that says how it was tested and what was decided."""
    info = metric_info(row.metric)
    title = info["description"].rstrip(".")
    tested = "fixed-sequence" if attrs["strategy"] == "fixed_sequence" else "Holm"
    how = f"{MODEL_NAMES.get(row.model, 'no model')}, {tested} testing at alpha {attrs['alpha']:g}"  # no order: none
    head = f"{row.role.capitalize()} endpoint {row.order}, {title} at {row.visit} ({how})"
    if row.decision == "not tested":
        return (f"{head}: {row.treatment} against {row.control} not tested, because an earlier comparison in the "
                "sequence was not significant.")
    if row.decision == "not estimable":
        return f"{head}: {row.treatment} against {row.control} {row.reason}."
    adjusted_p = adjusted(attrs)
    p = fmt_p(row.p_adjusted if adjusted_p else row.p, levels_with(attrs["alpha"]))
    digits = decimals([row.estimate, row.ci_low, row.ci_high], 1 if row.model == "mmrm" else 2)
    level = "simultaneous 95% CI" if row.ci_simultaneous else "95% CI"
    tail = (f"({level} {row.ci_low:.{digits}f} to {row.ci_high:.{digits}f}; "
            f"{'adjusted ' if adjusted_p else ''}p {p}): {row.decision}.")
    if row.model != "mmrm":
        ratio = "rate ratio" if row.model == "negative_binomial" else "odds ratio"
        return f"{head}: {row.treatment} against {row.control}, {ratio} {row.estimate:.2f} {tail}"
    better = (row.estimate > 0) == (info["better"] == "higher")
    verb = ("improved it by" if better else "worsened it by") if info["better"] != "none" else "changed it by"
    return (f"{head}: {row.treatment} {verb} {abs(row.estimate):.{digits}f} {info['unit']} more than {row.control} "
            f"{tail}")


def refusable(title):
    """A report section that says why under its `title` (text, or a function of the section's arguments) when
    the study cannot give it (a helper refuses with a reason), instead of stopping the report: one section
    that is not estimable, or does not apply to this study (`NotApplicable`), never stops the others."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args):
            try:
                return method(self, *args)
            except UsageError as e:
                why = "Not applicable to this study" if isinstance(e, NotApplicable) else "Not estimable in this study"
                self.section(title(*args) if callable(title) else title, Text(f"{why}: {e}", "note"))
        return run
    return wrap


def _pct_change(mean, low, high, of: int, n: int) -> str:
    """A claim table's mean % change with its interval, saying how many of the n it is of where a baseline of
    0 has none (a count can start at 0), and that it is not defined where none has."""
    if not of:
        return "not defined (every baseline is 0)"
    shown = f"{mean:+.1f}" + (f" ({low:+.1f} to {high:+.1f})" if math.isfinite(low) else "")
    return shown + (f"; of {of}, {n - of} with a baseline of 0" if of < n else "")


def _metric_title(key: str) -> str:
    return f"{metric_info(key)['description'].rstrip('.')} ({key})"


class _Builder:
    def __init__(self, study, out: Path, metrics, figure_formats):
        self.s, self.out, self.metrics, self.formats = study, out, metrics, figure_formats
        self.plan = study.plan
        self.doc = Document("", levels=levels_with(self.plan.alpha))
        self.subjects = study.sql("SELECT * FROM subjects")
        self.qc = study.qc()
        self.has_arms = "arm" in self.subjects and self.plan.control is not None and bool(self.plan.treatments)
        self.arms = self.plan.arms if self.has_arms else []
        self.n_arm = self.subjects.groupby("arm").size().to_dict() if self.has_arms else {}
        self.qc_rule = ("QC-flagged captures excluded" if self.plan.qc == "exclude" else
                        "QC-flagged captures included") + " (as planned)"
        self.ends, self._captures = None, {}
        if self.has_arms:
            try:
                self.ends = study.endpoints()
            except UsageError:
                self.ends = None

    @functools.cached_property
    def problems(self) -> pd.DataFrame:
        """`Study.check()`, once per report (two sections read it)."""
        return self.s.check()

    def in_order(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows by visit in schedule order, then by arm: the control first, the treatments in the plan's
        order (one order in every table)."""
        visits = {v: i for i, v in enumerate(self.s.visits)}
        arms = {a: i for i, a in enumerate(self.arms)}
        keys = {"visit": lambda c: c.map(visits).fillna(len(visits)), "arm": lambda c: c.map(arms).fillna(len(arms))}
        by = [c for c in ("visit", "arm") if c in df]
        return df.sort_values(by, key=lambda c: keys[c.name](c), kind="stable", ignore_index=True) if by else df

    def arm_label(self, arm: str) -> str:
        """An arm with its N, as column headers print it."""
        return f"{arm} (N={self.n_arm.get(arm, 0)})"

    def population(self, what: str = "") -> str:
        """The analysis population line under a table."""
        enrolled = f"{len(self.subjects)} subjects enrolled" if len(self.subjects) else "every subject photographed"
        if self.has_arms:
            enrolled += " (" + ", ".join(self.arm_label(a) for a in self.arms) + ")"
        return f"Population: {what or enrolled}."

    def table(self, df, caption, population="", digits=2):
        return self.doc.table(df, caption, population, digits)

    def section(self, title: str, *parts, kind: str = "") -> None:
        self.doc.section(title, list(parts), kind)

    def figure(self, name: str, fig, caption: str):
        png = charts.png_bytes(fig, dpi=120)  # drawn once: these bytes are embedded and written
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        name = file_name(name, most=60)  # ids and labels become safe names, never paths
        (folder / f"{name}.png").write_bytes(png)
        others = [f for f in self.formats if f != "png"]
        if others:
            charts.save(fig, folder / name, others)
        return self.doc.figure(png, caption, name)

    # ---- sections -------------------------------------------------------------------------------------------
    def findings(self) -> list[str]:
        return [] if self.ends is None else [finding(r, self.ends.attrs) for r in self.ends.itertuples()]

    @refusable("Synopsis and headline findings")
    def synopsis(self):
        p = self.plan
        rows = [("Design", f"{len(p.treatments) + 1}-arm, controlled, repeated photographs" if self.has_arms else
                 "single group, repeated photographs"),
                ("Arms", f"control {self.arm_label(p.control)}; treatments "
                         f"{', '.join(self.arm_label(a) for a in p.treatments)}" if self.has_arms else "none"),
                ("Visits", "; ".join(f"{v.label}" + (f" (day {v.day:g}" + (f" +/- {v.window:g}" if v.window is not None
                                                                         else "") + ")" if v.day is not None else "")
                                     for v in p.visits)),
                ("Baseline", p.baseline),
                ("Primary endpoint", self.endpoint_name(p.primary) if p.primary else "none"),
                ("Key secondary endpoints (testing order)", "; ".join(self.endpoint_name(e) for e in p.secondary)
                 or "none"),
                ("Multiplicity", f"{p.multiplicity.replace('_', ' ')} at alpha {p.alpha:g}"
                 + (f"; arms against the control: {p.arm_comparisons.replace('_', ' ')}" if len(p.treatments) > 1
                    else "")),
                ("Capture QC", f"flagged captures {p.qc}d in the primary analysis; the other way as a sensitivity "
                               "analysis"),
                ("Assumed (not in the plan)", "; ".join(p.assumed) or "nothing")]
        if self.ends is None:
            found = [Text("No between-arm comparison was possible.")]
        elif len(self.plan.treatments) > 1:  # several arms: one row per comparison reads better than sentences
            found = [self.findings_table()]
        else:
            found = [Text(t, "finding") for t in self.findings()]
        self.section("Synopsis and headline findings", *found,
                     self.table(pd.DataFrame(rows, columns=["", "as planned"]), "The study as planned"))

    def endpoint_name(self, e) -> str:
        return f"{metric_info(e.metric)['description'].rstrip('.')} ({e.metric}) at {e.visit}"

    def findings_table(self):
        e, adjusted_p = self.ends, adjusted(self.ends.attrs)
        shown = pd.DataFrame({
            "endpoint": [f"{r.role} {r.order}: {metric_info(r.metric)['description'].rstrip('.')} at {r.visit}"
                         for r in e.itertuples()],
            "comparison": [f"{r.treatment} vs {r.control}" for r in e.itertuples()],
            "estimate (95% CI)": ["" if r.estimate != r.estimate else
                                  f"{r.estimate:.2f} ({r.ci_low:.2f} to {r.ci_high:.2f})"
                                  + (", simultaneous" if r.ci_simultaneous else "") for r in e.itertuples()],
            "p adjusted" if adjusted_p else "p": [fmt_p(r.p_adjusted if adjusted_p else r.p, self.doc.levels)
                                              for r in e.itertuples()],
            "decision": e["decision"]})
        return self.table(shown, "Headline findings: each endpoint and comparison in testing order, with the "
                                 "plan's decision", self.population("each endpoint's analysis set (its n is in the "
                                                                    "endpoints table)"))

    @refusable("Subject disposition")
    def disposition(self):
        s, p = self.s, self.plan
        enrolled = len(self.subjects) or int(s.sql("SELECT count(DISTINCT subject_id) n FROM analyses")["n"][0])
        per_visit = s.sql("SELECT visit, count(DISTINCT subject_id) AS photographed, count(*) AS analyses FROM analyses "
                          "WHERE ok AND subject_id IS NOT NULL GROUP BY visit")
        flagged = self.qc[self.qc["flagged"]].groupby("visit").size().rename("QC-flagged")
        per_visit = per_visit.set_index("visit").join(flagged).fillna({"QC-flagged": 0}).reindex(
            [v for v in s.visits if v in set(per_visit["visit"])]).reset_index().astype({"QC-flagged": int})
        analysed = 0
        if p.primary is not None:
            try:
                analysed = self.s.mmrm(p.primary.metric).n_subjects
            except UsageError:  # said in the primary endpoint's section
                pass
        steps = [("Enrolled", str(enrolled))] + [(f"Photographed {r.visit}", str(r.photographed))
                                                  for r in per_visit.itertuples()]
        steps += [("QC-excluded captures", str(int(self.qc["flagged"].sum()))), ("Analysed (primary)", str(analysed))]
        self.section("Subject disposition", Flow(steps),
                     self.table(per_visit, "Subjects photographed, analyses and QC flags per visit",
                                self.population()))

    @refusable("Baseline and demographics by arm")
    def demographics(self):
        if not self.has_arms:
            return
        s, p = self.s, self.plan
        subj = self.subjects
        rows = {"Subjects": subj.groupby("arm").size().astype(str)}
        if "age" in subj:
            g = subj.groupby("arm")["age"]
            rows["Age, mean (SD)"] = g.mean().map("{:.1f}".format) + " (" + g.std().map("{:.1f}".format) + ")"
        for col in [c for c in ("sex", "skin_type_self") if c in subj]:
            counts = subj.groupby(["arm", col]).size().unstack(fill_value=0)
            rows[col.replace("_", " ").capitalize()] = counts.apply(
                lambda r: ", ".join(f"{k} {v}" for k, v in r.items() if v), axis=1)
        for key in [e.metric for e in p.endpoints]:
            cohort = s.cohort(key)
            base = cohort[cohort["visit"] == p.baseline].set_index("arm")
            if base.empty:  # no value of it at the baseline: its endpoint's section says why
                continue
            rows[f"Baseline {metric_info(key)['description'].rstrip('.').lower()}, mean (SD)"] = \
                base["mean"].map("{:.2f}".format) + " (" + base["sd"].map("{:.2f}".format) + ")"
        df = pd.DataFrame(rows).T.reset_index().rename(columns={"index": ""})
        df = df[[""] + [a for a in self.arms if a in df.columns]].rename(columns={a: self.arm_label(a) for a in self.arms})
        self.section("Baseline and demographics by arm",
                     self.table(df, "Baseline characteristics and demographics by arm", self.population()))

    @refusable("Primary endpoint")
    def primary(self):
        p = self.plan
        if p.primary is None or not self.has_arms:
            return
        key = p.primary.metric
        fit = self.s.mmrm(key)  # one fit per study version, the endpoints' own
        ls = self.in_order(fit.lsmeans[["arm", "visit", "estimate", "std_error", "df", "ci_low", "ci_high"]]).rename(
            columns={"estimate": "LS-mean", **HEADERS})
        diffs = self.in_order(fit.diffs[["visit", "treatment", "control", "estimate", "std_error", "df", "ci_low",
                                         "ci_high", "p"]].rename(columns={"treatment": "arm"})).rename(
            columns={"arm": "treatment", "estimate": "difference", **HEADERS, "p": "p (nominal)"})
        title = metric_info(key)["description"].rstrip(".")
        left = "; ".join(f"{r.subject_id} ({r.reason})" for r in fit.excluded.itertuples())
        who = f"{fit.n_subjects} subjects with a baseline and at least one later value"
        pop = self.population(f"{who}; {fit.n_obs} post-baseline observations; {fit.qc}")
        note = Text(f"{fit.method}." + (f" Left out: {left}." if left else ""), "note")
        self.section(f"Primary endpoint: {title} ({key}) at {p.primary.visit}",
                     self.figure(f"{key}-lsmeans", self.s.plot.lsmeans(fit),
                                 f"{title}: MMRM LS-means of the change with 95% CIs by arm; each mark under the "
                                 "visit names the treatment it compares with the control and its nominal p "
                                 "(* <0.05, ** <0.01, *** <0.001, ns); the decision is the plan's, in the "
                                 "endpoints table."),
                     self.table(ls, "MMRM LS-means of the change from baseline by arm and visit", pop),
                     self.table(diffs, "Treatment minus control (nominal p; the plan's decision is in the endpoints "
                                       "table)", pop), note)

    @refusable("Endpoints in testing order, with the multiplicity decision")
    def secondary(self):
        if self.ends is None or len(self.ends) == 0:
            return
        e = self.ends
        shown = pd.DataFrame({
            "endpoint": [f"{r.order} {r.role}: {metric_info(r.metric)['description'].rstrip('.')} at {r.visit}"
                         for r in e.itertuples()],
            "treatment": e["treatment"], "n": [f"{r.n_treatment:.0f}/{r.n_control:.0f}" if r.n_treatment == r.n_treatment
                                               else "" for r in e.itertuples()],
            "model": [MODEL_NAMES.get(r.model, r.model) + (", Dunnett: simultaneous CI" if r.ci_simultaneous else "")
                      for r in e.itertuples()], "estimate": e["estimate"], "95% CI low": e["ci_low"],
            "95% CI high": e["ci_high"], "p": e["p"], "p adjusted": e["p_adjusted"], "decision": e["decision"]})
        if shown["p adjusted"].isna().all():  # fixed sequence, one treatment: each test is at full alpha
            shown = shown.drop(columns="p adjusted")
        why = [Text(f"Endpoint {r.order} ({r.treatment}): {r.reason}.", "note") for r in e.itertuples()
               if r.decision == "not estimable" and r.reason]
        self.section("Endpoints in testing order, with the multiplicity decision",
                     self.table(shown, f"Endpoints: {self.plan.multiplicity.replace('_', ' ')} at alpha "
                                   f"{self.plan.alpha:g}; estimates are differences (MMRM) or ratios (other models); n is "
                                   "treatment/control",
                                self.population(f"for each endpoint, the subjects with its baseline and visit; "
                                                f"{self.qc_rule}")), *why)

    @refusable(_metric_title)
    def metric(self, key: str):
        s, info = self.s, metric_info(key)
        title = info["description"].rstrip(".")
        cohort = s.cohort(key, exclude_flagged=self.plan.qc == "exclude")
        if cohort.empty:
            return
        cohort = self.in_order(cohort)
        cols = [c for c in ("visit", "arm", "n", "mean", "sd", "change_mean", "change_ci_low", "change_ci_high")
                if c in cohort]
        pct = s.change_from_baseline(key, exclude_flagged=self.plan.qc == "exclude")
        pct = pct[~pct["is_baseline"].astype(bool)].merge(self.subjects[["subject_id", "arm"]] if self.has_arms
                                                          else pct[["subject_id"]].assign(arm="all"), on="subject_id")
        pct = self.in_order(pct.groupby(["visit", "arm"], sort=False)["pct_change"].agg(["count", "mean", "median"])
                            .reset_index())
        pop = self.population(f"subjects with a value at the visit; {self.qc_rule}")
        parts = [self.figure(f"{key}-trend", s.plot.trend(key, self.plan.qc == "exclude"),
                             f"{title}: each subject's values (thin) and the mean with its 95% CI by arm (bold)."),
                 self.table(cohort[cols].rename(columns={"change_mean": "change", "change_ci_low": "change 95% CI low",
                                                         "change_ci_high": "change 95% CI high"}),
                            f"{title}: values and change from baseline (baseline rows are no change)", pop),
                 self.table(pct.rename(columns={"count": "n", "mean": "mean % change", "median": "median % change"}),
                            f"{title}: percent change from baseline", pop)]
        threshold = self.plan.responders.get(key)
        if threshold is not None and self.has_arms and self.plan.schedule[-1] in s.visits:  # held yet
            parts.append(self.responders(key, title, pop))
        self.section(f"{title} ({key}; {info['unit']}; {info['better']} is better)", *parts)

    def responders(self, key: str, title: str, pop: str):
        """The table of responders between the arms, or why there is none (an arm without a subject there)."""
        try:
            r = self.s.responders_between(key)
        except UsageError as e:
            return Text(f"{title}: responders not estimable in this study: {e}", "note")
        short = {"treatment": "arm", "responders_treatment": "responders", "n_treatment": "n",
                 "responders_control": "control responders", "n_control": "control n",
                 "risk_difference": "difference", "rd_ci_low": "95% CI low", "rd_ci_high": "95% CI high",
                 "odds_ratio": "odds ratio", "p_fisher": "p"}
        shown = self.in_order(r[["visit", "threshold", *short]].rename(columns=short))
        shown["threshold"] = [f"{t:g} {metric_info(key)['unit']}" if isinstance(t, (int, float)) else str(t)
                              for t in shown["threshold"]]
        return self.table(shown, f"{title}: responders (risk difference with Newcombe's 95% CI; Fisher's exact p, "
                                 "nominal: the plan's decisions are in the endpoints table)", pop)

    @refusable("Measures beside the photographs")
    def measures(self):
        """The measures beside the photos (skintrack.tables.measures): what each is, the agreement between
        raters, and the share of subjects agreeing with each questionnaire item."""
        held = self.s.sql("SELECT measure, count(*) AS readings, count(DISTINCT subject_id) AS subjects, "
                          "count(DISTINCT rater) AS raters FROM measures GROUP BY measure ORDER BY measure")
        if held.empty:
            return
        info = [metric_info(f"measure.{m}") for m in held["measure"]]
        listed = pd.DataFrame({"measure": [i["description"].rstrip(".") for i in info], "key": [i["key"] for i in info],
                               "unit": [i["unit"] for i in info], "type": [i["type"] for i in info],
                               "readings": held["readings"], "subjects": held["subjects"], "raters": held["raters"]})
        parts = [self.table(listed, "Measures of this study beside the photographs", self.population())]
        raters = self.s.raters()
        if len(raters):
            raters = raters.assign(metric=[metric_info(m)["description"].rstrip(".") for m in raters["metric"]])
            parts.append(self.table(raters.rename(columns=HEADERS),
                                    "Agreement between raters: ICC(2,1) (two-way random, absolute agreement) and "
                                    "quadratic-weighted kappa, over the visits every rater graded",
                                    self.population("the subject visits every rater graded")))
        likert = [i["key"] for i in info if i.get("agree")]
        if likert:
            t = self.in_order(self.s.claims(likert))
            shown = pd.DataFrame({
                "item": [metric_info(m)["description"].rstrip(".") for m in t["metric"]], "arm": t["arm"],
                "visit": t["visit"], "n": t["n"],
                "agreeing (95% CI)": [f"{int(k)}/{n} ({pct:.0f}%; {lo:.0f}% to {hi:.0f}%)" for k, n, pct, lo, hi in
                                      zip(t["agreeing"], t["n"], t["agreeing_pct"], t["agreeing_ci_low"],
                                          t["agreeing_ci_high"])]})
            parts.append(self.table(shown, "Self-assessment: subjects agreeing (Wilson 95% CI)",
                                    self.population("subjects who answered at the visit")))
        self.section("Measures beside the photographs", *parts,
                     "A subject's value of a measure at a visit is the mean of its readings there (raters, replicates, "
                     "sides). Within-arm shares of agreement are descriptive, like the claim table.")

    def illustrated(self, candidates: list) -> tuple[list, str]:
        """The subjects the plan's illustration rule picks among `candidates` (subjects with photographs at
        both visits), and the rule in words."""
        rule = self.plan.illustration
        if rule.get("subjects"):
            named = [x for x in rule["subjects"] if x in candidates]
            missing = [x for x in rule["subjects"] if x not in candidates]
            return named, ("the subjects the plan names (" + ", ".join(rule["subjects"]) + ")" + (
                f"; without photographs at both visits: {', '.join(missing)}" if missing else ""))
        per_arm, seed = int(rule.get("per_arm", 2)), int(rule.get("seed", 1))
        import numpy as np

        rng, picked = np.random.default_rng(seed), []
        arm_of = self.subjects.set_index("subject_id")["arm"].to_dict() if self.has_arms else {}
        for arm in self.arms or [None]:
            pool = sorted(x for x in candidates if arm is None or arm_of.get(x) == arm)
            picked += sorted(rng.choice(pool, size=min(per_arm, len(pool)), replace=False).tolist()) if pool else []
        said = "the plan's rule" if rule else "skintrack's default rule (the plan names none)"
        return picked, (f"{said}: {per_arm} subject{'s' if per_arm > 1 else ''} {'per arm ' if self.arms else ''}drawn "
                        f"at random (seed {seed}) among those photographed at both visits, whatever their response")

    def captures(self, map_name: str | None = None) -> pd.DataFrame:
        """The latest successful capture of each subject at each visit that has a photograph or the face map
        `map_name`, indexed by (subject_id, visit): its photo and SHA-256, its face box (`box`) and the map's
        file (`layer`); kept per map for the report's sections and subject pages."""
        if map_name not in self._captures:
            caps = self.s.sql("""SELECT a.subject_id, a.visit, a.photo, a.photo_sha256, a.face_left, a.face_top,
                                        a.face_width, a.face_height, m.path AS layer FROM analyses a
                                 LEFT JOIN maps m ON m.analysis_id = a.analysis_id AND m.name = ?
                                 WHERE a.ok AND a.subject_id IS NOT NULL AND (a.photo IS NOT NULL OR m.path IS NOT NULL)
                                 ORDER BY a.taken_at""", [map_name])
            caps = caps.groupby(["subject_id", "visit"]).tail(1).set_index(["subject_id", "visit"])
            caps["box"] = list(zip(caps["face_left"], caps["face_top"], caps["face_width"], caps["face_height"]))
            self._captures[map_name] = caps
        return self._captures[map_name]

    @refusable("Photographs")
    def photographs(self):
        """The study's own photographs side by side, baseline and the primary endpoint's visit, cropped to the
        API's face box, the endpoint's own map over them where the API returned one; the subjects are the
        plan's illustration rule's, never chosen by their response."""
        s, p = self.s, self.plan
        key = p.primary.metric if p.primary else None
        visit = p.primary.visit if p.primary else (s.visits[-1] if s.visits else None)
        map_name = charts.ENDPOINT_MAPS.get(metric_info(key)["feature"]) if key else None
        caps = self.captures(map_name)
        caps = caps[caps.index.get_level_values("visit").isin([p.baseline, visit])]
        title = f"Photographs at {p.baseline} and {visit}"
        if caps.empty or visit is None or visit == p.baseline:
            self.section(title, "This study holds no photographs of its captures (the envelope skintrack analyze "
                                "archives beside each response records its photo's path and SHA-256) and no face "
                                "map of the primary endpoint.")
            return
        held = caps.index.to_frame(index=False).groupby("subject_id")["visit"].nunique()
        picked, rule = self.illustrated(sorted(held[held == 2].index))
        arm_of = self.subjects.set_index("subject_id")["arm"] if self.has_arms else pd.Series(dtype=str)
        parts, withheld = [Text(f"Subjects shown: {rule}.")], []
        for sid in picked:
            shown = [caps.loc[(sid, v)] for v in (p.baseline, visit)]
            bad = [v for v, c in zip((p.baseline, visit), shown) if not photo_intact(c["photo"], c["photo_sha256"])]
            if bad:
                withheld.append(f"{sid} ({', '.join(bad)})")
                continue
            layers = [s.path / c["layer"] if isinstance(c["layer"], str) else None for c in shown]
            arm = f" ({arm_of[sid]})" if sid in arm_of.index else ""
            parts.append(self.figure(f"photos-{sid}", charts.photo_pair(
                [c["photo"] if isinstance(c["photo"], str) else None for c in shown], [c["box"] for c in shown],
                [p.baseline, visit], layers, map_name),
                f"Subject {sid}{arm}: " + ("photographs" if all(isinstance(c["photo"], str) for c in shown) else
                                          "the API's face maps") + f" at {p.baseline} and {visit}, cropped to the API's "
                "face box" + (f", the {map_name.replace('_', ' ')} map of the endpoint over them"
                              if any(x is not None for x in layers) else "") + "."))
        if withheld:
            parts.append(Text("Not shown, because the photograph's bytes no longer match the SHA-256 recorded when it "
                              f"was analysed: {'; '.join(withheld)}.", "note"))
        self.section(title, *parts)

    @refusable("Capture quality and visit windows")
    def quality(self):
        overview = self.figure("qc_overview", charts.qc_overview(self.qc), "Capture-quality flags by visit.") \
            if self.qc["flagged"].any() else ""  # nothing flagged: nothing to draw
        flagged = self.qc[self.qc["flagged"]][["subject_id", "visit", "reasons"]].copy()
        flagged["reasons"] = [", ".join(f"{r} ({FLAGS[r]})" for r in rs.split(", ")) for rs in flagged["reasons"]]
        every = self.population(f"every capture analysed ({len(self.qc)})")
        parts = [self.table(self.in_order(flagged), "Captures flagged by QC", every) if len(flagged)
                 else "No capture was flagged."]
        windows = self.problems
        windows = windows[windows["problem"].str.contains("outside the window", regex=False)]
        parts.append(self.table(windows.rename(columns={"where": "capture"}), "Captures outside their visit window",
                                every)
                     if len(windows) else f"Every capture was within its visit window (windows: {self.plan.windows}).")
        self.section("Capture quality and visit windows", overview, *parts)

    @refusable("Claim table: change from baseline per arm and visit")
    def claims(self):
        """The claim table of the plan's endpoints: % change from baseline, p against baseline, improved."""
        if not self.plan.endpoints:
            return
        t = self.in_order(self.s.claims())
        shown = pd.DataFrame({
            "metric": [metric_info(m)["description"].rstrip(".") for m in t["metric"]], "arm": t["arm"],
            "visit": t["visit"], "n": t["n"],
            "mean % change (95% CI)": [_pct_change(*r) for r in zip(t["mean_pct_change"], t["pct_ci_low"],
                                                                     t["pct_ci_high"], t["pct_n"], t["n"])],
            "p against baseline": [fmt_p(p, self.doc.levels) for p in t["p"]],
            "improved": [f"{int(k)}/{n} ({pct:.0f}%)" if k == k else "" for k, n, pct in
                         zip(t["improved"], t["n"], t["improved_pct"])]})
        self.section("Claim table: change from baseline per arm and visit",
                     self.table(shown, "Claim table of the planned endpoints",
                                self.population(f"subjects with the endpoint's baseline and visit; {self.qc_rule}")),
                     "Mean % change from baseline with its 95% t interval; p of the change against baseline by "
                     "the paired t-test, each visit's own and unadjusted (descriptive: the endpoints above carry "
                     "the confirmatory tests); improved: subjects whose value moved in the better direction, by "
                     "any amount.")

    @refusable("Instrument: API generations and drift")
    def instrument(self):
        """Which API generations measured the study, what the sentinel saw, and the decisions taken."""
        s = self.s
        gens = s.generations()
        shown = gens.assign(first=gens["first"].dt.strftime("%Y-%m-%d"), last=gens["last"].dt.strftime("%Y-%m-%d"))
        parts = [self.table(shown.rename(columns={"api_generation": "API generation", "basis": "inferred from"}),
                            "API generations that measured the study (from each response's shape and call date)",
                            self.population(f"every analysis in the study ({int(gens['analyses'].sum())})")
                            if "analyses" in gens else "")]
        if len(gens) > 1:
            parts.append("More than one generation measured this study: a change between them is partly the "
                         "instrument's. The sensitivity analyses restrict the primary endpoint to one generation and "
                         "bridge the others onto it.")
            bridged = s.bridge()
            if len(bridged):
                parts.append(self.table(bridged.head(12)[["metric", "from_generation", "to_generation", "photos", "offset",
                                                     "ci_low", "ci_high"]].rename(columns={
                    "ci_low": "95% CI low", "ci_high": "95% CI high"}),
                    "Largest offsets between generations, from photos analysed under both"))
        table_ = s.drift()
        if table_.empty:
            parts.append("No sentinel panel was sent with this study's batches (skintrack analyze --sentinel), "
                         "so a silent change of the API's model could only be seen in the generations above.")
        else:
            runs = table_.groupby(["batch", "position", "reference"], sort=False).agg(
                metrics=("metric", "size"), moved=("moved", "sum"), exceeding=("exceeds_mdc", "sum"),
                generation=("generation", "first")).reset_index()
            events = s.sql("SELECT batch, event, detail FROM instrument")
            runs["decision"] = [", ".join(events.loc[events["batch"] == b, "event"]) or (
                "nothing moved beyond its MDC" if not x else "stopped before the batch's study photos"
                if pos == "start" else "the batch's analyses straddle a change")
                for b, pos, x in zip(runs["batch"], runs["position"], runs["exceeding"])]
            parts.append(self.table(runs, "Sentinel runs against the reference run: metrics compared, metrics whose "
                                     "values moved, and metrics whose shift exceeds the MDC"))
            mdc = table_.drop_duplicates("metric").set_index("metric")
            keys = [k for k in dict.fromkeys([e.metric for e in self.plan.endpoints] + list(self.metrics))
                    if k in mdc.index]
            if keys:
                parts.append(self.table(mdc.loc[keys, ["photos", "sem", "mdc", "noise"]].reset_index().rename(columns={
                    "sem": "SEM", "mdc": "smallest shift detected (MDC)", "noise": "noise floor from"}),
                    "The sentinel's detection limit for the endpoints' metrics", ))
        found = self.problems
        found = found[found["problem"].str.contains("generation|instrument change", regex=True)]
        if len(found):
            parts.append(self.table(found, "Values that straddle an instrument change"))
        self.section("Instrument: API generations and drift", *parts)

    @refusable("Sensitivity analyses of the primary endpoint")
    def sensitivity(self):
        p = self.plan
        if p.primary is None or not self.has_arms:
            return
        table_ = self.s.sensitivity()
        primary = table_[table_["analysis"].str.startswith("primary")].set_index("treatment")
        same = [r.analysis != primary.at[r.treatment, "analysis"] and r.estimate == primary.at[r.treatment, "estimate"]
                and r.std_error == primary.at[r.treatment, "std_error"] for r in table_.itertuples()]
        table_ = table_[[not x for x in same]]  # a row equal to the primary (e.g. nothing was QC-flagged) says nothing
        shown = table_[["analysis", "treatment", "estimate", "ci_low", "ci_high", "p", "p_adjusted", "decision"]]
        shown = shown.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high", "p_adjusted": "p adjusted"})
        if shown["p adjusted"].equals(shown["p"]):  # one treatment in a fixed sequence: tested at full alpha
            shown = shown.drop(columns="p adjusted")
        notes = [Text(f"{r.analysis}: {r.note}.", "note") for r in table_.itertuples()
                 if r.note and not r.analysis.startswith("primary")]
        self.section("Sensitivity analyses of the primary endpoint",
                     self.table(shown, f"{self.endpoint_name(p.primary)}: the primary analysis and its sensitivity "
                                       "analyses", self.population(f"as each analysis says; {self.qc_rule} in the "
                                                                   "primary analysis")), *notes)

    @refusable("Estimand (ICH E9(R1))")
    def estimand(self):
        p = self.plan
        if p.primary is None or not self.has_arms:
            return
        info = metric_info(p.primary.metric)
        strategies = p.estimand.get("strategies", {})
        rows = [("Population", p.estimand.get("population") or "randomised subjects with a usable baseline and at "
                 "least one later value of the endpoint (the MMRM's subjects)"),
                ("Variable", p.estimand.get("variable") or f"change from baseline ({p.baseline}) in "
                 f"{info['description'].rstrip('.').lower()} at {p.primary.visit}"),
                ("Treatment", f"{', '.join(p.treatments)} against {p.control}"),
                ("Intercurrent event: a capture excluded by QC", "hypothetical (as if taken well; missing at random)"
                 if p.qc == "exclude" else "treatment policy (analysed as taken)"),
                ("Intercurrent event: a missed or out-of-window visit", "hypothetical (missing at random)"),
                ("Intercurrent event: discontinuation", strategies.get("discontinuation", "").replace("_", " ")),
                ("Intercurrent event: rescue product use", strategies.get("rescue", "").replace("_", " ")),
                ("Population-level summary", p.estimand.get("summary") or "difference between the arms in the LS-mean "
                 "change from baseline (MMRM), with its 95% confidence interval")]
        self.section("Estimand (ICH E9(R1))", self.table(pd.DataFrame(rows, columns=["attribute", "as planned"]),
                                                         "The estimand of the primary endpoint"),
                     "The primary analysis assumes the values it does not have are missing at random (MAR), given "
                     "each subject's arm, baseline and observed values; the sensitivity analyses test that "
                     "assumption.")

    @refusable(lambda sid: f"Subject {sid}")
    def subject_page(self, sid: str):
        s = self.s
        prof = s.sql("""SELECT m.metric, arg_min(m.value, a.taken_at) AS baseline, arg_max(m.value, a.taken_at) AS latest
                        FROM metrics m JOIN analyses a USING (analysis_id)
                        WHERE a.subject_id = ? AND a.ok AND m.metric LIKE 'score.%' AND m.metric NOT LIKE 'score.%.%'
                        GROUP BY m.metric ORDER BY m.metric""", [sid])
        if prof.empty:
            raise UsageError(f"subject {sid!r} has no analyses in this study")
        values = s.sql("""SELECT a.visit, m.metric, m.value FROM metrics m JOIN analyses a USING (analysis_id)
                          WHERE a.subject_id = ? AND a.ok AND m.metric IN (SELECT unnest(?::VARCHAR[]))""",
                       [sid, list(self.metrics)])
        wide = values.pivot_table(index="metric", columns="visit", values="value", aggfunc="last")
        wide = wide[[v for v in s.visits if v in wide.columns]].reset_index()
        arm = self.subjects.loc[self.subjects["subject_id"] == sid, "arm"] if "arm" in self.subjects else pd.Series()
        seen = s.sql("SELECT visit, min(taken_at) AS taken FROM analyses WHERE subject_id = ? AND ok GROUP BY visit",
                     [sid]).set_index("visit")["taken"]
        about = (f"Arm: {arm.iloc[0] if len(arm) else 'not assigned'}. Visits: " + ", ".join(
            f"{v} ({seen[v]:%Y-%m-%d})" if v in seen and seen[v] == seen[v] else v for v in s.visits if v in seen) + ".")
        self.section(f"Subject {sid}", about,
                     self.figure(f"subject-{sid}-trend", charts.subject_trend(values, sid, list(s.visits)),
                                 f"Subject {sid}: each reported metric over the visits."),
                     self.table(wide, f"Subject {sid}: values by visit", digits=1),
                     self.subject_photos(sid),
                     self.figure(f"subject-{sid}-profile", charts.score_profile(prof, sid),
                                 f"Subject {sid}: every health score at baseline and at the latest visit."),
                     kind="subject")

    def subject_photos(self, sid: str):
        """The subject's photographs at every visit that has one whose bytes still match (None when none)."""
        caps = self.captures()
        caps = caps[caps.index.get_level_values("subject_id") == sid].droplevel("subject_id")
        caps = caps.reindex([v for v in self.s.visits if v in caps.index])
        caps = caps[[photo_intact(r.photo, r.photo_sha256) for r in caps.itertuples()]]
        if caps.empty:
            return None
        return self.figure(f"subject-{sid}-photos", charts.photo_pair(
            caps["photo"].tolist(), caps["box"].tolist(), caps.index.tolist()),
            f"Subject {sid}: photographs at {', '.join(caps.index)}, cropped to the API's face box.")

    @refusable("Methods, software and data")
    def methods(self, data_version: str):
        p, n_flag = self.plan, int(self.qc["flagged"].sum())
        import duckdb
        import numpy
        import scipy
        import statsmodels

        text = (
            "Photos were analysed by the Skin Analyze Pro API; its responses were ingested losslessly by "
            "skintrack. The API generation of each response was inferred from its shape and its call date; the "
            f"analyses come from {', '.join(self.s.generations()['api_generation'])}. For each subject and visit the latest successful analysis was used. The baseline is the "
            f"plan's baseline visit ({p.baseline}); subjects without a usable baseline are left out "
            f"of change analyses and listed; change is the later value minus the baseline value. {n_flag} captures "
            "were flagged by capture QC (head pose beyond the API's limits, a face box under 400 px, glasses, hair or "
            "camera distance unlike baseline, abnormal lighting, a tone shift beyond the noise floor) and handled as "
            f"the plan says ({p.qc}d in the primary analysis). Captures were taken at their visits by the plan's "
            f"windows rule ({p.windows}). Continuous endpoints were analysed by a mixed model for "
            f"repeated measures of the change on baseline, arm, visit and arm by visit, {p.covariance} "
            f"covariance, REML, {p.df} degrees of freedom (LS-means at the mean baseline); a structure "
            "that cannot be fitted falls back to a heterogeneous one with empirical (CR2) standard errors, and the "
            "endpoint's table says so. Counts were analysed by negative binomial, grades by proportional-odds and "
            "flags by logistic regression (Firth's penalised likelihood when an arm's flags are perfectly "
            "predicted), each on arm and baseline. Missing values are assumed missing at random in the primary "
            "analysis; multiple imputation under MAR, jump to reference, copy reference and a delta tipping point "
            "test the assumption. The endpoints were tested in this order: "
            f"{self.ends.attrs['testing_order'] if self.ends is not None else 'none'}. Every other "
            "p-value is two-sided and unadjusted. All intervals are 95%. " + ROUNDING)
        versions = pd.DataFrame([("skintrack", __version__), ("Python", platform.python_version()),
                                 ("numpy", numpy.__version__), ("scipy", scipy.__version__),
                                 ("statsmodels", statsmodels.__version__), ("pandas", pd.__version__),
                                 ("DuckDB", duckdb.__version__), ("data", data_version),
                                 ("study folder", str(self.s.path))], columns=["software and data", "version"])
        self.section("Methods, software and data", text,
                     self.table(versions, "Software and data versions"), kind="keep")


def photo_intact(path, sha256) -> bool:
    """Whether a capture's photo may be shown: there is none to check (a face map alone), or its file is at hand
    and its bytes match the SHA-256 recorded when it was analysed."""
    if not isinstance(path, str):
        return True
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def data_version(study) -> str:
    """The data the report was computed from: the study version (`skintrack report --version N` reproduces
    it), the analyses held and a hash of their ids."""
    ids = study.sql("SELECT analysis_id FROM analyses ORDER BY analysis_id")
    digest = hashlib.sha256("".join(ids["analysis_id"]).encode()).hexdigest()[:12]
    return f"{study.version_note}: {len(ids)} analyses, content {digest}"


def build_report(study, out, metrics=None, subject=None, pdf: bool = True, title: str | None = None,
                 paper: str = "a4", figure_formats=("png",), names: dict | None = None, docx: bool = True) -> Report:
    """Write `report.html` (self-contained), `report.pdf` (paged, A4 or Letter), `report.docx` (the same
    numbered tables and figures, for a medical writer to edit) and every figure into `out`.

    Title, sponsor, product and protocol come from the plan unless given (`title`, `names`)."""
    import time

    t0 = time.perf_counter()
    out = store.check_output(study.path, out)
    metrics = study.metric_list(metrics or DEFAULT_METRICS)
    if paper not in PAPER:
        raise UsageError(f"paper {paper!r}: use a4 or letter")
    subjects = [subject] if isinstance(subject, str) else list(subject or [])
    _check_subjects(study, subjects)
    out.mkdir(parents=True, exist_ok=True)  # once every argument is checked
    b = _Builder(study, out, metrics, tuple(figure_formats))
    version = data_version(study)
    b.synopsis()
    b.disposition()
    b.demographics()
    b.estimand()
    b.primary()
    b.secondary()
    for key in metrics:
        b.metric(key)
    b.claims()
    b.measures()
    b.photographs()
    b.quality()
    b.instrument()
    b.sensitivity()
    for sid in subjects:
        b.subject_page(sid)
    b.methods(version)
    given = {k: v for k, v in (names or {}).items() if v}
    plan = dataclasses.replace(study.plan, **given) if given else study.plan
    doc = b.doc
    doc.title = title or plan.title or f"Skin study report: {study.path.name}"
    doc.facts = [("Sponsor", plan.sponsor), ("Product", plan.product), ("Protocol", plan.protocol),
                 ("Plan version", plan.version), ("Report date", dt.date.today().isoformat()),
                 ("Data", version), ("Software", f"skintrack {__version__}")]
    doc.facts = [(k, v) for k, v in doc.facts if v]
    doc.approvals = ["Prepared by (biostatistician)", "Reviewed by (medical writer)", "Approved by (sponsor)"]
    simulated = int(study.sql("SELECT count(*) AS n FROM extras WHERE path = 'simulated'")["n"].iloc[0])
    doc.notice = (f"{simulated} of the responses in this study say they were simulated (skintrack.sample); no real "
                  "person is behind them.") if simulated else ""
    doc.header = " | ".join(x for x in (doc.title, plan.sponsor, plan.product, plan.protocol,
                                        f"plan version {plan.version}" if plan.version else "") if x)
    doc.footer = f"Generated {dt.date.today().isoformat()} by skintrack {__version__} | data: study version {study.version}"
    html_path = out / "report.html"
    html_path.write_text(render_html(doc, PAPER[paper]), encoding="utf-8")
    report = Report(html_path, None, [f.name for f in doc.figures], b.findings(), document=doc)
    if docx:
        from .word import write_docx

        report.docx = write_docx(doc, out / "report.docx", paper)
    if pdf:
        report.pdf, report.pdf_engine = _pdf(html_path)
    report.seconds = time.perf_counter() - t0
    return report


def _check_subjects(study, subjects: list) -> None:
    """A `UsageError` naming the subjects asked for a page of their own that the study does not know (a typo
    gave a report whose page said only that)."""
    known = study.subject_ids()
    unknown = [s for s in subjects if s not in known]
    if unknown:
        some = sorted(known)
        raise UsageError(f"subject {', '.join(map(repr, unknown))}: not in this study (subjects: "
                         f"{', '.join(some[:10]) or 'none'}{', ...' if len(some) > 10 else ''})")


def render_html(doc: Document, paper: str) -> str:
    """The document as one self-contained HTML page (figures as data URIs), print CSS for the PDF."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("skintrack.show", "templates"), autoescape=select_autoescape(["j2"]),
                      finalize=lambda v: v if isinstance(v, Markup) or not isinstance(v, str) else html_text(v))
    env.filters["css"] = css_string
    env.filters["b64"] = lambda data: base64.b64encode(data).decode()
    env.globals["flow"] = lambda steps: Markup(charts.flow_diagram(steps))  # escapes its own text
    return env.get_template("report.html.j2").render(doc=doc, paper=paper)


def chromium() -> str | None:
    """The headless browser that prints the PDF, if one is installed."""
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio")


def _pdf(html_path: Path) -> tuple[Path | None, str]:
    """Print the HTML with Chromium (the page CSS gives the header, the footer and "page X of Y")."""
    exe = chromium()
    if exe is None:
        raise UsageError("printing the PDF needs Chromium (apt-get install chromium); or pass --no-pdf")
    pdf_path = html_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                               f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not pdf_path.exists():
        raise UsageError(f"Chromium could not print {html_path} ({proc.stderr.strip()[-200:]})")
    return pdf_path, "chromium"
