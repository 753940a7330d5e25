"""The report as a document: numbered sections of text, numbered tables and figures, built once and
written to HTML (printed to PDF) and to DOCX from the same cells, so a number reads the same in both.

The rounding rule lives here, once: numbers to 2 decimals (a column of values all below 0.1 to 3 significant
digits: `skintrack.analysis.stats.decimals`), a column of whole numbers (scores, counts) as whole numbers,
p-values to 3 decimals (below 0.001 as "<0.001"; more where 3 would round one across a significance level,
the plan's alpha among them: 0.0496 is not "0.050"), an empty value as an empty cell.

Example
-------
>>> import pandas as pd
>>> doc = Document("Trial")
>>> t = doc.table(pd.DataFrame({"arm": ["placebo"], "n": [12.0], "mean": [61.234], "p": [0.0004]}), "Values")
>>> t.number, t.cells.iloc[0].tolist()
(1, ['placebo', '12', '61.23', '<0.001'])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..analysis.stats import decimals

ROUNDING = ("Numbers are rounded to 2 decimals (a column whose values are all below 0.1, such as an area's share "
            "of the face, to 3 significant digits of its largest), whole-number scores and counts are shown as they "
            "are, % changes in the claim table to 1 decimal, and p-values to 3 decimals (below 0.001 as <0.001; with "
            "more decimals where 3 would round one across 0.01, 0.025, 0.05, 0.1 or the plan's alpha).")
LEVELS = (0.01, 0.025, 0.05, 0.1)  # the significance levels no printed p-value is rounded across


def levels_with(alpha: float) -> tuple:
    """The significance levels a report's p-values are never rounded across: the common ones and the plan's."""
    return (*LEVELS, alpha)


HEADERS = {"std_error": "SE", "ci_low": "95% CI low", "ci_high": "95% CI high"}  # how tables head these columns


def fmt_p(p, levels=LEVELS) -> str:
    """A p-value as the report prints it, never rounded across one of `levels`."""
    if p is None or p != p:
        return "n/a"
    if p < 0.001:
        return "<0.001"
    for places in range(3, 7):
        text = f"{p:.{places}f}"
        crossed = [level for level in levels if p < level <= float(text)]  # rounding up only can cross one
        if not crossed:
            return text
    return f"<{crossed[0]:.3f}"  # within 5e-7 of a level: below it is what it says


def cells(df: pd.DataFrame, digits: int = 2, levels=LEVELS) -> pd.DataFrame:
    """`df` as the strings a table prints (the rounding rule above; p-values never across one of `levels`), the
    column names kept."""
    def whole(values: pd.Series) -> bool:
        v = values.dropna()
        return len(v) > 0 and bool(((v % 1) == 0).all())

    out = {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_float_dtype(col):
            if c == "p" or str(c).startswith("p "):
                out[c] = [fmt_p(x, levels) for x in col]
            else:
                places = 0 if whole(col) else decimals(col, digits)
                out[c] = ["" if x != x else f"{x:.{places}f}" for x in col]
        else:
            out[c] = ["" if x is None or (isinstance(x, float) and x != x) else str(x) for x in col]
    return pd.DataFrame(out, columns=list(df.columns), index=range(len(df)))


@dataclass
class Text:
    """A paragraph: `style` is "" (body), "finding", "note" or "code"."""

    text: str
    style: str = ""
    kind: str = "text"


@dataclass
class Table:
    cells: pd.DataFrame
    caption: str
    number: int
    population: str = ""  # the analysis population, printed under the table
    numeric: list = field(default_factory=list)  # per column: numbers (right-aligned) or words
    kind: str = "table"


@dataclass
class Figure:
    png: bytes
    caption: str
    number: int
    name: str
    kind: str = "figure"


@dataclass
class Flow:
    """The subject flow: boxes of (label, count) with arrows between them."""

    steps: list
    kind: str = "flow"


@dataclass
class Section:
    title: str
    number: int
    parts: list
    kind: str = ""  # "subject" starts a page; "keep" keeps the section on one page


@dataclass
class Document:
    """Sections with numbered tables and figures, and the title page's facts."""

    title: str
    facts: list = field(default_factory=list)      # (name, value) rows of the title page
    approvals: list = field(default_factory=list)  # roles of the approval block
    notice: str = ""                               # the SIMULATED banner, when it applies
    header: str = ""
    footer: str = ""
    sections: list = field(default_factory=list)
    levels: tuple = LEVELS  # the significance levels no p-value is rounded across: the plan's alpha among them

    counted: dict = field(default_factory=lambda: {"table": 0, "figure": 0})

    @property
    def tables(self) -> list:
        return [p for s in self.sections for p in s.parts if isinstance(p, Table)]

    @property
    def figures(self) -> list:
        return [p for s in self.sections for p in s.parts if isinstance(p, Figure)]

    def _next(self, kind: str) -> int:
        self.counted[kind] += 1
        return self.counted[kind]

    def table(self, df: pd.DataFrame, caption: str, population: str = "", digits: int = 2) -> Table:
        """The next numbered table of `df` (rounded by the rule above; number columns right-aligned)."""
        numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
        return Table(cells(df, digits, self.levels), caption, self._next("table"), population, numeric)

    def figure(self, png: bytes, caption: str, name: str) -> Figure:
        """The next numbered figure."""
        return Figure(png, caption, self._next("figure"), name)

    def section(self, title: str, parts: list, kind: str = "") -> Section:
        """Add a numbered section of `parts` (a string is a paragraph; empty parts are left out)."""
        section = Section(title, len(self.sections) + 1, [Text(p) if isinstance(p, str) else p for p in parts if p],
                          kind)
        self.sections.append(section)
        return section
