"""The report: self-contained HTML that renders every figure in headless Chromium with no request leaving
the machine, and a PDF whose pages render."""
import re
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import debian_install
from docx.oxml.ns import qn

from skintrack.show.report import CHROMIUM_FLAGS, build_report, chromium


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, installed by the test setup when missing."""
    exe = chromium()
    if exe is None:
        debian_install("chromium")
        exe = chromium()
    assert exe, "Chromium is needed for the report tests: apt-get install chromium"
    return exe


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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


def section_html(page: str, title: str) -> str:
    """One numbered section of the report's HTML, from its heading to the next."""
    start = page.index(f". {title}</h2>")
    end = page.find("<h2>", start)
    return page[start:end if end > 0 else len(page)]


def test_html_references_nothing_outside_itself(report):
    page = report.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, re.I) and "@import" not in page
    assert page.count('<img ') == len(report.figures) == page.count('src="data:image/png;base64,')
    for heading in ("Synopsis and headline findings", "Subject disposition", "Baseline and demographics by arm",
                    "Primary endpoint: Skin moisture score", "Endpoints in testing order", "Photographs at D0 and W12",
                    "Capture quality and visit windows", "Sensitivity analyses of the primary endpoint",
                    "Estimand (ICH E9(R1))", "Claim table", "Instrument: API generations and drift",
                    "Methods, software and data", "Subject S05",
                    "Treatment minus control", "percent change from baseline", "responders"):
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
    section = section_html(page, "Claim table: change from baseline per arm and visit")
    row = demo_study().claims().query("metric == 'score.water' and arm == 'active' and visit == 'W12'").iloc[0]
    assert f"{row.mean_pct_change:+.1f} ({row.pct_ci_low:+.1f} to {row.pct_ci_high:+.1f})" in section
    assert f"{int(row.improved)}/{row.n} ({row.improved_pct:.0f}%)" in section


def test_the_measures_section_prints_the_raters_and_the_self_assessment(report):
    from skintrack.demo import demo_study

    page = report.html.read_text()
    section = section_html(page, "Measures beside the photographs")
    assert "Stratum corneum hydration, Corneometer CM 825 (SIMULATED)" in section and ">measure.corneometer<" in section
    raters = demo_study().raters().set_index("statistic")
    for statistic in ("ICC(2,1)", "weighted kappa (quadratic)"):
        assert f">{raters.at[statistic, 'estimate']:.2f}<" in section and f">{statistic}<" in section
    likert = demo_study().claims("measure.feels_hydrated").query("arm == 'active' and visit == 'W12'").iloc[0]
    assert (f"{int(likert.agreeing)}/{likert.n} ({likert.agreeing_pct:.0f}%; {likert.agreeing_ci_low:.0f}% to "
            f"{likert.agreeing_ci_high:.0f}%)") in section


def test_the_instrument_section_names_the_generation_and_what_the_sentinel_saw(report):
    page = report.html.read_text()
    section = section_html(page, "Instrument: API generations and drift")
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


