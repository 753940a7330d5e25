"""`skintrack report`: a self-contained HTML trial report and a PDF of it.

The HTML embeds every figure (PNG as data URIs) and its style, and references nothing outside itself.
The PDF is printed from the HTML by headless Chromium when one is installed; otherwise the same
content is laid out with matplotlib. Statistics leave out QC-flagged analyses and say so.

Example
-------
>>> import tempfile
>>> from skintrack.demo import demo_study
>>> r = build_report(demo_study(), tempfile.mkdtemp(), metrics=["score.water"], pdf=False)
>>> r.html.name, len(r.findings) >= 1
('report.html', True)
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import __version__
from ..analysis.qc import FLAGS
from ..errors import UsageError
from ..tables.catalog import metric_info
from ..tables.codes import about_photo
from . import charts

DEFAULT_METRICS = ("score.total", "score.water", "score.rough", "score.melanin", "score.pores")
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:960px;margin:2em auto;color:#222;
line-height:1.45;padding:0 1em}h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;
padding-bottom:.2em;margin-top:2em;page-break-before:auto}h3{margin-top:1.5em}table{border-collapse:collapse;
font-size:.82em;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f0f4f8}td:first-child,th:first-child{text-align:left}figure{margin:1em 0;page-break-inside:avoid}
img{width:100%;max-width:760px;display:block;margin:auto}.text td{text-align:left}.note{color:#555;font-size:.9em}.finding{background:#f5f9fc;border-left:4px solid #0072B2;
padding:.4em .8em;margin:.4em 0}.simulated{background:#fff4e0;border:1px solid #E69F00;padding:.5em .8em}
section{page-break-inside:auto}@media print{body{margin:0;max-width:none}h2{page-break-before:always}}
"""


@dataclass
class Report:
    """What `build_report` wrote and found."""

    html: Path
    pdf: Path | None
    figures: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    pdf_engine: str = ""


def _fmt_p(p) -> str:
    if p is None or p != p:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(df: pd.DataFrame, floats: int = 2) -> str:
    return df.to_html(index=False, border=0, na_rep="", float_format=lambda x: f"{x:.{floats}f}", escape=True)


