"""The report: self-contained HTML that renders every figure in headless Chromium with no request leaving
the machine, and a PDF whose pages render."""
import re
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import debian_install

from skintrack.show.report import CHROMIUM_FLAGS, build_report, chromium

pytestmark = pytest.mark.xdist_group("report")  # its module fixtures are built once, on one worker


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, installed by the test setup when missing."""
    exe = chromium()
    if exe is None:
        debian_install("chromium")
        exe = chromium()
    assert exe, "Chromium is needed for the report tests: apt-get install chromium"
    return exe


@pytest.fixture(scope="module")
def report(tmp_path_factory, browser):
    from skintrack.demo import demo_study

    out = tmp_path_factory.mktemp("report")
    return build_report(demo_study(), out, metrics=["score.water", "score.rough", "score.total"], subject=["S05"])


class Tripwire:
    """A local HTTP proxy that only counts: any request the browser tries to send out reaches it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port, self.hits = self.sock.getsockname()[1], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits.append(conn.recv(200))
            conn.close()


def hosts(hits) -> set:
    """Hosts of proxied requests ('GET http://host/...' or 'CONNECT host:443')."""
    out = set()
    for h in hits:
        target = h.split(b" ")[1].decode(errors="replace") if b" " in h else ""
        out.add(target.split("//")[-1].split("/")[0].split(":")[0])
    return out


@pytest.fixture(scope="module")
def background(browser, tmp_path_factory):
    """What the browser itself sends out (updater, time, accounts) for a blank page: not the page's doing."""
    page = tmp_path_factory.mktemp("blank") / "blank.html"
    page.write_text("<html><body>blank</body></html>")
    return hosts(render(browser, page, page.parent)[1])


def render(browser, page: Path, tmp_path) -> tuple[str, list]:
    """Load a page in headless Chromium behind the tripwire; returns (DOM after load, attempted requests)."""
    wire = Tripwire()
    proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           f"--proxy-server=http://127.0.0.1:{wire.port}", "--proxy-bypass-list=<-loopback>",
                           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    wire.sock.close()
    return proc.stdout, wire.hits


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-check', ok + '/' + imgs.length);
});</script></body>"""


def test_html_references_nothing_outside_itself(report):
    page = report.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, re.I) and "@import" not in page
    assert page.count('<img ') == len(report.figures) == page.count('src="data:image/png;base64,')
    for heading in ("Synopsis and headline findings", "Subject disposition", "Baseline and demographics by arm",
                    "Primary endpoint: Skin moisture score", "Endpoints in testing order", "Before and after",
                    "Capture quality and visit windows", "Sensitivity analyses of the primary endpoint",
                    "Estimand (ICH E9(R1))", "Claim table", "Instrument: API generations and drift",
                    "Methods, software and data", "Subject S05",
                    "Treatment minus control", "Percent change from baseline", "Responders"):
        assert heading in page, heading
    assert "SIMULATED DATA" in page and "glasses_changed" in page and "<svg" in page  # the flow diagram


def test_the_report_shows_the_helpers_numbers(report):
    """The primary endpoint's tables and the chart beside them come from the same fit as Study.mmrm."""
    from skintrack.demo import demo_study

    page = report.html.read_text()
    fit = demo_study().mmrm("score.water")
    for row in fit.diffs.itertuples():
        assert f">{row.estimate:.2f}<" in page and f">{row.ci_low:.2f}<" in page and f">{row.ci_high:.2f}<" in page
    for row in fit.lsmeans.itertuples():
        assert f">{row.estimate:.2f}<" in page
    ends = demo_study().endpoints()
    assert report.findings[0].startswith("Primary endpoint 1, Skin moisture score at W12 (MMRM, fixed-sequence")
    assert f"{ends['estimate'][0]:.1f} points more than placebo" in report.findings[0]