def pdf_pages(path) -> list[str]:
    """Each page's text, as the PDF lays it out (pdfium reads it from the page's own text objects)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]


def table_page(pages: list, number: int) -> int:
    """The page that prints table `number` (the last to name it: the contents list it first)."""
    return max(i for i, p in enumerate(pages) if f"Table {number}. " in p)


def test_pdf_pages_render(report):
    import pypdfium2 as pdfium

    assert report.pdf_engine == "chromium"
    pdf = pdfium.PdfDocument(report.pdf)
    n = len(pdf)
    assert 8 <= n <= 24
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
        # nearly empty: a lone title or small table (little text, little ink and no figure); the title page is
        # meant to stand alone
        assert i == 0 or len(body) > 900 or inked > 0.05 or (figures and len(body) > 200), \
            f"page {i + 1} is nearly empty ({len(body)} chars, {inked:.1%} ink, {figures} figures)"
    first = pdf[0].get_textpage().get_text_range()
    for fact in ("Sample trial (SIMULATED)", "Sponsor", "Protocol", "SIM-2024-01", "Plan version", "Report date",
                 "study version", "Approval", "Prepared by (biostatistician)", "Approved by (sponsor)", "signature"):
        assert fact in first, fact
    assert "Contents" in pdf[1].get_textpage().get_text_range() and "List of tables" in pdf[1].get_textpage(
        ).get_text_range()
    synopsis = next(i for i in range(n) if "1. Synopsis and headline findings" in pdf[i].get_textpage(
        ).get_text_range() and "Primary endpoint 1" in pdf[i].get_textpage().get_text_range())
    assert synopsis in (2, 3)  # after the title page and the contents


def test_tables_and_figures_are_numbered_in_order_and_listed(report):
    doc = report.document
    assert [t.number for t in doc.tables] == list(range(1, len(doc.tables) + 1)) and len(doc.tables) >= 20
    assert [f.number for f in doc.figures] == list(range(1, len(doc.figures) + 1))
    assert [f.name for f in doc.figures] == report.figures
    pages = pdf_pages(report.pdf)
    contents = "".join(pages[1:3])
    where = []
    for t in doc.tables:
        assert f"Table {t.number}. {t.caption[:40]}" in " ".join(contents.split()), t.number  # listed
        where.append(table_page(pages, t.number))
    assert where == sorted(where)  # numbered in the order they are printed
    populations = [t.population for t in doc.tables if t.population]
    assert len(populations) >= len(doc.tables) - 6 and all(p.startswith("Population: ") for p in populations)
    demographics = next(t for t in doc.tables if t.caption.startswith("Baseline characteristics"))
    assert list(demographics.cells.columns) == ["", "placebo (N=12)", "active (N=12)"]  # control first, N per arm
    methods = " ".join(" ".join(pages).split())
    assert methods.count("Numbers are rounded to 2 decimals") == methods.count("(below 0.001 as <0.001;") == 1  # once


def test_the_docx_holds_the_same_numbered_tables_as_the_pdf(report):
    """The DOCX read back with python-docx: headings, captions and a contents field in Word's styles, and each
    numbered table's cells equal to the PDF's, page by page."""
    import docx

    word = docx.Document(report.docx)
    body = word.element.body
    assert any("TOC" in (t.text or "") for t in body.iter(qn("w:instrText")))  # the table of contents field
    assert any("SEQ Table" in (t.text or "") for t in body.iter(qn("w:instrText")))
    headings = [p.text for p in word.paragraphs if p.style.name == "Heading 1"]
    assert headings[:2] == ["Contents", "1. Synopsis and headline findings"]
    captions = [p.text for p in word.paragraphs if p.style.name == "Caption"]
    doc = report.document
    assert [c for c in captions if c.startswith("Table")] == [f"Table {t.number}. {t.caption}" for t in doc.tables]
    assert [c for c in captions if c.startswith("Figure")] == [f"Figure {f.number}. {f.caption}" for f in doc.figures]
    assert len(word.inline_shapes) == len(doc.figures)
    tables = {}  # each numbered table is the first table after its caption
    caption = None
    for el in body.iterchildren():
        if el.tag == qn("w:p"):
            text = "".join(t.text or "" for t in el.iter(qn("w:t")))
            caption = int(text.split()[1].rstrip(".")) if text.startswith("Table ") and el.find(
                f".//{qn('w:instrText')}") is not None else caption
        elif el.tag == qn("w:tbl") and caption is not None:
            tables[caption] = docx.table.Table(el, word)
            caption = None
    pages = pdf_pages(report.pdf)
    flat = [" ".join(p.split()) for p in pages]
    for t in doc.tables:
        rows = [[c.text for c in r.cells] for r in tables[t.number].rows]
        assert rows[0] == list(t.cells.columns) and rows[1:] == t.cells.values.tolist(), t.number
        page = table_page(flat, t.number)
        shown = flat[page] + " " + (flat[page + 1] if page + 1 < len(flat) else "")
        for cell in (c for row in t.cells.values.tolist() for c, numeric in zip(row, t.numeric) if numeric and c):
            assert cell in shown, (t.number, cell)


def test_no_p_value_is_rounded_across_a_significance_level():
    """p 0.0496 printed "0.050" beside "significant" at alpha 0.05: more decimals where 3 would cross a level (the
    common ones and the plan's alpha)."""
    from skintrack.show.document import Document, fmt_p

    printed = {p: fmt_p(p) for p in (0.0496, 0.04996, 0.0995, 0.00996, 0.02496, 0.0499999999, 0.0504, 0.2345, 0.0004)}
    assert printed == {0.0496: "0.0496", 0.04996: "0.04996", 0.0995: "0.0995", 0.00996: "0.00996",
                       0.02496: "0.02496", 0.0499999999: "<0.050", 0.0504: "0.050", 0.2345: "0.234", 0.0004: "<0.001"}
    assert fmt_p(float("nan")) == "n/a"
    assert (fmt_p(0.0396), fmt_p(0.0396, (0.04,))) == ("0.040", "0.0396")  # the report adds the plan's alpha
    assert Document("", levels=(0.04,)).table(pd.DataFrame({"p": [0.0396]}), "t").cells.iloc[0, 0] == "0.0396"
    rng = np.random.default_rng(3)
    for p in rng.uniform(0.0005, 0.2, 20_000):
        text = fmt_p(p)
        value = float(text.lstrip("<"))
        assert all((p < level) == (value < level or text == f"<{level:.3f}") for level in (0.01, 0.025, 0.05, 0.1))


def test_the_photographs_follow_the_plans_rule_not_the_response(report):
    doc = report.document
    section = next(s for s in doc.sections if s.title == "Photographs at D0 and W12")
    rule = section.parts[0].text
    assert "the plan's rule: 2 subjects per arm drawn at random (seed 7)" in rule and "whatever their response" in rule
    shown = [f for f in section.parts if getattr(f, "kind", "") == "figure"]
    subjects = [f.name.split("-")[1] for f in shown]
    from skintrack.demo import demo_study

    arms = demo_study().sql("SELECT subject_id, arm FROM subjects").set_index("subject_id")["arm"]
    assert sorted(arms[subjects].value_counts().tolist()) == [2, 2]  # two per arm
    assert all("photographs at D0 and W12, cropped to the API's face box" in f.caption for f in shown)
    subject_page = next(s for s in doc.sections if s.title == "Subject S05")
    assert any(getattr(p, "name", "").startswith("subject-S05-photos") for p in subject_page.parts)
    assert "Arm: " in subject_page.parts[0].text and "D0 (" in subject_page.parts[0].text


def test_a_photo_whose_bytes_changed_is_not_shown(tmp_path):
    import shutil

    import skintrack
    from skintrack.sample import sample_study_dir
    from skintrack.tables.plan import Plan

    src = sample_study_dir()
    (tmp_path / "in").mkdir()
    (tmp_path / "photos").mkdir()
    for sid in [f"S{i:02d}" for i in range(1, 25)]:
        for visit in ("D0", "W12"):
            shutil.copy(src / "responses" / f"{sid}_{visit}.json", tmp_path / "in")
            shutil.copy(src / "responses" / f"{sid}_{visit}.meta.json", tmp_path / "in")
            shutil.copy(src / "photos" / f"{sid}_{visit}.jpg", tmp_path / "photos")
    manifest = pd.read_csv(src / "manifest.csv")
    manifest[manifest["file"].str.contains("_(?:D0|W12)", regex=True)].assign(
        file=lambda d: d["file"].str.replace("responses/", "in/")).to_csv(tmp_path / "m.csv", index=False)
    skintrack.ingest([tmp_path / "in"], tmp_path / "s", manifest=tmp_path / "m.csv", subjects=src / "subjects.csv")
    plan = Plan.load(src / "plan.toml")
    plan.illustration = {"subjects": ["S01", "S02"]}
    plan.write(tmp_path / "s")
    with open(tmp_path / "photos" / "S02_W12.jpg", "r+b") as fh:  # one byte changed after it was analysed
        fh.seek(2000)
        fh.write(b"\x00")
    r = build_report(skintrack.open(tmp_path / "s"), tmp_path / "r", metrics=["score.water"], pdf=False, docx=False)
    section = next(s for s in r.document.sections if s.title.startswith("Photographs"))
    texts = [p.text for p in section.parts if p.kind == "text"]
    assert "the subjects the plan names (S01, S02)" in texts[0]
    assert [f.name.split("-")[1] for f in section.parts if f.kind == "figure"] == ["S01"]
    assert any("bytes no longer match the SHA-256" in t and "S02 (W12)" in t for t in texts)


def test_report_cli(run_cli, tmp_path):
    from skintrack.demo import demo_study
    from skintrack.sinks import css_string

    proc = run_cli("report", demo_study().path, "--out", tmp_path / "l", "--metrics", "score.water", "--paper",
                   "letter", "--figures", "png,svg,pdf", "--no-pdf", "--sponsor", "Acme Labs", "--title", "CSR 9",
                   check=0)
    assert "report:" in proc.stdout and "1. Primary endpoint 1, Skin moisture score at W12 (MMRM, fixed-sequence testing" \
        " at alpha 0.05): active improved it by 15.5 points more than placebo" in proc.stdout
    assert f"docx: {tmp_path / 'l' / 'report.docx'}" in proc.stdout
    page = (tmp_path / "l" / "report.html").read_text()
    assert "size: letter" in page
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
    assert r.findings == [] and "No between-arm comparison was possible" in page
    assert [f.split("-")[0] for f in r.figures] == ["score.water", "photos", "photos", "qc_overview"]
    assert "default rule (the plan names none): 2 subjects drawn at random (seed 1)" in page  # from every subject


def test_a_study_with_only_its_baseline_yet_still_gets_a_report(tmp_path):
    """A trial in progress: every endpoint's visit is still to come. The report says why each endpoint is not
    estimable and shows what there is, instead of stopping (on an endpoints table without counts, then on a
    responders table at a visit not held yet)."""
    import shutil

    import skintrack
    from conftest import responses
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    skintrack.ingest(responses(src / "responses", "*_D0.json"), tmp_path / "s", manifest=src / "manifest.csv",
                     subjects=src / "subjects.csv")
    shutil.copy(src / "plan.toml", tmp_path / "s" / "plan.toml")
    s = skintrack.open(tmp_path / "s")
    assert s.visits == ["D0"]
    ends = s.endpoints()
    assert set(ends["decision"]) == {"not estimable"} and ends["n_treatment"].isna().all()
    assert set(ends["reason"]) == {"no visit 'W12' in this study (visits: D0)"}
    with pytest.raises(skintrack.UsageError, match=r"^no visit 'W12' in this study \(visits: D0\)$"):
        s.sensitivity()  # said as the endpoints say it (it was "no single difference at visit 'W12'")
    r = build_report(s, tmp_path / "r", pdf=False)
    page = r.html.read_text()
    assert page.count("in this study (visits: D0)") >= len(ends) and "Newcombe" not in page
    assert r.docx.stat().st_size > 0 and r.figures


def test_an_arm_without_follow_up_gets_a_report_that_says_what_is_not_estimable(tmp_path):
    """The placebo arm photographed at its baseline only: every between-arm number is not estimable, and each
    section that needs one says so under its own title, with the reason, while every other section is drawn
    (the report stopped at the first one: "an arm has no subject to count responders in")."""
    import shutil

    import skintrack
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    arms = dict(line.split(",")[:2] for line in (src / "subjects.csv").read_text().splitlines()[1:])
    rows = (src / "manifest.csv").read_text().splitlines()
    kept = [r for r in rows[1:] if arms[r.split(",")[1]] == "active" or r.split(",")[2] == "D0"]
    (tmp_path / "m.csv").write_text("\n".join([rows[0], *(str(src) + "/" + r for r in kept)]) + "\n")
    skintrack.ingest([src / r.split(",")[0] for r in kept], tmp_path / "s", manifest=tmp_path / "m.csv",
                     subjects=src / "subjects.csv")
    shutil.copy(src / "plan.toml", tmp_path / "s" / "plan.toml")
    s = skintrack.open(tmp_path / "s")
    with pytest.raises(skintrack.UsageError, match="score.water: no subject of placebo has a change from baseline "
                                                   "at W12 to count as a responder or not"):
        s.responders_between("score.water")
    r = build_report(s, tmp_path / "r", metrics=["score.water", "score.rough"], pdf=False)
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.html.read_text()))
    assert "Skin moisture score: responders not estimable in this study: score.water: no subject of placebo" in page
    for section in ("Primary endpoint", "Sensitivity analyses of the primary endpoint"):
        assert f"{section} Not estimable in this study: score.water: the control arm &#39;placebo&#39; has no " \
               "post-baseline observation" in page
    assert "Endpoint 1 (active): score.water: the control arm &#39;placebo&#39; has no post-baseline observation" \
        in page  # the endpoints table's reason, under it
    assert "Claim table" in page and "Capture quality" in page and "Methods, software and data" in page
    assert r.docx.stat().st_size > 0