class _Builder:
    def __init__(self, study, out: Path, metrics, subject):
        self.s, self.out, self.metrics, self.subject = study, out, metrics, subject
        self.parts: list[str] = []
        self.figures: list[tuple[str, object]] = []
        self._headline = None
        self.subjects = study.sql("SELECT * FROM subjects")

    def figure(self, name: str, fig, caption: str) -> None:
        charts.save(fig, self.out / "figures" / name)
        data = base64.b64encode(charts.png_bytes(fig)).decode()
        self.figures.append((name, fig))
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                          f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>')

    def glance(self):
        s = self.s
        every = s.sql("SELECT subject_id, ok, coalesce(error_status, error_code_str) AS code, "
                      "coalesce(http_status, error_code) AS status FROM analyses")
        # a refused key or exhausted credits (archived by older versions) is no analysis of a photo
        every = every[every["ok"].to_numpy() | [about_photo(c, st) for c, st in zip(every["code"], every["status"])]]
        n = {"analyses": len(every), "ok": int(every["ok"].sum()), "subjects": every["subject_id"].nunique()}
        arms = self.subjects.groupby("arm").size().to_dict() if "arm" in self.subjects else {}
        qc = s.qc()
        self.qc = qc
        flagged = qc[qc["flagged"]]
        simulated = s.sql("SELECT count(*) AS n FROM extras WHERE path = 'simulated'")["n"].iloc[0]
        self.parts.append("<h2>The study at a glance</h2>")
        if simulated:
            self.parts.append(f'<p class="simulated"><b>SIMULATED DATA.</b> {simulated} of the responses in this '
                              "study say they were simulated (skintrack.sample); no real person is behind them.</p>")
        rows = [("Subjects", int(n["subjects"])), ("Arms", ", ".join(f"{a} ({k})" for a, k in arms.items()) or "none"),
                ("Visits", " / ".join(map(str, s.visits)) or "none"), ("Analyses", int(n["analyses"])),
                ("Analyses the API could not do", int(n["analyses"] - n["ok"])),
                ("Analyses excluded by capture QC", len(flagged))]
        self.parts.append(_table(pd.DataFrame(rows, columns=["", "value"])))
        if len(flagged):
            why = flagged[["subject_id", "visit", "reasons"]].copy()
            why["reasons"] = [", ".join(f"{r} ({FLAGS[r]})" for r in rs.split(", ")) for rs in why["reasons"]]
            self.parts.append("<h3>What QC excluded and why</h3>" + _table(why).replace("<table", '<table class="text"', 1))
        self.figure("qc_overview", charts.qc_overview(qc), "Capture-quality flags by visit.")

    def metric(self, key: str):
        s, info = self.s, metric_info(key)
        title = info["description"].rstrip(".")
        cohort = s.cohort(key, exclude_flagged=True)
        if cohort.empty:
            self.parts.append(f"<h2>{html.escape(title)}</h2><p>No data.</p>")
            return
        visits = [v for v in s.visits if v in set(cohort["visit"])]
        tests = pd.concat([s.compare_arms(key, v, test="ancova", exclude_flagged=True) for v in visits[1:]],
                          ignore_index=True) if "arm" in self.subjects and len(visits) > 1 else pd.DataFrame()
        self.parts.append(f"<h2>{html.escape(title)} <span class='note'>({html.escape(key)}; {info['unit']}; "
                          f"{info['better']} is better)</span></h2>")
        self.figure(f"{key}-trend", charts.trend_lines(s.timeline(key, exclude_flagged=True), cohort, key,
                                                       self.subjects),
                    f"{title}: each subject's values (thin lines) and the mean with its 95% CI by arm.")
        self.figure(f"{key}-change", charts.change_bars(cohort, key, tests if len(tests) else None),
                    f"{title}: mean change from baseline with 95% CI; marks give the baseline-adjusted "
                    "(ANCOVA) difference between arms: * p<0.05, ** p<0.01, *** p<0.001.")
        table = cohort[[c for c in ("visit", "arm", "n", "mean", "sd", "ci_low", "ci_high", "change_mean",
                                    "change_ci_low", "change_ci_high") if c in cohort]].rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high",
                                                           "change_mean": "change", "change_ci_low": "change CI low",
                                                           "change_ci_high": "change CI high"})
        self.parts.append("<h3>Cohort by visit" + (" and arm" if "arm" in table else "") + "</h3>" + _table(table))
        if len(tests):
            t = tests[["visit", "n_treatment", "n_control", "mean_treatment", "mean_control", "diff", "ci_low",
                       "ci_high", "p"]].copy()
            t["p"] = t["p"].map(_fmt_p)
            t.columns = ["visit", f"n {tests['treatment'][0]}", f"n {tests['control'][0]}",
                         f"change {tests['treatment'][0]}", f"change {tests['control'][0]}", "adjusted difference",
                         "95% CI low", "95% CI high", "p"]
            self.parts.append("<h3>Treatment against control (ANCOVA on the change, adjusted for baseline)</h3>"
                              + _table(t))
            try:
                fit = s.mmrm(key)
            except UsageError as e:
                self.parts.append(f"<p class='note'>No MMRM: {html.escape(str(e))}</p>")
                return
            ls, diffs = fit.lsmeans.copy(), fit.diffs.copy()
            for df in (ls, diffs):
                df["p"] = df["p"].map(_fmt_p)
            self.parts.append(f"<h3>MMRM: LS-means of the change by arm and visit ({fit.covariance} covariance, "
                              "REML, Satterthwaite df)</h3>"
                              + _table(ls[["arm", "visit", "estimate", "std_error", "df", "ci_low", "ci_high"]])
                              + "<h3>MMRM: treatment minus control</h3>"
                              + _table(diffs[["visit", "treatment", "control", "estimate", "std_error", "df", "ci_low",
                                              "ci_high", "p"]]))

    def subject_page(self, sid: str):
        s = self.s
        prof = s.sql("""SELECT m.metric, arg_min(m.value, a.taken_at) AS baseline, arg_max(m.value, a.taken_at) AS latest
                        FROM metrics m JOIN analyses a USING (analysis_id)
                        WHERE a.subject_id = ? AND a.ok AND m.metric LIKE 'score.%' AND m.metric NOT LIKE 'score.%.%'
                        GROUP BY m.metric ORDER BY m.metric""", [sid])
        if prof.empty:
            raise UsageError(f"subject {sid!r} has no analyses in this study")
        self.parts.append(f"<h2>Subject {html.escape(sid)}</h2>")
        self.figure(f"subject-{sid}-profile", charts.score_profile(prof, sid),
                    f"Subject {sid}: every health score at baseline and at the latest visit.")
        maps = s.sql("""SELECT m.name, m.path, a.photo, a.taken_at FROM maps m JOIN analyses a USING (analysis_id)
                        WHERE a.subject_id = ? ORDER BY a.taken_at""", [sid])
        for name, g in maps.groupby("name"):
            if len(g) > 1:
                first, last = g.iloc[0], g.iloc[-1]
                self.figure(f"subject-{sid}-{name}", charts.map_panels(
                    s.path / first["path"], s.path / last["path"], name, first["photo"], last["photo"]),
                    f"Subject {sid}: the API's {name.replace('_', ' ')} map at the first and the latest visit.")
        values = s.sql("""SELECT a.visit, m.metric, m.value FROM metrics m JOIN analyses a USING (analysis_id)
                          WHERE a.subject_id = ? AND a.ok AND m.metric IN (SELECT unnest(?::VARCHAR[]))""",
                       [sid, list(self.metrics)])
        if len(values):
            wide = values.pivot_table(index="metric", columns="visit", values="value", aggfunc="last")
            wide = wide[[v for v in s.visits if v in wide.columns]].reset_index()
            self.parts.append(_table(wide, 1))

    def methods(self) -> str:
        s = self.s
        n_flag = int(self.qc["flagged"].sum())
        return (
            "<h2>Methods</h2><p>Photos were analysed by the Skin Analyze Pro API; its responses were ingested "
            f"losslessly by skintrack {__version__}. For each subject and visit the latest successful analysis was "
            f"used. The baseline is the plan's baseline visit ({html.escape(str(s.plan.baseline))}); subjects "
            "without a usable baseline are left out of change analyses; change is the later value minus the "
            f"baseline value. {n_flag} analyses were excluded for capture quality (head pose beyond the API's "
            "recommended limits, face box under 400 px, glasses or hair unlike baseline, a different camera "
            "distance, abnormal lighting, or a whole-face tone shift beyond the noise floor). Cohort summaries "
            "give the mean with a Student-t 95% confidence interval. Arms were compared at each follow-up visit "
            "by ANCOVA of the change on arm, adjusted for the baseline value (ordinary least squares, "
            "statsmodels); over all visits, by a mixed model for repeated measures of the change on baseline, arm, "
            "visit and arm by visit with an unstructured covariance (REML, Satterthwaite degrees of freedom). The "
            f"headline findings are the plan's endpoints in testing order ({s.plan.multiplicity.replace('_', ' ')}, "
            f"alpha {s.plan.alpha:g}); every other p-value is two-sided and not adjusted for the number of metrics "
            f"shown ({len(self.metrics)}). Plan: {html.escape(s.plan.describe())}. Generated {dt.date.today().isoformat()} from {html.escape(str(s.path))}.</p>")

    def html(self, title: str) -> str:
        findings = "".join(f'<p class="finding">{html.escape(t)}</p>' for _, t in self.headline())
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
                f"<p class='note'>skintrack {__version__}; metrics: {html.escape(', '.join(self.metrics))}</p>"
                f"<h2>Headline findings</h2>{findings or '<p>No between-arm comparison was possible.</p>'}"
                + "".join(self.parts) + self.methods() + "</body></html>")

    def headline(self):
        """The plan's endpoints in testing order with their multiplicity decision (never the smallest p-values)."""
        if self._headline is None:
            try:
                ends = self.s.endpoints()
                self._headline = [(row.p, finding(row, ends.attrs)) for row in ends.itertuples()]
            except UsageError:
                self._headline = []
        return self._headline


