"""Text from users is data, never markup, formula, path or SQL: the same hostile strings go in as subject
ids, arm and visit labels, CSV headers, manifest values and plan names, and every output skintrack writes
is read back and checked (the report in Chromium and as a PDF, CSV, Excel, Parquet, XPT, Dataset-JSON, the
CLI's CSV, every file name)."""
from __future__ import annotations

import csv
import html.parser
import io
import json
import re
import subprocess
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import skintrack
from skintrack import sinks
from skintrack.tables.manifest import Manifest, read_subjects

from test_report import browser, render  # noqa: F401 - the session's Chromium


SCRIPT = "<script>document.body.setAttribute('data-pwned','1')</script>"
IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"
FORMULA = '=HYPERLINK("http://evil.example","click")'
CMD = "=cmd|' /C calc'!A0"
HOSTILE_SUBJECTS = ["01/003", "../../etc/passwd", SCRIPT, "\u202eevil", "a\"b'c", "'; DROP TABLE subjects; --",
                    "+1+1", "@SUM(1,2)"]
ARMS = {"control": IMG, "treatment": FORMULA}
VISITS = {"D0": "D0", "W4": "=W4+1", "W8": "-W8<i>", "W12": "W12\"><b>x</b>"}
STYLE_BREAK = 'A & "B" </style><script>alert(1)</script>'
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """The sample trial's first 8 subjects under hostile ids, arms and visit labels, with hostile CSV headers,
    manifest values and plan names."""
    from skintrack.sample import sample_study_dir

    sample, root = sample_study_dir(), tmp_path_factory.mktemp("hostile")
    ids = {f"S{i:02d}": h for i, h in enumerate(HOSTILE_SUBJECTS, 1)}
    manifest = pd.read_csv(sample / "manifest.csv", dtype=str)
    manifest = manifest[manifest["subject_id"].isin(ids)]
    manifest["file"] = [str(sample / f) for f in manifest["file"]]
    manifest["subject_id"] = manifest["subject_id"].map(ids)
    manifest["visit"] = manifest["visit"].map(VISITS)
    manifest = manifest.rename(columns={"operator": "=op"}).assign(**{"=op": CMD})
    manifest.to_csv(root / "manifest.csv", index=False)
    subjects = pd.read_csv(sample / "subjects.csv", dtype=str)
    subjects = subjects[subjects["subject_id"].isin(ids)]
    subjects["subject_id"] = subjects["subject_id"].map(ids)
    subjects["arm"] = subjects["arm"].map({"placebo": ARMS["control"], "active": ARMS["treatment"]})
    subjects["@note"] = "-2+3"
    subjects.to_csv(root / "subjects.csv", index=False)
    study = root / "study"
    skintrack.ingest(manifest["file"].tolist(), study, manifest=root / "manifest.csv", subjects=root / "subjects.csv")
    skintrack.Plan(title=SCRIPT + " " + "L" * 2000, sponsor=STYLE_BREAK + "\u202e\x00", product=FORMULA,
                   protocol="../../P/01", baseline="D0",
                   visits=[skintrack.Visit(v, d, 3) for v, d in zip(VISITS.values(), (0, 28, 56, 84))],
                   control=ARMS["control"], treatments=[ARMS["treatment"]],
                   primary=skintrack.Endpoint("score.water", VISITS["W12"]),
                   sensitivity={"methods": ["qc"], "imputations": 5}).write(study)  # text, not imputation, is tested
    return study


@pytest.fixture(scope="session")
def outputs(hostile, tmp_path_factory):
    """Every output, written by the CLI as a user would."""
    out = tmp_path_factory.mktemp("out")
    exe = str(Path(__import__("sys").executable).with_name("skintrack"))

    def cli(*args):
        proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    got = {"report": cli("report", hostile, "--out", out / "report", "--subject", HOSTILE_SUBJECTS[0],
                         "--subject", HOSTILE_SUBJECTS[1], "--figures", "png,svg"),
           "export": cli("export", hostile, "--out", out / "adam"),
           "qc": cli("qc", hostile, "--csv"), "timeline": cli("trends", hostile, "score.water", "--view", "timeline",
                                                                 "--csv"),
           "sql": skintrack.open(hostile).sql("select * from analyses")}
    assert got["report"].returncode == 0 and got["export"].returncode == 0, got["report"].stderr + got["export"].stderr
    return out, got


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.handlers, self.sources = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.sources += [value for name, value in attrs if name == "src"]