def test_a_primary_endpoint_in_shares_of_the_face_prints_its_digits(tmp_path):
    """An area's share of the face moves by hundredths: the finding and the tables print 3 significant digits
    of the largest (at 1 decimal its difference read "improved it by 0.1 share more than placebo (95% CI -0.2 to
    -0.0)")."""
    import shutil

    import skintrack
    from skintrack.sample import sample_study_dir
    from skintrack.show.document import cells

    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    plan = (src / "plan.toml").read_text().replace('metric = "score.water"', 'metric = "area.water.whole_face"')
    (tmp_path / "s" / "plan.toml").write_text(plan)
    s = skintrack.open(tmp_path / "s")
    d = s.endpoints().iloc[0]
    assert d["metric"] == "area.water.whole_face" and abs(d["estimate"]) < 0.1
    r = build_report(s, tmp_path / "r", metrics=["area.water.whole_face"], pdf=False, docx=False)
    places = 2 - int(np.floor(np.log10(max(abs(d["estimate"]), abs(d["ci_low"]), abs(d["ci_high"])))))  # 3 digits
    assert f"{abs(d['estimate']):.{places}f} share more than placebo (95% CI {d['ci_low']:.{places}f} to " \
           f"{d['ci_high']:.{places}f};" in r.findings[0]
    shown = cells(pd.DataFrame({"change": [0.0123, -0.004], "points": [12.5, 3.25], "half": [0.5, 0.25]}))
    assert shown.values.tolist() == [["0.0123", "12.50", "0.50"], ["-0.0040", "3.25", "0.25"]]
    shutil.rmtree(tmp_path / "r")