def finding(row, attrs) -> str:
    """One endpoint's result in a sentence that says how it was tested and what was decided."""
    info = metric_info(row.metric)
    title = info["description"].rstrip(".")
    how = (f"MMRM, {'fixed-sequence' if attrs['strategy'] == 'fixed_sequence' else 'Holm'} testing at alpha "
           f"{attrs['alpha']:g}")
    if row.decision == "not tested":
        return (f"{row.role.capitalize()} endpoint {row.order}, {title} at {row.visit} "
                f"({how.replace('MMRM', MODEL_NAMES[row.model])}): {row.treatment} against "
                f"{row.control} not tested, because an earlier comparison in the sequence was not significant.")
    p = _fmt_p(row.p_adjusted if attrs["strategy"] == "holm" else row.p)
    tail = (f"(95% CI {row.ci_low:.{2 if row.model != 'mmrm' else 1}f} to {row.ci_high:.{2 if row.model != 'mmrm' else 1}f}; "
            f"{'adjusted ' if attrs['strategy'] == 'holm' else ''}p {p}): {row.decision}.")
    head = f"{row.role.capitalize()} endpoint {row.order}, {title} at {row.visit} ({how.replace('MMRM', MODEL_NAMES[row.model])})"
    if row.model != "mmrm":
        ratio = "rate ratio" if row.model == "negative_binomial" else "odds ratio"
        return f"{head}: {row.treatment} against {row.control}, {ratio} {row.estimate:.2f} {tail}"
    better = (row.estimate > 0) == (info["better"] == "higher")
    verb = ("improved it by" if better else "worsened it by") if info["better"] != "none" else "changed it by"
    return f"{head}: {row.treatment} {verb} {abs(row.estimate):.1f} {info['unit']} more than {row.control} {tail}"


