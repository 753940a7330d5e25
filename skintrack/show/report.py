"""`skintrack report`: a dossier-ready trial report, HTML from a Jinja2 template and a paged PDF of it.

The HTML is the single source: every figure is embedded (PNG data URIs), tables are pandas Stylers, and
print CSS gives A4 (or Letter) pages with a running header (title, sponsor, product, protocol, plan
version) and a footer (date, data version, "page X of Y"), which headless Chromium prints to PDF. The
sections follow the study plan: synopsis, subject disposition with a flow diagram, baseline and
demographics by arm, the primary endpoint (MMRM LS-means, differences and a chart of the same fit), the
key secondary endpoints in testing order with their decisions, % change and responders, before/after
face maps, the QC listing and the plan's sensitivity analysis, methods written from what was run, and the
software and data versions. Each chart is drawn once.

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
import hashlib
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import __version__
from ..analysis.qc import FLAGS
from ..errors import UsageError
from ..sinks import css_string, file_name
from ..sinks import html as escape_html
from ..tables.catalog import metric_info
from . import charts

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
    pdf_engine: str = ""
    seconds: float = 0.0


def _fmt_p(p) -> str:
    if p is None or p != p:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table(df: pd.DataFrame, caption: str = "", digits: int = 2, text: bool = False) -> str:
    """A table for the dossier: pandas' Styler (numbers to `digits`, a column of whole numbers such as scores
    and counts without decimals, p-values as p, no index), captioned."""
    def number(places):
        return lambda x: "" if x != x else f"{x:.{places}f}"

    def whole(c) -> bool:
        v = df[c].dropna()
        return len(v) > 0 and bool(((v % 1) == 0).all())

    fmt = {c: _fmt_p if c == "p" or c.startswith("p ") else number(0 if whole(c) else digits) for c in df.columns
           if pd.api.types.is_float_dtype(df[c])}
    styler = df.style.hide(axis="index").format(fmt, na_rep="", escape="html").format_index(escape="html", axis=1)
    if caption:
        styler = styler.set_caption(escape_html(caption))
    return styler.set_table_attributes(f'class="{"text" if text else "num"}"').to_html()


def finding(row, attrs) -> str:
    """One endpoint's result in a sentence that says how it was tested and what was decided."""
    info = metric_info(row.metric)
    title = info["description"].rstrip(".")
    how = (f"{MODEL_NAMES[row.model]}, {'fixed-sequence' if attrs['strategy'] == 'fixed_sequence' else 'Holm'} "
           f"testing at alpha {attrs['alpha']:g}")
    head = f"{row.role.capitalize()} endpoint {row.order}, {title} at {row.visit} ({how})"
    if row.decision == "not tested":
        return (f"{head}: {row.treatment} against {row.control} not tested, because an earlier comparison in the "
                "sequence was not significant.")
    if row.decision == "not estimable":
        return f"{head}: {row.treatment} against {row.control} {row.reason}."
    adjusted = attrs["strategy"] == "holm" or attrs.get("arm_comparisons", "none") != "none"
    p = _fmt_p(row.p_adjusted if adjusted else row.p)
    digits = 1 if row.model == "mmrm" else 2
    level = "simultaneous 95% CI" if attrs.get("arm_comparisons") == "dunnett" else "95% CI"
    tail = (f"({level} {row.ci_low:.{digits}f} to {row.ci_high:.{digits}f}; "
            f"{'adjusted ' if adjusted else ''}p {p}): {row.decision}.")
    if row.model != "mmrm":
        ratio = "rate ratio" if row.model == "negative_binomial" else "odds ratio"
        return f"{head}: {row.treatment} against {row.control}, {ratio} {row.estimate:.2f} {tail}"
    better = (row.estimate > 0) == (info["better"] == "higher")
    verb = ("improved it by" if better else "worsened it by") if info["better"] != "none" else "changed it by"
    return f"{head}: {row.treatment} {verb} {abs(row.estimate):.1f} {info['unit']} more than {row.control} {tail}"