def test_a_primary_endpoint_the_study_holds_no_value_of_is_said_and_the_rest_is_written(tmp_path):
    """A plan may name a metric of another API generation than the study's (an older region form): its endpoint
    is not estimable, with why, and the report and the ADaM export are written all the same (the report stopped
    in the demographics and the export on the empty metric's records)."""
    import skintrack
    from skintrack.sample import sample_study_dir
    from skintrack.show.adam import adam, paramcd

    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    plan = (src / "plan.toml").read_text().replace('metric = "score.water"',
                                                   'metric = "area.enlarged_pore.right_cheek"')
    (tmp_path / "s" / "plan.toml").write_text(plan)
    s = skintrack.open(tmp_path / "s")
    first = s.endpoints().iloc[0]
    assert first["decision"] == "not estimable"
    assert first["reason"] == "area.enlarged_pore.right_cheek: no value of it after the baseline in this study"
    r = build_report(s, tmp_path / "r", metrics=["score.water"], pdf=False, docx=False)
    assert "no value of it after the baseline in this study" in r.findings[0]
    _, adskin = adam(s)
    assert paramcd("area.enlarged_pore.right_cheek") not in set(adskin["PARAMCD"])
    assert paramcd("score.water") in set(adskin["PARAMCD"])  # the other parameters are there