MODEL_NAMES = {"mmrm": "MMRM", "negative_binomial": "negative binomial", "proportional_odds": "proportional odds",
               "logistic": "logistic regression"}


def build_report(study, out, metrics=None, subject=None, pdf: bool = True, title: str | None = None) -> Report:
    """Write `report.html` (self-contained), `report.pdf` and every figure (PNG, SVG, PDF) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = list(metrics or DEFAULT_METRICS)
    for m in metrics:
        metric_info(m)
    b = _Builder(study, out, metrics, subject)
    b.glance()
    for key in metrics:
        b.metric(key)
    for sid in [subject] if isinstance(subject, str) else (subject or []):
        b.subject_page(sid)
    page = b.html(title or f"Skin study report: {study.path.name}")
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    report = Report(html_path, None, [n for n, _ in b.figures], [t for _, t in b.headline()])
    if pdf:
        report.pdf, report.pdf_engine = _pdf(html_path, b)
    return report


def chromium() -> str | None:
    """The headless browser used to print the PDF, if one is installed."""
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio")


def _pdf(html_path: Path, builder) -> tuple[Path, str]:
    pdf_path = html_path.with_suffix(".pdf")
    exe = chromium()
    if exe:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                                   f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=180)
        if proc.returncode == 0 and pdf_path.exists():
            return pdf_path, "chromium"
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(pdf_path, metadata={"Creator": f"skintrack {__version__}"}) as pdf:
        cover = charts._figure(8.27, 11.69)
        ax = cover.add_subplot(1, 1, 1)
        ax.axis("off")
        text = "Headline findings\n\n" + "\n\n".join(t for _, t in builder.headline())
        ax.text(0, 1, text, va="top", wrap=True, fontsize=10)
        pdf.savefig(cover)
        for _, fig in builder.figures:
            pdf.savefig(fig)
    return pdf_path, "matplotlib"
