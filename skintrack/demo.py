"""`make demo`: the main job on the embedded SIMULATED sample trial.

`run_demo` (what `skintrack demo` runs, and the README's commands test with it) ingests the sample, writes
the report and the ADaM export, and prints the headline findings.

Example
-------
>>> s = demo_study()
>>> s.visits, len(s.sql("SELECT * FROM subjects")), s.plan.primary.metric
(['D0', 'W4', 'W8', 'W12'], 24, 'score.water')
"""
from __future__ import annotations

from pathlib import Path

from .tables.ingest import ingest
from .tables.plan import Plan
from .sample.simulate import sample_study_dir
from .analysis.study import open as open_study


def ingest_sample(study, repeats: bool = False):
    """Ingest the SIMULATED sample trial (responses, manifest, subjects, measures) into `study`, with its
    plan, and with `repeats` its repeat captures at D0; always its sentinel panel's results."""
    src = sample_study_dir()
    report = ingest([src / "responses", src / "sentinel"], study, manifest=src / "manifest.csv",
                    subjects=src / "subjects.csv", measures=src / "measures.csv",
                    measures_catalog=src / "measures.toml")
    if repeats:
        extra = ingest([src / "repeats"], study, manifest=src / "repeats.csv")
        report.added, report.rejected = report.added + extra.added, report.rejected + extra.rejected
    Plan.read(src).write(study)
    return report


def demo_study():
    """The sample trial, ingested once per process into a temporary folder, opened (for examples and tests)."""
    global _DEMO
    if _DEMO is None:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="skintrack-demo-"))
        ingest_sample(folder)
        _DEMO = open_study(folder)
    return _DEMO


def _instrument_line(s) -> str:
    """What `skintrack drift` says of the sample trial, in one line."""
    from .analysis.instrument import verdict

    drift = s.drift()  # every metric, as `analyze` watches them
    runs = drift.groupby(["batch", "position"], sort=False)
    moved = [f"{b} {p}: {verdict(g)}" for (b, p), g in runs if verdict(g)]
    return (f"Instrument (`skintrack drift`): API generation {', '.join(s.generations()['api_generation'])}; a "
            f"sentinel panel of {int(drift['photos'].max())} photos sent at the start and end of {drift['batch'].nunique()} "
            f"batches, {runs.ngroups} runs against the first: " + ("; ".join(moved) if moved else "nothing moved")
            + "; smallest shift it detects: " + ", ".join(f"{r.metric} {r.mdc:.2f}" for r in drift.drop_duplicates(
                "metric").set_index("metric").loc[list(PRIMARY_METRICS)].reset_index().itertuples()))


def _measures_line(s) -> str:
    """The sample's instrument readings and expert grades against the API's metrics, in one line."""
    ag = s.agreement("score.water", "measure.corneometer").set_index(["on", "statistic"])
    raters = s.raters("measure.wrinkle_grade").set_index("statistic")

    def stat(row, name):
        return f"{name} {row.estimate:.2f} (95% CI {row.ci_low:.2f} to {row.ci_high:.2f}, n {int(row.n)})"

    return ("Beside the photos (SIMULATED measures): the Corneometer against score.water, "
            + stat(ag.loc[("values", "pearson")], "Pearson r") + " on the values and "
            + stat(ag.loc[("changes from baseline", "pearson")], "r") + " on the changes from baseline; the "
            "expert wrinkle grade of two raters, " + stat(raters.loc["ICC(2,1)"], "ICC(2,1)") + ", "
            + stat(raters.loc["weighted kappa (quadratic)"], "weighted kappa"))


def _claims_line(s) -> str:
    """The claim table of the primary endpoint at its visit, one arm per clause."""
    p = s.plan.primary
    t = s.claims(p.metric)
    t = t[t["visit"] == p.visit]
    return (f"Claim table, {p.metric} at {p.visit} against baseline (within each arm; the between-arm "
            "comparison is the endpoint): " + "; ".join(
                f"{r.arm} {r.mean_change:+.1f} ({r.mean_pct_change:+.1f}%, 95% CI {r.pct_ci_low:+.1f} to "
                f"{r.pct_ci_high:+.1f}%), {r.improved:.0f} of {r.n} improved" for r in t.itertuples()))


_DEMO = None
PRIMARY_METRICS = ("score.water", "score.rough", "score.melanin")


def run_demo(study, out=None) -> str:
    """Ingest the sample trial into `study`, run QC and the statistics, write charts and the report
    (into `out`, default `<study>/report`), and return a short account with the three headline findings."""
    from .show.export import export
    from .show.report import build_report

    report = ingest_sample(study, repeats=True)
    s = open_study(study)
    n = s.sql("""SELECT count(DISTINCT a.subject_id) AS subjects, count(*) AS analyses,
                 (SELECT string_agg(arm || ' ' || k, ', ' ORDER BY arm) FROM
                    (SELECT arm, count(*) AS k FROM subjects GROUP BY arm)) AS arms,
                 (SELECT count(DISTINCT metric) FROM metrics) AS metrics
                 FROM analyses a""").iloc[0]
    flagged = s.qc().query("flagged")
    result = build_report(s, Path(out) if out else Path(study) / "report")
    adam = export(s, (Path(out) if out else Path(study)) / "adam")
    lines = [f"Sample trial (SIMULATED): {n['subjects']} subjects ({n['arms']}), visits {'/'.join(s.visits)}, "
             f"{n['analyses']} analyses, {n['metrics']} metrics; this run added {report.added}.",
             f"QC excluded {len(flagged)} analyses: " + "; ".join(
                 f"{r.subject_id} {r.visit} ({r.reasons})" for r in flagged.itertuples()),
             f"Report: {result.html.resolve()}" + (f", {result.pdf.resolve()} ({result.pdf_engine})"
                                                    if result.pdf else "") + f" and {result.docx.resolve()}",
             f"Figures: {len(result.figures)} charts and photographs as PNG in {result.html.parent.resolve() / 'figures'}",
             f"ADaM: ADSL and ADSKIN as XPT (with Define-XML 2.1), Parquet, CSV, Excel and Dataset-JSON in "
             f"{adam[0].parent.resolve()}",
             f"Both from {s.version_note}; `skintrack history {study}` lists every version, and "
             f"`--version {s.version}` writes them again exactly.",
             "Repeatability (a repeat capture of every subject at D0): " + "; ".join(
                 f"{r.metric} SEM {r.sem:.2f}, CV {r.cv_pct:.1f}%, ICC {r.icc:.2f}, MDC95 {r.mdc95:.2f}"
                 for r in s.repeatability(list(PRIMARY_METRICS)).itertuples()),
             _instrument_line(s), _measures_line(s), _claims_line(s),
             "Headline findings:"] + [f"  {i}. {t}" for i, t in enumerate(result.findings, 1)]
    return "\n".join(lines)