def test_the_endpoints_own_map_over_the_vendors_two_recordings(tmp_path):
    import skintrack
    from skintrack.tables.plan import Endpoint, Plan

    from conftest import FIXTURES

    case = FIXTURES / "real" / "ailabtools-docs-case1"
    (tmp_path / "m.csv").write_text("file,subject_id,visit,taken_at\nresponse-old.json,S1,D0,2024-01-01\n"
                                    "response-v1.7.json,S1,W4,2024-01-29\n")
    skintrack.ingest([case / "response-old.json", case / "response-v1.7.json"], tmp_path / "s",
                     manifest=tmp_path / "m.csv")
    Plan(baseline="D0", primary=Endpoint("score.water", "W4")).write(tmp_path / "s")
    r = build_report(skintrack.open(tmp_path / "s"), tmp_path / "r", metrics=["score.total"], pdf=False, docx=False)
    shown = [f for f in r.figures if f.startswith("photos-S1-")]
    assert len(shown) == 1 and (tmp_path / "r" / "figures" / f"{shown[0]}.png").exists()
    page = r.html.read_text()
    assert "the API&#39;s face maps at D0 and W4, cropped to the API&#39;s face box, the water area map of the " \
           "endpoint over them" in page
    assert "skintrack&#39;s default rule (the plan names none)" in page
    # the vendor's two recordings come from two API generations: the instrument section says so
    section = section_html(page, "Instrument: API generations and drift")
    assert "More than one generation measured this study" in section and "subject S1" in section
    assert "the analyses come from v1.6.6, v1.7.6" in page


