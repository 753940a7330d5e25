"""`make demo`: the main job on the embedded SIMULATED sample trial.

Example
-------
>>> import tempfile
>>> print(run_demo(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
Sample trial (SIMULATED): 24 subjects (active 12, placebo 12), visits D0/W4/W8/W12, 96 analyses, ...
"""
from __future__ import annotations

from pathlib import Path

from .tables.ingest import ingest
from .tables.plan import Plan
from .sample.simulate import sample_study_dir
from .analysis.study import open as open_study


def ingest_sample(study):
    """Ingest the SIMULATED sample trial (responses, manifest, subjects) into `study`, with its plan."""
    src = sample_study_dir()
    report = ingest([src / "responses"], study, manifest=src / "manifest.csv", subjects=src / "subjects.csv")
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


_DEMO = None


def run_demo(study, out=None) -> str:
    """Ingest the sample trial into `study`, run QC and the statistics, write charts and the report
    (into `out`, default `<study>/report`), and return a short account with the three headline findings."""
    from .show.report import build_report

    report = ingest_sample(study)
    s = open_study(study)
    n = s.sql("""SELECT count(DISTINCT a.subject_id) AS subjects, count(*) AS analyses,
                 (SELECT string_agg(arm || ' ' || k, ', ' ORDER BY arm) FROM
                    (SELECT arm, count(*) AS k FROM subjects GROUP BY arm)) AS arms,
                 (SELECT count(DISTINCT metric) FROM metrics) AS metrics
                 FROM analyses a""").iloc[0]
    flagged = s.qc().query("flagged")
    result = build_report(s, Path(out) if out else Path(study) / "report")
    lines = [f"Sample trial (SIMULATED): {n['subjects']} subjects ({n['arms']}), visits {'/'.join(s.visits)}, "
             f"{n['analyses']} analyses, {n['metrics']} metrics; this run added {report.added}.",
             f"QC excluded {len(flagged)} analyses: " + "; ".join(
                 f"{r.subject_id} {r.visit} ({r.reasons})" for r in flagged.itertuples()),
             f"Report: {result.html.resolve()}" + (f" and {result.pdf.resolve()} ({result.pdf_engine})"
                                                    if result.pdf else ""),
             f"Figures: {len(result.figures)} charts as PNG, SVG and PDF in {result.html.parent.resolve() / 'figures'}",
             "Headline findings:"] + [f"  {i}. {t}" for i, t in enumerate(result.findings, 1)]
    return "\n".join(lines)
