"""Text from users is data: every writer makes it safe for its own sink here, in one place.

Subject ids, arm names, visit labels, CSV headers and plan titles reach HTML, CSS, spreadsheets, file
names, SQL and chart labels. Each sink has one function; no writer escapes by hand.

::

    sink                              function            what it does to text
    HTML text and attribute values    html()              & < > " ' escaped; control and bidi characters shown as <U+202E>
    a CSS string ("..." in @page)     css_string()        every character but letters, digits and space as a \\HHHHHH escape
    a spreadsheet cell (CSV)          spreadsheet_cell()  a text starting = + - @ tab or CR gets a leading ' (OWASP)
    an xlsx cell                      xlsx_workbook()     text stays text: never a formula, a link or a number
    a file name                       file_name()         a slug of [A-Za-z0-9._-] plus 8 hex of the text's SHA-256
    a SQL identifier                  sql_identifier()    double-quoted, inner quotes doubled, NUL refused
    a SQL string literal              sql_literal()       single-quoted, inner quotes doubled, NUL refused
    a matplotlib label                plot_text()         $ escaped (no mathtext), control characters shown
    XML text: DOCX, Define-XML        xml_text()          characters XML cannot hold (and bidi overrides) shown

Parquet, XPT and Dataset-JSON keep the raw value: they are data formats, read by programs.

Example
-------
>>> str(html('<script>alert("x")</script>'))
'&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;'
>>> spreadsheet_cell("=HYPERLINK(\\"http://x\\")"), spreadsheet_cell(-3.5)
('\\'=HYPERLINK("http://x")', -3.5)
>>> file_name("01/003")
'01_003-bf637cc2'
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

from markupsafe import Markup, escape

from .errors import UsageError

# Characters that draw nothing or reorder what follows (Trojan Source): shown by their code point.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ufffe\uffff]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def visible(text) -> str:
    """`text` with control, zero-width and bidirectional-override characters written as <U+XXXX>."""
    return _INVISIBLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", str(text))


def xml_text(text) -> str:
    """Text for an XML document (the DOCX report, Define-XML): the characters XML 1.0 cannot hold (NUL and
    the other controls) and the invisible ones written as <U+XXXX>; the XML writer escapes the rest.

    >>> xml_text("S" + chr(0) + "01")
    'S<U+0000>01'
    """
    return visible(text)


def html(text) -> Markup:
    """Text for an HTML text node or a quoted attribute value (a `Markup`, so that it is not escaped twice).

    >>> str(html("a\\u202eb"))
    'a&lt;U+202E&gt;b'
    """
    return escape(visible(text))


def css_string(text) -> Markup:
    """Text for the inside of a double-quoted CSS string (as in `@page { content: "..." }`): everything but
    ASCII letters, digits and spaces is a hex escape, so no quote, backslash or `</style>` survives.

    >>> str(css_string('A & "B" </style>'))
    'A \\\\000026  \\\\000022 B\\\\000022  \\\\00003C \\\\00002F style\\\\00003E '
    """
    return Markup("".join(c if c.isascii() and (c.isalnum() or c == " ") else f"\\{ord(c):06X} " for c in
                          visible(text)))


def spreadsheet_cell(value):
    """A value for a CSV cell: a text that a spreadsheet would run as a formula gets a leading apostrophe
    (OWASP "CSV Injection"); numbers, dates and empty cells are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def spreadsheet_frame(df):
    """A copy of a DataFrame ready for a CSV a spreadsheet may open: `spreadsheet_cell` on every text cell and
    on the header (numbers keep their type)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or str(out[col].dtype) in ("string", "str"):
            out[col] = out[col].map(spreadsheet_cell)
    out.columns = [spreadsheet_cell(str(c)) for c in out.columns]
    return out


def xlsx_workbook(path, **options):
    """An Excel workbook (xlsxwriter) that writes every text as text, never as a formula (a text starting with
    =), a link or a number; `options` are xlsxwriter's. It is held in memory: the file is written at `close()`,
    so a workbook abandoned half-way leaves nothing behind.

    >>> import tempfile, zipfile
    >>> path = tempfile.mkdtemp() + "/x.xlsx"
    >>> with xlsx_workbook(path) as book:
    ...     book.add_worksheet("s").write(0, 0, '=HYPERLINK("http://x")')
    0
    >>> b"<f>" in zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml")
    False
    """
    import xlsxwriter

    return xlsxwriter.Workbook(str(path), {"in_memory": True, **options, "strings_to_formulas": False,
                                           "strings_to_urls": False, "strings_to_numbers": False})


def file_name(text, most: int = 40) -> str:
    """A file name for any text (an id, a label): safe characters only, at most `most` of them, plus a short
    hash of the whole text, so that two texts never share a name and `..` or `/` never leave the folder."""
    raw = str(text)
    slug = _SLUG.sub("_", unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()).strip("._-")
    return f"{slug[:most] or 'x'}-{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def sql_identifier(name) -> str:
    """A quoted SQL identifier (a column named by a CSV header); an empty name or one with NUL is refused."""
    name = str(name)
    if not name or "\x00" in name:
        raise UsageError(f"the name {visible(name)!r} cannot name a column (empty, or holding a NUL character)")
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text) -> str:
    """A quoted SQL string literal (for the few statements that take no bound parameters: ATTACH, LOAD)."""
    text = str(text)
    if "\x00" in text:
        raise UsageError(f"the text {visible(text)!r} holds a NUL character")
    return "'" + text.replace("'", "''") + "'"


def plot_text(text) -> str:
    """A label for a matplotlib chart: dollar signs escaped (never mathtext), invisible characters shown."""
    return visible(text).replace("$", r"\$")