def test_every_table_orders_visits_by_schedule_and_the_control_first(report):
    """Issue 22: the % change table sorted visits as text (W4, W12, W8) and arms the other way."""
    table = next(t for t in report.document.tables if t.caption.endswith("percent change from baseline"))
    pairs = [tuple(r) for r in table.cells[["visit", "arm"]].values.tolist()]
    assert pairs[:6] == [("W4", "placebo"), ("W4", "active"), ("W8", "placebo"), ("W8", "active"),
                         ("W12", "placebo"), ("W12", "active")]


@pytest.fixture(scope="session")
def three_arm_report(tmp_path_factory, browser):
    """The SIMULATED 3-arm study (vehicle, low, high x 10; Baseline, Day14, Day28, Day56) to PDF and DOCX."""
    import skintrack
    from three_arms import three_arm_study

    study = three_arm_study(tmp_path_factory.mktemp("three-arms"))
    return build_report(skintrack.open(study), tmp_path_factory.mktemp("three-arm-report"),
                        metrics=["score.water", "score.rough"], subject=["P02"])


def test_three_arms_read_in_one_order_on_every_page(three_arm_report):
    """Visits by schedule and arms control first, then the plan's doses, in every table of the PDF (read back
    from its pages); the headline findings are a table of the comparisons."""
    pages = [" ".join(p.split()) for p in pdf_pages(three_arm_report.pdf)]
    doc = three_arm_report.document
    order = [f"{v} {a}" for v in ("Day14", "Day28", "Day56") for a in ("vehicle", "low", "high")]
    for t in doc.tables:
        if {"visit", "arm"} <= set(t.cells.columns) and list(t.cells.columns[:2]) == ["visit", "arm"]:
            page = pages[table_page(pages, t.number)]
            text = page[page.rindex(f"Table {t.number}. "):]
            at = [text.index(pair) for pair in order]
            assert at == sorted(at), (t.number, t.caption)  # printed in schedule and plan order
    findings = next(t for t in doc.tables if t.caption.startswith("Headline findings"))
    assert findings.cells["comparison"].tolist() == ["low vs vehicle", "high vs vehicle"] * 2
    assert list(findings.cells.columns) == ["endpoint", "comparison", "estimate (95% CI)", "p adjusted", "decision"]
    assert not any(f.startswith("Primary endpoint 1") for f in pages[3:4])  # no sentence repeated per arm
    demographics = next(t for t in doc.tables if t.caption.startswith("Baseline characteristics"))
    assert list(demographics.cells.columns) == ["", "vehicle (N=10)", "low (N=10)", "high (N=10)"]
    endpoints = next(t for t in doc.tables if t.caption.startswith("Endpoints:"))
    assert endpoints.cells["p adjusted"].str.len().min() > 0  # Dunnett: every comparison has its adjusted p
    photos = [f for f in doc.figures if f.name.startswith("photos-")]
    assert len(photos) == 3 and "1 subject per arm drawn at random (seed 3)" in " ".join(pages)
    assert any(f.name.startswith("subject-P02-photos") for f in doc.figures)
    assert not any(t.caption == "Captures flagged by QC" and t.cells.empty for t in doc.tables)  # nothing empty drawn


