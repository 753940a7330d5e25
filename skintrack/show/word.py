"""The report as DOCX for a medical writer (python-docx): the same numbered sections, tables and figures as
the PDF, from the same cells, with Word's own styles (Title, Heading 1, Caption, a table style), a table
of contents field, lists of tables and figures, captions numbered by SEQ fields, a running header and a
"page X of Y" footer. Word refreshes the fields on opening; their text is already right before that.

Example
-------
>>> import tempfile, pathlib, pandas as pd
>>> from skintrack.show.document import Document
>>> doc = Document("Trial")
>>> _ = doc.section("Results", [doc.table(pd.DataFrame({"arm": ["placebo"], "n": [12.0]}), "Subjects")])
>>> path = write_docx(doc, pathlib.Path(tempfile.mkdtemp()) / "report.docx")
>>> import docx
>>> [c.text for c in docx.Document(path).tables[-1].rows[1].cells]
['placebo', '12']
"""
from __future__ import annotations

import io
from copy import deepcopy
from pathlib import Path

from docx import Document as Word
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_BREAK
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Pt, RGBColor

from ..sinks import xml_text
from .document import Document

PAGE = {"A4": (Cm(21.0), Cm(29.7)), "letter": (Cm(21.59), Cm(27.94))}


def _field(paragraph, code: str, shown: str = "") -> None:
    """A Word field (`code`, e.g. "PAGE" or 'SEQ Table \\* ARABIC') whose current text is `shown`."""
    def char(kind):
        el = OxmlElement("w:fldChar")
        el.set(qn("w:fldCharType"), kind)
        run = paragraph.add_run()
        run._r.append(el)

    char("begin")
    instr = OxmlElement("w:instrText")
    instr.set(qn("xml:space"), "preserve")
    instr.text = f" {code} "
    paragraph.add_run()._r.append(instr)
    char("separate")
    paragraph.add_run(xml_text(shown))
    char("end")


def _shade(cell, fill: str) -> None:
    shading = OxmlElement("w:shd")
    shading.set(qn("w:val"), "clear")
    shading.set(qn("w:color"), "auto")
    shading.set(qn("w:fill"), fill)
    cell._tc.get_or_add_tcPr().append(shading)


def _repeat_header(row) -> None:
    el = OxmlElement("w:tblHeader")
    el.set(qn("w:val"), "true")
    row._tr.get_or_add_trPr().append(el)


def _paragraph(word, text: str = "", style: str | None = None):
    """A new paragraph of `text` in the style whose id is `style` ("Caption", "Heading1", ...). The id is set
    as such: python-docx looks a style's name up by searching every style, at each paragraph."""
    p = word.add_paragraph(text)
    if style:
        p._p.style = style
    return p


def _grid(word, rows: list, header: list | None, numeric: list | None = None):
    """A table of strings in the 'Table Grid' style, its header row bold, shaded and repeated on each page."""
    table = word.add_table(rows=len(rows) + (1 if header else 0), cols=len(header or rows[0]))
    table._tbl.tblStyle_val = "TableGrid"  # by id, as `_paragraph` sets a style
    table.alignment = WD_TABLE_ALIGNMENT.LEFT
    at = 0
    if header:
        _repeat_header(table.rows[0])
        for cell, text in zip(table.rows[0].cells, header):
            _fill(cell, xml_text(text), right=False)
            for run in cell.paragraphs[0].runs:
                run.bold = True
            _shade(cell, "EEF3F8")
        at = 1
    made = {}  # a cell filled through python-docx, per alignment: the others are copies of it, their text set
    for r, values in enumerate(rows):
        for c, (cell, text) in enumerate(zip(table.rows[r + at].cells, values)):
            text, right = xml_text(text), bool(numeric and numeric[c])
            plain = bool(text) and text == text.strip() and not any(ch in text for ch in "\t\n\r")
            if plain and right in made:  # python-docx's XML (tests/test_report.py), a fifth of the time
                copy = deepcopy(made[right])
                copy.find(f"{qn('w:p')}/{qn('w:r')}/{qn('w:t')}").text = text
                cell._tc.getparent().replace(cell._tc, copy)
                continue
            _fill(cell, text, right)  # the first of its kind, and any text python-docx writes specially
            if plain:
                made.setdefault(right, cell._tc)
    return table


def _fill(cell, text: str, right: bool) -> None:
    """`text` in `cell`, in 8 pt, unspaced (right-aligned when `right`), through python-docx."""
    cell.text = text
    p = cell.paragraphs[0]
    if right:
        p.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    p.paragraph_format.space_after = Pt(0)
    for run in p.runs:
        run.font.size = Pt(8)