def test_the_claim_table_prints_the_helpers_numbers(report):
    from skintrack.demo import demo_study

    page = report.html.read_text()
    section = page[page.index("Claim table: change from baseline"):]
    row = demo_study().claims().query("metric == 'score.water' and arm == 'active' and visit == 'W12'").iloc[0]
    assert f"{row.mean_pct_change:+.1f} ({row.pct_ci_low:+.1f} to {row.pct_ci_high:+.1f})" in section
    assert f"{int(row.improved)}/{row.n} ({row.improved_pct:.0f}%)" in section


def test_the_measures_section_prints_the_raters_and_the_self_assessment(report):
    from skintrack.demo import demo_study

    page = report.html.read_text()
    section = page[page.index("Measures beside the photographs"):page.index("Capture quality and visit windows")]
    assert "Stratum corneum hydration, Corneometer CM 825 (SIMULATED)" in section and ">measure.corneometer<" in section
    raters = demo_study().raters().set_index("statistic")
    for statistic in ("ICC(2,1)", "weighted kappa (quadratic)"):
        assert f">{raters.at[statistic, 'estimate']:.2f}<" in section and f">{statistic}<" in section
    likert = demo_study().claims("measure.feels_hydrated").query("arm == 'active' and visit == 'W12'").iloc[0]
    assert (f"{int(likert.agreeing)}/{likert.n} ({likert.agreeing_pct:.0f}%; {likert.agreeing_ci_low:.0f}% to "
            f"{likert.agreeing_ci_high:.0f}%)") in section


def test_the_instrument_section_names_the_generation_and_what_the_sentinel_saw(report):
    page = report.html.read_text()
    section = page[page.index("Instrument: API generations and drift"):page.index("Sensitivity analyses")]
    assert ">v1.7.6<" in section and ">D0-batch<" in section and ">W12-batch<" in section
    assert section.count(">nothing moved beyond its MDC<") == 7  # 4 batches x 2 runs, less the reference
    assert "detection limit for the endpoints" in section and "the analyses come from v1.7.6" in page


def test_every_figure_renders_in_chromium_and_nothing_leaves(report, browser, background, tmp_path):
    probe = tmp_path / "probe.html"  # the report as written, plus a check script run only in this copy
    probe.write_text(report.html.read_text().replace("</body>", CHECK))
    dom, hits = render(browser, probe, tmp_path)
    n = len(report.figures)
    assert f'data-check="{n}/{n}"' in dom and n >= 6
    assert hosts(hits) - background == set()  # the report adds no request to the browser's own