def test_no_hostile_text_is_live_in_the_report(outputs, browser, tmp_path):  # noqa: F811
    out, _ = outputs
    page = (out / "report" / "report.html").read_text()
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and not parsed.handlers
    assert parsed.sources and all(src.startswith("data:image/png;base64,") for src in parsed.sources)
    assert "<b>x</b>" not in page and "<i>" not in page
    dom, _ = render(browser, out / "report" / "report.html", tmp_path)
    assert "<body" in dom and "data-pwned=" not in dom  # no script ran, no handler fired
    for text in (SCRIPT, IMG, FORMULA, "01/003"):  # shown as text, escaped once
        assert str(sinks.html(text)) in page


def test_the_pdf_header_shows_the_names_as_written(outputs):
    import pypdfium2

    out, _ = outputs
    pdf = pypdfium2.PdfDocument(out / "report" / "report.pdf")
    text = pdf[1].get_textpage().get_text_range()
    assert 'A & "B" </style><script>alert(1)</script>' in text.replace("\r\n", " ").replace("\n", " ")
    assert "&amp;" not in text and "&#34;" not in text


def test_every_file_name_is_a_safe_slug_inside_its_folder(outputs):
    out, _ = outputs
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 20
    for p in files:
        assert SAFE_NAME.match(p.name), p
        assert out in p.resolve().parents
    assert not (out.parent / "etc").exists() and not (out / "etc").exists()


def _csv_cells(text: str):
    for row in csv.reader(io.StringIO(text)):
        yield from row


def _number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("where", ["adam/adsl.csv", "adam/adskin.csv", "adam/define.csv", "qc", "timeline"])
def test_no_csv_cell_is_a_formula(outputs, where):
    out, got = outputs
    text = (out / where).read_text() if "/" in where else got[where].stdout
    cells = list(_csv_cells(text))
    assert cells
    live = [c for c in cells if c.startswith(FORMULA_START) and not _number(c)]
    assert live == []
    if where == "adam/adsl.csv":
        assert "'" + FORMULA in cells and "'-2+3" in cells  # neutralised, still readable


def test_excel_holds_strings_never_formulas_and_the_data_formats_keep_the_raw_text(outputs):
    import pyreadstat

    out, _ = outputs
    for name in ("adsl", "adskin"):
        book = openpyxl.load_workbook(out / "adam" / f"{name}.xlsx")
        for sheet in book.worksheets:
            assert [c.coordinate for row in sheet.iter_rows() for c in row if c.data_type == "f"] == []
    adsl = {"xlsx": pd.read_excel(out / "adam" / "adsl.xlsx", sheet_name="ADSL", skiprows=[1]),  # row 2: labels
            "parquet": pd.read_parquet(out / "adam" / "adsl.parquet"),
            "xpt": pyreadstat.read_xport(str(out / "adam" / "adsl.xpt"))[0]}
    doc = json.loads((out / "adam" / "adsl.json").read_text())
    adsl["json"] = pd.DataFrame(doc["rows"], columns=[c["name"] for c in doc["columns"]])
    for fmt, df in adsl.items():
        assert set(df["ARM"]) == set(ARMS.values()), fmt
        assert sorted(df["SUBJID"]) == sorted(HOSTILE_SUBJECTS), fmt


def test_the_study_keeps_every_hostile_name_as_data(hostile, outputs):
    s = skintrack.open(hostile)
    assert sorted(s.sql("select subject_id from subjects")["subject_id"]) == sorted(HOSTILE_SUBJECTS)
    assert set(s.sql('select "=op" from sessions')["=op"]) == {CMD}
    assert set(s.visits) == set(VISITS.values())
    fit = s.mmrm("score.water")
    assert fit.diffs["treatment"].tolist() == [ARMS["treatment"]] * 3


