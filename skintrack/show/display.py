"""How helper results and fits look in Jupyter: labelled tables rounded by the report's rule, with the call
that made them as the caption; the DataFrame underneath keeps every digit.

A study's helpers label their DataFrames (`titled`); `register` teaches IPython to draw a labelled frame
this way (any other DataFrame keeps pandas' own display), and a fit draws itself (`fit_html`).

Example
-------
>>> import pandas as pd
>>> df = titled(pd.DataFrame({"visit": ["W4"], "estimate": [1.23456], "std_error": [0.5], "p_adjusted": [0.0004]}),
...             "mmrm('score.water')")
>>> print(html(df))  # doctest: +ELLIPSIS
<table class="skintrack">...<th>SE</th><th>p adjusted</th>...<td>1.23</td><td>0.50</td><td>&lt;0.001</td>...
>>> df["estimate"].iloc[0]
np.float64(1.23456)
"""
from __future__ import annotations

import pandas as pd

from ..sinks import html as escape
from .document import HEADERS, cells

KEY = "skintrack"  # the attrs entry: the call that made the frame and the shape it had
MAX_ROWS = 60  # longer frames show their first and last 30 rows
LABELS = {**HEADERS, "subject_id": "subject"}


def titled(df: pd.DataFrame, call: str) -> pd.DataFrame:
    """Label `df` (in place; returned) with the call that made it."""
    df.attrs[KEY] = {"call": call, "shape": df.shape}
    return df


def label(column) -> str:
    """A column's name as a table heads it: p-values start with "p " (so the p rounding applies)."""
    name = str(column)
    if name.startswith("p_"):
        return "p " + name[2:].replace("_", " ")
    if name.endswith("_p"):
        return "p " + name[:-2].replace("_", " ")
    return LABELS.get(name, name.replace("_", " "))


def html(df: pd.DataFrame, caption: str | None = None) -> str:
    """`df` as an HTML table: headed by labels, rounded by the report's rule, every cell escaped."""
    call = df.attrs.get(KEY, {}).get("call", "")
    shown = df if isinstance(df.index, pd.RangeIndex) else df.reset_index()
    if len(df) > MAX_ROWS:
        shown = pd.concat([shown.head(MAX_ROWS // 2), shown.tail(MAX_ROWS // 2)])
    body = cells(shown.set_axis([label(c) for c in shown.columns], axis=1).reset_index(drop=True))
    rows = [f"<tr>{''.join(f'<td>{escape(v)}</td>' for v in row)}</tr>" for row in body.itertuples(index=False)]
    if len(df) > MAX_ROWS:
        rows.insert(MAX_ROWS // 2, f"<tr><td colspan='{len(body.columns)}'>... {len(df) - MAX_ROWS} rows ...</td></tr>")
    head = "".join(f"<th>{escape(c)}</th>" for c in body.columns)
    note = f"{len(df)} rows, rounded as the report rounds them; the DataFrame keeps every digit"
    title = escape(caption if caption is not None else call)
    return (f'<table class="skintrack"><caption style="text-align:left"><b>{title}</b><br><small>{escape(note)}'
            f"</small></caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def frame_html(df: pd.DataFrame) -> str | None:
    """IPython's text/html for a DataFrame: ours for a helper's result as it came, pandas' for any other."""
    mark = df.attrs.get(KEY)
    if isinstance(mark, dict) and tuple(mark.get("shape", ())) == df.shape:
        return html(df)
    return df._repr_html_()


def fit_html(fit) -> str:
    """An MMRM fit as its differences and LS-means tables, with what was fitted and how."""
    return (f"<div><p><b>MMRM of {escape(fit.metric)}</b>: {escape(fit.method)}; {fit.n_subjects} subjects, "
            f"{fit.n_obs} observations{'' if fit.converged else ' (DID NOT CONVERGE)'}</p>"
            f"{html(fit.diffs, 'Differences (treatment minus control)')}{html(fit.lsmeans, 'LS-means')}</div>")


def register() -> None:
    """Draw labelled DataFrames this way in a running IPython (nothing happens outside one)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)