def test_the_tripwire_would_catch_a_request(browser, background, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    _, hits = render(browser, page, tmp_path)
    assert hosts(hits) - background == {"example.invalid"}


def test_pdf_pages_render(report):
    import pypdfium2 as pdfium

    assert report.pdf_engine == "chromium"
    pdf = pdfium.PdfDocument(report.pdf)
    n = len(pdf)
    assert 4 <= n <= 12
    width, height = pdf[0].get_size()
    assert (round(width), round(height)) == (595, 842)  # A4
    header = "Sample trial (SIMULATED) | skintrack (SIMULATED) | Hydrating serum (SIMULATED) | SIM-2024-01"
    for i in range(n):
        text = pdf[i].get_textpage().get_text_range()
        assert f"page {i + 1} of {n}" in text, i  # the footer's page numbers
        assert header in text and "plan version 1.0" in text  # the running header
        assert "data: study version " in text
        body = text.replace(header, "")
        image = pdf[i].render(scale=0.5).to_pil().convert("L")
        inked = float((np.asarray(image) < 200).mean())
        figures = sum(o.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE for o in pdf[i].get_objects())
        # nearly empty: a lone title or small table (little text, little ink and no figure)
        assert len(body) > 900 or inked > 0.05 or (figures and len(body) > 200), \
            f"page {i + 1} is nearly empty ({len(body)} chars, {inked:.1%} ink, {figures} figures)"
    first = pdf[0].get_textpage().get_text_range()
    assert "Synopsis and headline findings" in first and "Primary endpoint 1" in first  # no lone title page


def test_report_cli(run_cli, tmp_path):
    from skintrack.demo import demo_study

    proc = run_cli("report", demo_study().path, "--out", tmp_path / "r", "--metrics", "score.water", "--no-pdf",
                   check=0)
    assert "report:" in proc.stdout and "1. Primary endpoint 1, Skin moisture score at W12 (MMRM, fixed-sequence testing" \
        " at alpha 0.05): active improved it by 15.5 points more than placebo" in proc.stdout
    assert sorted(p.suffix for p in (tmp_path / "r" / "figures").glob("score.water-trend-*.*")) == [".png"]
    letter = run_cli("report", demo_study().path, "--out", tmp_path / "l", "--metrics", "score.water", "--paper",
                     "letter", "--figures", "png,svg,pdf", "--no-pdf", "--sponsor", "Acme Labs", "--title", "CSR 9",
                     check=0)
    page = (tmp_path / "l" / "report.html").read_text()
    assert "size: letter" in page and "report:" in letter.stdout
    from skintrack.sinks import css_string

    assert f'"{css_string("CSR 9 | Acme Labs | Hydrating serum (SIMULATED) | SIM-2024-01 | plan version 1.0")}"' in page
    assert sorted(p.suffix for p in (tmp_path / "l" / "figures").glob("score.water-trend-*.*")) == [".pdf", ".png",
                                                                                                  ".svg"]
    bad = run_cli("report", demo_study().path, "--out", tmp_path / "r2", "--metrics", "score.wter")
    assert bad.returncode == 2 and "did you mean score.water" in bad.stderr


def test_a_study_without_arms_still_gets_a_report(tmp_path):
    import skintrack
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv")  # no subjects CSV
    s = skintrack.open(tmp_path / "s")
    assert s.cohort("score.water")["visit"].tolist() == ["D0", "W4", "W8", "W12"]
    r = build_report(s, tmp_path / "r", metrics=["score.water"], pdf=False)
    page = r.html.read_text()
    assert r.findings == [] and "No between-arm comparison was possible" in page and len(r.figures) == 2


def test_before_and_after_maps_of_the_best_responders(tmp_path):
    import skintrack

    from conftest import FIXTURES

    case = FIXTURES / "real" / "ailabtools-docs-case1"
    (tmp_path / "m.csv").write_text("file,subject_id,visit,taken_at\nresponse-old.json,S1,D0,2024-01-01\n"
                                    "response-v1.7.json,S1,W4,2024-01-29\n")
    skintrack.ingest([case / "response-old.json", case / "response-v1.7.json"], tmp_path / "s",
                     manifest=tmp_path / "m.csv")
    r = build_report(skintrack.open(tmp_path / "s"), tmp_path / "r", metrics=["score.total"], pdf=False)
    shown = [f for f in r.figures if f.startswith("subject-S1-")]
    assert len(shown) == 1 and (tmp_path / "r" / "figures" / f"{shown[0]}.png").exists()
    page = r.html.read_text()
    assert "map at D0 and W4" in page
    # the vendor's two recordings come from two API generations: the instrument section says so
    section = page[page.index("Instrument: API generations and drift"):]
    assert "More than one generation measured this study" in section and "subject S1" in section
    assert "the analyses come from v1.6.6, v1.7.6" in page


def test_every_table_orders_visits_by_schedule_and_the_control_first(report):
    """Issue 22: the % change table sorted visits as text (W4, W12, W8) and arms the other way."""
    import re

    page = report.html.read_text()
    start = page.index("Percent change from baseline")
    body = page[start:page.index("</table>", start)]
    cells = re.findall(r'<td id="T_\w+_row\d+_col[01]" class="data row\d+ col[01]" >([^<]*)</td>', body)
    pairs = list(zip(cells[0::2], cells[1::2]))
    assert pairs[:6] == [("W4", "placebo"), ("W4", "active"), ("W8", "placebo"), ("W8", "active"),
                         ("W12", "placebo"), ("W12", "active")]