@pytest.mark.parametrize("header, said", [
    ("file,subject_id,visit,analysis_id", "column 'analysis_id' (column 4) is reserved"),
    ("file,subject_id,visit,assigned_at", "column 'assigned_at' (column 4) is reserved"),
    ("file,subject_id,visit,ok", "column 'ok' (column 4) is reserved"),
    ("file,subject_id,arm,subject_id", "column 'subject_id' (column 4) repeats column 2"),
    ("file,subject_id,Visit,visit", "column 'visit' (column 4) repeats column 3")])
def test_reserved_and_repeated_manifest_columns_are_refused_with_line_and_name(tmp_path, header, said, run_cli,
                                                                              sample):
    (tmp_path / "m.csv").write_text(f"{header}\nS01_D0.json,S01,D0,x\n")
    with pytest.raises(skintrack.InvalidManifest, match=re.escape(said)) as info:
        Manifest.read(tmp_path / "m.csv")
    assert str(info.value).startswith(f"{tmp_path / 'm.csv'}:1: ")
    proc = run_cli("ingest", sample / "responses" / "S01_D0.json", "--study", tmp_path / "s", "--manifest",
                   tmp_path / "m.csv")
    assert proc.returncode == 2 and said in proc.stderr and not (tmp_path / "s" / "lake.sqlite").exists()


@pytest.mark.parametrize("header, said", [("subject_id,arm,ARM", "column 'ARM' (column 3) repeats column 2"),
                                          ("subject_id,arm,value", "column 'value' (column 3) is reserved"),
                                          ("subject_id,arm,assigned_at", "column 'assigned_at' (column 3) is reserved")])
def test_reserved_and_repeated_subject_columns_are_refused(tmp_path, header, said):
    (tmp_path / "s.csv").write_text(f"{header}\nS01,a,b\n")
    with pytest.raises(skintrack.InvalidManifest, match=re.escape(said)):
        read_subjects(tmp_path / "s.csv")


@pytest.mark.parametrize("text", [SCRIPT, IMG, FORMULA, CMD, "../../x", "01/003", "a\x00b", "\u202eevil", "L" * 5000,
                                  'a"b', "", "..", "."])
def test_each_sink_on_each_hostile_string(text):
    assert "<" not in str(sinks.html(text)) and '"' not in str(sinks.html(text))
    assert re.fullmatch(r"[A-Za-z0-9 \\]*", str(sinks.css_string(text)))
    cell = sinks.spreadsheet_cell(text)
    assert not cell.startswith(FORMULA_START)
    name = sinks.file_name(text)
    assert SAFE_NAME.match(name) and len(name) <= 49 and name not in (".", "..")
    assert sinks.file_name(text) != sinks.file_name(text + "x")
    if "\x00" in text or not text:
        with pytest.raises(skintrack.UsageError):
            sinks.sql_identifier(text)
    else:
        import duckdb

        assert duckdb.sql(f"select 1 as {sinks.sql_identifier(text)}").columns == [text]
        assert duckdb.sql(f"select {sinks.sql_literal(text)} as v").fetchall() == [(text,)]
    assert "$" not in sinks.plot_text("$x$").replace("\\$", "")


@pytest.mark.parametrize("text", [FORMULA, CMD, "+1+1", "@SUM(1,2)", "-2+3", "http://evil.example/x", "1e5", "007",
                                  "a\x01b", "_x0041_"])
def test_an_xlsx_cell_holds_the_text_as_text(tmp_path, text):
    with sinks.xlsx_workbook(tmp_path / "x.xlsx") as book:
        book.add_worksheet("s").write_row(0, 0, [text, 1.5])
    sheet = openpyxl.load_workbook(tmp_path / "x.xlsx")["s"]
    cell = sheet["A1"]
    assert cell.data_type == "s" and cell.hyperlink is None and sheet["B1"].value == 1.5
    # Excel's own escape for a character XML cannot hold: _xHHHH_ (a literal _x0041_ escaped in turn)
    assert cell.value == text.replace("\x01", "_x0001_")