def _caption(word, kind: str, number: int, text: str) -> None:
    p = _paragraph(word, style="Caption")
    p.add_run(f"{kind} ")
    _field(p, f"SEQ {kind} \\* ARABIC", str(number))
    p.add_run(xml_text(f". {text}"))
    if kind == "Table":
        p.paragraph_format.keep_with_next = True


def write_docx(doc: Document, path, paper: str = "A4") -> Path:
    """Write `doc` as DOCX at `path` (atomically); returns the path."""
    from ..tables.store import write_atomic

    word = Word()
    section = word.sections[0]
    section.page_width, section.page_height = PAGE.get(paper, PAGE["A4"])
    for side in ("left_margin", "right_margin"):
        setattr(section, side, Cm(1.8))
    word.styles["Normal"].font.name = "DejaVu Sans"
    word.styles["Normal"].font.size = Pt(9.5)
    word.styles["Caption"].font.size = Pt(8.5)
    word.styles["Caption"].font.color.rgb = RGBColor(0x1D, 0x1D, 0x1D)
    header = section.header.paragraphs[0]
    header.text = xml_text(doc.header)
    header.runs[0].font.size = Pt(7.5)
    footer = section.footer.paragraphs[0]
    footer.add_run(xml_text(doc.footer) + " | page ")
    _field(footer, "PAGE", "1")
    footer.add_run(" of ")
    _field(footer, "NUMPAGES", "1")
    for run in footer.runs:
        run.font.size = Pt(7.5)

    _paragraph(word, xml_text(doc.title), "Title")
    if doc.notice:
        word.add_paragraph().add_run(f"SIMULATED DATA. {xml_text(doc.notice)}").bold = True
    if doc.facts:
        _grid(word, [list(f) for f in doc.facts], None)
    _paragraph(word, "Approval", "Heading2")
    _grid(word, [[role, "", "", ""] for role in doc.approvals], ["role", "name", "signature", "date"])
    word.add_paragraph().add_run().add_break(WD_BREAK.PAGE)

    _paragraph(word, "Contents", "Heading1")
    _field(word.add_paragraph(), 'TOC \\o "1-1" \\h \\z \\u',
           "; ".join(f"{s.number}. {s.title}" for s in doc.sections))  # _field makes it XML-safe
    for kind, parts in (("Table", doc.tables), ("Figure", doc.figures)):
        _paragraph(word, f"List of {kind.lower()}s", "Heading2")
        listing = word.add_paragraph()
        _field(listing, f'TOC \\h \\z \\c "{kind}"', "")
        for part in parts:
            _paragraph(word, xml_text(f"{kind} {part.number}. {part.caption}"), "ListBullet")
    word.add_paragraph().add_run().add_break(WD_BREAK.PAGE)

    for s in doc.sections:
        if s.kind == "subject":
            word.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        _paragraph(word, xml_text(f"{s.number}. {s.title}"), "Heading1")
        for part in s.parts:
            if part.kind == "table":
                _caption(word, "Table", part.number, part.caption)
                _grid(word, part.cells.values.tolist(), list(part.cells.columns), part.numeric)
                if part.population:
                    p = word.add_paragraph(xml_text(part.population))
                    p.runs[0].font.size, p.runs[0].font.color.rgb = Pt(7.5), RGBColor(0x55, 0x55, 0x55)
            elif part.kind == "figure":
                word.add_picture(io.BytesIO(part.png), width=Cm(15))
                word.paragraphs[-1].paragraph_format.keep_with_next = True
                _caption(word, "Figure", part.number, part.caption)
            elif part.kind == "flow":
                _grid(word, [[count for _, count in part.steps]], [name for name, _ in part.steps])
            else:
                p = word.add_paragraph(xml_text(part.text))
                if part.style == "note":
                    p.runs[0].font.size, p.runs[0].font.color.rgb = Pt(8), RGBColor(0x55, 0x55, 0x55)
                elif part.style == "finding":
                    p.paragraph_format.left_indent = Cm(0.3)
    settings = word.settings.element  # refresh the fields (contents, page numbers) when Word opens it
    update = OxmlElement("w:updateFields")
    update.set(qn("w:val"), "true")
    settings.append(update)
    buffer = io.BytesIO()
    word.save(buffer)
    path = Path(path)
    write_atomic(path, buffer.getvalue())
    return path