def test_three_arm_docx_matches_its_document(three_arm_report):
    import docx

    word = docx.Document(three_arm_report.docx)
    captions = [p.text for p in word.paragraphs if p.style.name == "Caption"]
    doc = three_arm_report.document
    assert len([c for c in captions if c.startswith("Table ")]) == len(doc.tables)
    body = [[c.text for c in r.cells] for t in word.tables for r in t.rows]
    for t in doc.tables:
        for row in t.cells.values.tolist():
            assert row in body, (t.number, row)


def test_docx_tables_are_the_xml_python_docx_writes_cell_by_cell():
    """word._grid copies one filled cell per alignment instead of formatting each cell through python-docx; the
    table's XML is the same as python-docx's own, cell by cell, for every kind of text."""
    from docx import Document as Word
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt
    from lxml import etree

    from skintrack.show import word

    texts = ["12.5", "", " lead", "trail ", "a\tb", "two\nlines", "\r", "Ünïcode ≥ 5 µm", "<b>&amp;</b>", "x" * 300,
             "=HYPERLINK(1)", "S" + chr(0) + "01", "\u00a0nbsp"]
    rows = [[texts[(r + c) % len(texts)] for c in range(4)] for r in range(2 * len(texts))]
    header = ["subject", "visit" + chr(0), "value\t(mm)", " note"]
    numeric = [False, False, True, False]

    def by_python_docx(doc):
        table = doc.add_table(rows=len(rows) + 1, cols=4)
        table.style = doc.styles["Table Grid"]
        table.alignment = word.WD_TABLE_ALIGNMENT.LEFT
        word._repeat_header(table.rows[0])
        for cell, text in zip(table.rows[0].cells, header):
            cell.text = word.xml_text(text)
            for run in cell.paragraphs[0].runs:
                run.bold = True
            word._shade(cell, "EEF3F8")
        for r, values in enumerate(rows):
            for c, (cell, text) in enumerate(zip(table.rows[r + 1].cells, values)):
                cell.text = word.xml_text(text)
                if numeric[c]:
                    cell.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.RIGHT
        for row in table.rows:
            for cell in row.cells:
                for p in cell.paragraphs:
                    p.paragraph_format.space_after = Pt(0)
                    for run in p.runs:
                        run.font.size = Pt(8)
        return table

    ours, theirs = word._grid(Word(), rows, header, numeric), by_python_docx(Word())
    assert etree.tostring(ours._tbl) == etree.tostring(theirs._tbl)
    assert len(ours._tbl.findall(f".//{qn('w:tab')}")) > 0 and len(ours._tbl.findall(f".//{qn('w:br')}")) > 0


def test_a_subject_page_asked_for_a_subject_the_study_does_not_know_is_refused_before_writing(tmp_path):
    """A typo in --subject gave a report whose page said only that the subject had no analyses."""
    from skintrack import UsageError
    from skintrack.demo import demo_study

    with pytest.raises(UsageError, match=r"^subject 'S5': not in this study \(subjects: S01, S02, "):
        build_report(demo_study(), tmp_path / "r", subject=["S05", "S5"], pdf=False)
    assert not (tmp_path / "r").exists()