class _Builder:
    def __init__(self, study, out: Path, metrics, figure_formats):
        self.s, self.out, self.metrics, self.formats = study, out, metrics, figure_formats
        self.plan = study.plan
        self.sections: list[dict] = []
        self.figures: list[str] = []
        self.subjects = study.sql("SELECT * FROM subjects")
        self.qc = study.qc()
        self.has_arms = "arm" in self.subjects and self.plan.control is not None and bool(self.plan.treatments)
        self.ends, self._fits = None, {}
        if self.has_arms:
            try:
                self.ends = study.endpoints()
            except UsageError:
                self.ends = None

    def in_order(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows by visit in schedule order, then by arm: the control first, the treatments in the plan's
        order (one order in every table)."""
        visits = {v: i for i, v in enumerate(self.s.visits)}
        arms = {a: i for i, a in enumerate([self.plan.control, *self.plan.treatments]) if a}
        keys = {"visit": lambda c: c.map(visits).fillna(len(visits)), "arm": lambda c: c.map(arms).fillna(len(arms))}
        by = [c for c in ("visit", "arm") if c in df]
        return df.sort_values(by, key=lambda c: keys[c.name](c), kind="stable", ignore_index=True) if by else df

    def section(self, title: str, *parts: str, kind: str = "") -> None:
        self.sections.append({"title": title, "parts": [p for p in parts if p], "kind": kind})

    def figure(self, name: str, fig, caption: str) -> str:
        png = charts.png_bytes(fig, dpi=120)  # drawn once: these bytes are embedded and written
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        name = file_name(name, most=60)  # ids and labels become safe names, never paths
        (folder / f"{name}.png").write_bytes(png)
        others = [f for f in self.formats if f != "png"]
        if others:
            charts.save(fig, folder / name, others)
        self.figures.append(name)
        return (f'<figure><img alt="{escape_html(caption)}" src="data:image/png;base64,'
                f'{base64.b64encode(png).decode()}"><figcaption>{escape_html(caption)}</figcaption></figure>')

    # ---- sections -------------------------------------------------------------------------------------------
    def findings(self) -> list[str]:
        return [] if self.ends is None else [finding(r, self.ends.attrs) for r in self.ends.itertuples()]

    def synopsis(self):
        p = self.plan
        rows = [("Design", f"{len(p.treatments) + 1}-arm, controlled, repeated photographs" if self.has_arms else
                 "single group, repeated photographs"),
                ("Arms", f"control {p.control}; treatments {', '.join(p.treatments)}" if self.has_arms else "none"),
                ("Visits", "; ".join(f"{v.label}" + (f" (day {v.day:g}" + (f" +/- {v.window:g}" if v.window is not None
                                                                         else "") + ")" if v.day is not None else "")
                                     for v in p.visits)),
                ("Baseline", p.baseline),
                ("Primary endpoint", f"{p.primary.metric} at {p.primary.visit}" if p.primary else "none"),
                ("Key secondary endpoints (testing order)", "; ".join(f"{e.metric} at {e.visit}" for e in p.secondary)
                 or "none"),
                ("Multiplicity", f"{p.multiplicity.replace('_', ' ')} at alpha {p.alpha:g}"),
                ("Capture QC", f"flagged captures {p.qc}d in the primary analysis; the other way as a sensitivity "
                               "analysis"),
                ("Assumed (not in the plan)", "; ".join(p.assumed) or "nothing")]
        findings = "".join(f'<p class="finding">{escape_html(t)}</p>' for t in self.findings()) or \
            "<p>No between-arm comparison was possible.</p>"
        self.section("Synopsis and headline findings", findings,
                     table(pd.DataFrame(rows, columns=["", "as planned"]), text=True))

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
            fit = self._fit(p.primary.metric)
            analysed = fit.n_subjects if fit is not None else 0
        steps = [("Enrolled", str(enrolled))] + [(f"Photographed {r.visit}", str(r.photographed))
                                                  for r in per_visit.itertuples()]
        steps += [("QC-excluded captures", str(int(self.qc["flagged"].sum()))), ("Analysed (primary)", str(analysed))]
        self.section("Subject disposition", charts.flow_diagram(steps),
                     table(per_visit, "Subjects photographed, analyses and QC flags per visit"))

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
            rows[f"Baseline {metric_info(key)['description'].rstrip('.').lower()}, mean (SD)"] = \
                base["mean"].map("{:.1f}".format) + " (" + base["sd"].map("{:.1f}".format) + ")"
        df = pd.DataFrame(rows).T.reset_index().rename(columns={"index": ""})
        self.section("Baseline and demographics by arm", table(df[[""] + [a for a in [p.control, *p.treatments]
                                                                          if a in df.columns]], text=True))

    def _fit(self, key, exclude_flagged=None):
        """The MMRM of `key` (QC as the plan says, or as asked), fitted once per report."""
        flag = self.plan.qc == "exclude" if exclude_flagged is None else exclude_flagged
        if (key, flag) not in self._fits:
            try:
                self._fits[(key, flag)] = self.s.mmrm(key, exclude_flagged=flag)
            except UsageError:
                self._fits[(key, flag)] = None
        return self._fits[(key, flag)]

    def primary(self):
        p = self.plan
        if p.primary is None or not self.has_arms:
            return
        key = p.primary.metric
        fit = self._fit(key)
        if fit is None:
            self.section("Primary endpoint", f"<p>The MMRM of {escape_html(key)} could not be fitted.</p>")
            return
        ls = fit.lsmeans[["arm", "visit", "estimate", "std_error", "df", "ci_low", "ci_high"]].rename(
            columns={"estimate": "LS-mean", "std_error": "SE", "ci_low": "95% CI low", "ci_high": "95% CI high"})
        diffs = fit.diffs[["visit", "treatment", "control", "estimate", "std_error", "df", "ci_low", "ci_high",
                           "p"]].rename(columns={"estimate": "difference", "std_error": "SE", "ci_low": "95% CI low",
                                                 "ci_high": "95% CI high"})
        title = metric_info(key)["description"].rstrip(".")
        left = "; ".join(f"{r.subject_id} ({r.reason})" for r in fit.excluded.itertuples())
        note = (f'<p class="note">{fit.n_subjects} subjects, {fit.n_obs} post-baseline observations; {fit.qc}. '
                f'{escape_html(fit.method)}.' + (f" Left out: {escape_html(left)}." if left else "") + "</p>")
        self.section(f"Primary endpoint: {title} ({key}) at {p.primary.visit}",
                     self.figure(f"{key}-lsmeans", charts.lsmeans_plot(fit.lsmeans, fit.diffs, key),
                                 f"{title}: MMRM LS-means of the change with 95% CIs; the marks are the differences' "
                                 "p-values in the table below (* <0.05, ** <0.01, *** <0.001, ns)."),
                     table(ls, "MMRM LS-means of the change from baseline by arm and visit"),
                     table(diffs, "Treatment minus control"), note)

    def secondary(self):
        if self.ends is None or len(self.ends) == 0:
            return
        e = self.ends[["order", "role", "metric", "visit", "treatment", "model", "estimate", "ci_low", "ci_high",
                       "p", "p_adjusted", "decision"]].rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high",
                                                                      "p_adjusted": "p adjusted"})
        e["model"] = e["model"].map(MODEL_NAMES)
        e["metric"] = [metric_info(k)["description"].rstrip(".") for k in e["metric"]]  # names, not keys
        self.section("Endpoints in testing order, with the multiplicity decision",
                     table(e, f"{self.plan.multiplicity.replace('_', ' ').capitalize()} at alpha {self.plan.alpha:g}; "
                              "estimates are differences (MMRM) or ratios (other models)"))

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
        parts = [self.figure(f"{key}-trend", charts.trend_lines(s.timeline(key), cohort, key, self.subjects),
                             f"{title}: each subject's values (thin) and the mean with its 95% CI by arm (bold)."),
                 table(cohort[cols].rename(columns={"change_mean": "change", "change_ci_low": "change 95% CI low",
                                                    "change_ci_high": "change 95% CI high"}),
                       "Values and change from baseline (baseline rows are no change)"),
                 table(pct.rename(columns={"count": "n", "mean": "mean % change", "median": "median % change"}),
                       "Percent change from baseline")]
        threshold = self.plan.responders.get(key)
        if threshold is not None and self.has_arms:
            r = s.responders_between(key)
            short = {"treatment": "arm", "responders_treatment": "responders", "n_treatment": "n",
                     "responders_control": "control responders", "n_control": "control n",
                     "risk_difference": "difference", "rd_ci_low": "95% CI low", "rd_ci_high": "95% CI high",
                     "odds_ratio": "odds ratio", "p_fisher": "p"}
            parts.append(table(r[["visit", "threshold", *short]].rename(columns=short),
                               "Responders (risk difference with Newcombe's 95% CI; Fisher's exact p)"))
        self.section(f"{title} ({key}; {info['unit']}; {info['better']} is better)", *parts)

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
        parts = [table(listed, "Measures of this study beside the photographs", text=True)]
        raters = self.s.raters()
        if len(raters):
            raters = raters.assign(metric=[metric_info(m)["description"].rstrip(".") for m in raters["metric"]])
            parts.append(table(raters.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high"}),
                               "Agreement between raters: ICC(2,1) (two-way random, absolute agreement) and "
                               "quadratic-weighted kappa, over the visits every rater graded"))
        likert = [i["key"] for i in info if i.get("agree")]
        if likert:
            t = self.s.claims(likert)
            shown = pd.DataFrame({
                "item": [metric_info(m)["description"].rstrip(".") for m in t["metric"]], "arm": t["arm"],
                "visit": t["visit"], "n": t["n"],
                "agreeing (95% CI)": [f"{int(k)}/{n} ({pct:.0f}%; {lo:.0f}% to {hi:.0f}%)" for k, n, pct, lo, hi in
                                      zip(t["agreeing"], t["n"], t["agreeing_pct"], t["agreeing_ci_low"],
                                          t["agreeing_ci_high"])]})
            parts.append(table(shown, "Self-assessment: subjects agreeing (Wilson 95% CI)", text=True))
        self.section("Measures beside the photographs", *parts,
                     "<p>A subject's value of a measure at a visit is the mean of its readings there (raters, "
                     "replicates, sides). Within-arm shares of agreement are descriptive, like the claim table.</p>")

    def photos(self, how_many: int = 3):
        """Before/after face maps (over the photo when it is at hand) of the best responders on the primary
        endpoint, or of the first subjects with maps at two visits when there is no primary endpoint."""
        s = self.s
        maps = s.sql("""SELECT a.subject_id, a.visit, m.name, m.path, a.photo FROM maps m JOIN analyses a
                        USING (analysis_id) WHERE a.subject_id IS NOT NULL AND a.ok ORDER BY a.taken_at""")
        if maps.empty:
            self.section("Before and after", "<p>This study holds no face maps or photos to show (ask the API for "
                                             "maps with <code>skintrack analyze --maps red_area,...</code>).</p>")
            return
        order = list(dict.fromkeys(maps["subject_id"]))
        if self.plan.primary is not None:
            key, visit = self.plan.primary.metric, self.plan.primary.visit
            ch = s.change_from_baseline(key)
            ch = ch[ch["visit"] == visit].assign(gain=lambda d: d["delta"] * (-1 if metric_info(key)["better"] ==
                                                                              "lower" else 1))
            order = [x for x in ch.sort_values("gain", ascending=False)["subject_id"] if x in set(order)] or order
        parts = []
        for sid in order:
            g = maps[maps["subject_id"] == sid]
            name = g["name"].iloc[0]
            g = g[g["name"] == name]
            if g["visit"].nunique() > 1 and len(parts) < how_many:
                first, last = g.iloc[0], g.iloc[-1]
                parts.append(self.figure(f"subject-{sid}-{name}", charts.map_panels(
                    s.path / first["path"], s.path / last["path"], name, first["photo"], last["photo"]),
                    f"Subject {sid}: the API's {name.replace('_', ' ')} map at {first['visit']} and {last['visit']}."))
        self.section("Before and after (best responders on the primary endpoint)",
                     *(parts or ["<p>No subject has face maps at two visits.</p>"]))

    def quality(self):
        overview = self.figure("qc_overview", charts.qc_overview(self.qc), "Capture-quality flags by visit.") \
            if self.qc["flagged"].any() else ""  # nothing flagged: nothing to draw
        flagged = self.qc[self.qc["flagged"]][["subject_id", "visit", "reasons"]].copy()
        flagged["reasons"] = [", ".join(f"{r} ({FLAGS[r]})" for r in rs.split(", ")) for rs in flagged["reasons"]]
        parts = [table(flagged, "Captures flagged by QC", text=True) if len(flagged) else "<p>No capture was flagged.</p>"]
        windows = self.s.check()
        windows = windows[windows["problem"].str.contains("outside the window", regex=False)]
        parts.append(table(windows.rename(columns={"where": "capture"}), "Captures outside their visit window", text=True)
                     if len(windows) else f"<p>Every capture was within its visit window (windows: "
                                          f"{escape_html(self.plan.windows)}).</p>")
        self.section("Capture quality and visit windows", overview, *parts)

    def claims(self):
        """The claim table of the plan's endpoints: % change from baseline, p against baseline, improved."""
        if not self.plan.endpoints:
            return
        t = self.s.claims()
        shown = pd.DataFrame({
            "metric": [metric_info(m)["description"].rstrip(".") for m in t["metric"]], "arm": t["arm"],
            "visit": t["visit"], "n": t["n"],
            "mean % change (95% CI)": [f"{m:+.1f} ({lo:+.1f} to {hi:+.1f})" for m, lo, hi in
                                       zip(t["mean_pct_change"], t["pct_ci_low"], t["pct_ci_high"])],
            "p against baseline": [_fmt_p(p) for p in t["p"]],
            "improved": [f"{int(k)}/{n} ({pct:.0f}%)" if k == k else "" for k, n, pct in
                         zip(t["improved"], t["n"], t["improved_pct"])]})
        self.section("Claim table: change from baseline per arm and visit", table(shown, text=True),
                     "<p>Mean % change from baseline with its 95% t interval; p of the change against baseline by "
                     "the paired t-test, each visit's own and unadjusted (descriptive: the endpoints above carry "
                     "the confirmatory tests); improved: subjects whose value moved in the better direction, by "
                     "any amount.</p>")

    def instrument(self):
        """Which API generations measured the study, what the sentinel saw, and the decisions taken."""
        s = self.s
        gens = s.generations()
        shown = gens.assign(first=gens["first"].dt.strftime("%Y-%m-%d"), last=gens["last"].dt.strftime("%Y-%m-%d"))
        parts = [table(shown.rename(columns={"api_generation": "API generation", "basis": "inferred from"}),
                       "API generations that measured the study (from each response's shape and call date)", text=True)]
        if len(gens) > 1:
            parts.append("<p>More than one generation measured this study: a change between them is partly the "
                         "instrument's. The sensitivity analyses restrict the primary endpoint to one generation and "
                         "bridge the others onto it.</p>")
            bridged = s.bridge()
            if len(bridged):
                parts.append(table(bridged.head(12)[["metric", "from_generation", "to_generation", "photos", "offset",
                                                     "ci_low", "ci_high"]].rename(columns={
                    "ci_low": "95% CI low", "ci_high": "95% CI high"}),
                    "Largest offsets between generations, from photos analysed under both"))
        table_ = s.drift()
        if table_.empty:
            parts.append("<p>No sentinel panel was sent with this study's batches (`skintrack analyze --sentinel`), "
                         "so a silent change of the API's model could only be seen in the generations above.</p>")
        else:
            runs = table_.groupby(["batch", "position", "reference"], sort=False).agg(
                metrics=("metric", "size"), moved=("moved", "sum"), exceeding=("exceeds_mdc", "sum"),
                generation=("generation", "first")).reset_index()
            events = s.sql("SELECT batch, event, detail FROM instrument")
            runs["decision"] = [", ".join(events.loc[events["batch"] == b, "event"]) or (
                "nothing moved beyond its MDC" if not x else "stopped before the batch's study photos"
                if pos == "start" else "the batch's analyses straddle a change")
                for b, pos, x in zip(runs["batch"], runs["position"], runs["exceeding"])]
            parts.append(table(runs, "Sentinel runs against the reference run: metrics compared, metrics whose "
                                     "values moved, and metrics whose shift exceeds the MDC", text=True))
            mdc = table_.drop_duplicates("metric").set_index("metric")
            keys = [k for k in dict.fromkeys([e.metric for e in self.plan.endpoints] + list(self.metrics))
                    if k in mdc.index]
            if keys:
                parts.append(table(mdc.loc[keys, ["photos", "sem", "mdc", "noise"]].reset_index().rename(columns={
                    "sem": "SEM", "mdc": "smallest shift detected (MDC)", "noise": "noise floor from"}),
                    "The sentinel's detection limit for the endpoints' metrics", text=False))
        found = s.check()
        found = found[found["problem"].str.contains("generation|instrument change", regex=True)]
        if len(found):
            parts.append(table(found, "Values that straddle an instrument change", text=True))
        self.section("Instrument: API generations and drift", *parts)

    def sensitivity(self):
        p = self.plan
        if p.primary is None or not self.has_arms:
            return
        try:
            table_ = self.s.sensitivity()
        except UsageError as e:
            self.section("Sensitivity analyses of the primary endpoint", f"<p>{escape_html(e)}</p>")
            return
        primary = table_[table_["analysis"].str.startswith("primary")].set_index("treatment")
        same = [r.analysis != primary.at[r.treatment, "analysis"] and r.estimate == primary.at[r.treatment, "estimate"]
                and r.std_error == primary.at[r.treatment, "std_error"] for r in table_.itertuples()]
        table_ = table_[[not x for x in same]]  # a row equal to the primary (e.g. nothing was QC-flagged) says nothing
        shown = table_[["analysis", "treatment", "estimate", "ci_low", "ci_high", "p", "decision"]].rename(
            columns={"ci_low": "95% CI low", "ci_high": "95% CI high"})
        notes = "".join(f'<p class="note">{escape_html(r.analysis)}: {escape_html(r.note)}.</p>'
                        for r in table_.itertuples() if r.note and not r.analysis.startswith("primary"))
        self.section("Sensitivity analyses of the primary endpoint",
                     table(shown, f"{p.primary.metric} at {p.primary.visit}: the primary analysis and its "
                                  "sensitivity analyses"), notes)

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
        self.section("Estimand (ICH E9(R1))", table(pd.DataFrame(rows, columns=["attribute", "as planned"]), text=True),
                     "<p>The primary analysis assumes the values it does not have are missing at random (MAR), given "
                     "each subject's arm, baseline and observed values; the sensitivity analyses test that "
                     "assumption.</p>")

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
        about = (f"<p>Arm: {escape_html(arm.iloc[0]) if len(arm) else 'not assigned'}. Visits: " + ", ".join(
            f"{escape_html(v)} ({seen[v]:%Y-%m-%d})" if v in seen and seen[v] == seen[v] else escape_html(v)
            for v in s.visits if v in seen) + ".</p>")
        self.section(f"Subject {sid}", about,
                     self.figure(f"subject-{sid}-trend", charts.subject_trend(values, sid, list(s.visits)),
                                 f"Subject {sid}: each reported metric over the visits."),
                     table(wide, f"Subject {sid}: values by visit", 1),
                     self.figure(f"subject-{sid}-profile", charts.score_profile(prof, sid),
                                 f"Subject {sid}: every health score at baseline and at the latest visit."),
                     kind="subject")

    def methods(self, data_version: str):
        p, n_flag = self.plan, int(self.qc["flagged"].sum())
        import duckdb
        import numpy
        import scipy
        import statsmodels

        text = (
            "<p>Photos were analysed by the Skin Analyze Pro API; its responses were ingested losslessly by "
            "skintrack. The API generation of each response was inferred from its shape and its call date; the "
            f"analyses come from {escape_html(', '.join(self.s.generations()['api_generation']))}. For each subject and visit the latest successful analysis was used. The baseline is the "
            f"plan's baseline visit ({escape_html(str(p.baseline))}); subjects without a usable baseline are left out "
            f"of change analyses and listed; change is the later value minus the baseline value. {n_flag} captures "
            "were flagged by capture QC (head pose beyond the API's limits, a face box under 400 px, glasses, hair or "
            "camera distance unlike baseline, abnormal lighting, a tone shift beyond the noise floor) and handled as "
            f"the plan says ({p.qc}d in the primary analysis). Captures were taken at their visits by the plan's "
            f"windows rule ({escape_html(p.windows)}). Continuous endpoints were analysed by a mixed model for "
            f"repeated measures of the change on baseline, arm, visit and arm by visit, {escape_html(p.covariance)} "
            f"covariance, REML, {escape_html(p.df)} degrees of freedom (LS-means at the mean baseline); a structure "
            "that cannot be fitted falls back to a heterogeneous one with empirical (CR2) standard errors, and the "
            "endpoint's table says so. Counts were analysed by negative binomial, grades by proportional-odds and "
            "flags by logistic regression (Firth's penalised likelihood when an arm's flags are perfectly "
            "predicted), each on arm and baseline. Missing values are assumed missing at random in the primary "
            "analysis; multiple imputation under MAR, jump to reference, copy reference and a delta tipping point "
            "test the assumption. The endpoints were tested in this order: "
            f"{escape_html(self.ends.attrs['testing_order']) if self.ends is not None else 'none'}. Every other "
            "p-value is two-sided and unadjusted. All intervals are 95%. Tables round numbers to 2 decimals "
            "(whole-number scores and counts as they are, % changes in the claim table to 1) and p-values to 3 "
            "(below 0.001 as <0.001).</p>")
        versions = pd.DataFrame([("skintrack", __version__), ("Python", platform.python_version()),
                                 ("numpy", numpy.__version__), ("scipy", scipy.__version__),
                                 ("statsmodels", statsmodels.__version__), ("pandas", pd.__version__),
                                 ("DuckDB", duckdb.__version__), ("data", data_version),
                                 ("study folder", str(self.s.path))], columns=["software and data", "version"])
        self.section("Methods, software and data", text, table(versions, text=True), kind="keep")


def data_version(study) -> str:
    """The data the report was computed from: the study version (`skintrack report --version N` reproduces
    it), the analyses held and a hash of their ids."""
    ids = study.sql("SELECT analysis_id FROM analyses ORDER BY analysis_id")
    digest = hashlib.sha256("".join(ids["analysis_id"]).encode()).hexdigest()[:12]
    return f"{study.version_note}: {len(ids)} analyses, content {digest}"


def build_report(study, out, metrics=None, subject=None, pdf: bool = True, title: str | None = None,
                 paper: str = "a4", figure_formats=("png",), names: dict | None = None) -> Report:
    """Write `report.html` (self-contained), `report.pdf` (paged, A4 or Letter) and every figure into `out`.

    Title, sponsor, product and protocol come from the plan unless given (`title`, `names`)."""
    import time

    from jinja2 import Environment, PackageLoader, select_autoescape

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = list(metrics or DEFAULT_METRICS)
    for m in metrics:
        metric_info(m)
    if paper not in PAPER:
        raise UsageError(f"paper {paper!r}: use a4 or letter")
    b = _Builder(study, out, metrics, tuple(figure_formats))
    plan = study.plan
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
    b.photos()
    b.quality()
    b.instrument()
    b.sensitivity()
    for sid in [subject] if isinstance(subject, str) else (subject or []):
        b.subject_page(sid)
    b.methods(version)
    given = {k: v for k, v in (names or {}).items() if v}
    plan = dataclasses.replace(plan, **given) if given else plan
    title = title or plan.title or f"Skin study report: {study.path.name}"
    simulated = int(study.sql("SELECT count(*) AS n FROM extras WHERE path = 'simulated'")["n"].iloc[0])
    header = " | ".join(x for x in (title, plan.sponsor, plan.product, plan.protocol,
                                    f"plan version {plan.version}" if plan.version else "") if x)
    footer = f"Generated {dt.date.today().isoformat()} by skintrack {__version__} | data: study version {study.version}"
    env = Environment(loader=PackageLoader("skintrack.show", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["css"] = css_string
    from markupsafe import Markup

    page = env.get_template("report.html.j2").render(
        title=title, subtitle=" | ".join(x for x in (plan.sponsor, plan.product, plan.protocol) if x) or study.path.name,
        simulated=(f"{simulated} of the responses in this study say they were simulated (skintrack.sample); no real "
                   "person is behind them.") if simulated else "",
        sections=[dict(s, parts=[Markup(p) for p in s["parts"]]) for s in b.sections], paper=PAPER[paper],
        header=header, footer=footer)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    report = Report(html_path, None, b.figures, b.findings())
    if pdf:
        report.pdf, report.pdf_engine = _pdf(html_path)
    report.seconds = time.perf_counter() - t0
    return report


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
