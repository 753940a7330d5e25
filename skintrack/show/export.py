"""`skintrack export`: the ADaM datasets (ADSL, ADSKIN) as SAS XPORT v5 (with Define-XML 2.1 describing
them), Parquet, CSV, Excel and CDISC Dataset-JSON v1.1, with a define-style listing of every variable (name,
label, type, dataset).

Example
-------
>>> import tempfile
>>> from skintrack.demo import demo_study
>>> out = export(demo_study(), tempfile.mkdtemp(), formats=("csv",), metrics=["score.water"])
>>> sorted(p.name for p in out)
['adskin.csv', 'adsl.csv', 'define.csv']
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from .. import __version__
from ..errors import UsageError
from ..sinks import spreadsheet_frame, xlsx_workbook
from ..tables import store
from .adam import adam

FORMATS = ("xpt", "parquet", "csv", "xlsx", "json")


def column_kind(series: pd.Series) -> str:
    """What an export writes a column as: "date", "double" or "string"."""
    if str(series.name).endswith("DT"):  # ADaM's dates: ADT, TRTSDT, TRTEDT
        return "date"
    return "double" if pd.api.types.is_numeric_dtype(series) else "string"


def define(datasets: dict, source: str = "") -> pd.DataFrame:
    """One row per variable: dataset, variable, label, type, length (longest value for text), and the
    study version the data came from."""
    rows = []
    for name, df in datasets.items():
        for col in df.columns:
            kind = column_kind(df[col])
            length = int(df[col].astype(str).str.len().max()) if kind == "string" and len(df) else 8
            rows.append({"dataset": name, "variable": col, "label": df.attrs["labels"].get(col, ""), "type": kind,
                         "length": length, "source": source})
    return pd.DataFrame(rows)


def export(study, out, formats=FORMATS, metrics=None) -> list[Path]:
    """Write ADSL and ADSKIN of `study` into folder `out` in each of `formats`; returns the files written.
    `define.csv` names the study version they came from (`skintrack export --version N` writes them again)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise UsageError(f"unknown export format {', '.join(sorted(unknown))}: use {', '.join(FORMATS)}")
    out = store.check_output(study.path, out)
    adsl, adskin = adam(study, metrics)  # (which checks the metrics) before any folder is made
    out.mkdir(parents=True, exist_ok=True)
    datasets = {"ADSL": adsl, "ADSKIN": adskin}
    listing = define(datasets, f"{study.path}, {study.version_note}")
    written = []
    for fmt in formats:
        for name, df in datasets.items():
            path = out / f"{name.lower()}.{fmt}"
            if fmt == "xlsx":  # a workbook of sheets: ADSL's holds the define listing too
                _xlsx(path, {name: df} | ({"define": listing} if name == "ADSL" else {}))
            else:
                WRITERS[fmt](df, path, name, study)
            written.append(path)
    spreadsheet_frame(listing).to_csv(out / "define.csv", index=False)
    written.append(out / "define.csv")
    if "xpt" in formats:  # Define-XML 2.1 describes the XPT files it names
        from .define_xml import write_define

        written.append(write_define(datasets, out / "define.xml", study.plan.protocol or study.path.name,
                                    study.plan.title, f"{study.path.name}, {study.version_note}"))
    return written


def _xpt(df, path, name, study):
    import pyreadstat

    data = df.copy()
    for col in data.columns:
        if column_kind(data[col]) == "string":
            data[col] = data[col].fillna("").astype(str)
    formats = {c: "DATE9." for c in data.columns if column_kind(data[c]) == "date"}
    pyreadstat.write_xport(data, str(path), file_label=df.attrs["dataset_label"],
                           column_labels={c: df.attrs["labels"].get(c, "")[:40] for c in data.columns},
                           table_name=name, file_format_version=5, variable_format=formats)


def _parquet(df, path, name, study):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = [f.with_metadata({"label": df.attrs["labels"].get(f.name, "")}) for f in table.schema]
    pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)


def _whole(df: pd.DataFrame) -> pd.DataFrame:
    """Float columns that hold only whole numbers (codes such as TRTPN, AVISITN, PARAMN, and whole scores) as
    integers, so that a spreadsheet shows 1, not 1.0 (the other formats keep their types)."""
    out = df.copy()
    for c in out.columns:
        v = out[c]
        if pd.api.types.is_float_dtype(v) and v.notna().any() and ((v.dropna() % 1) == 0).all() \
                and v.abs().max() < 2 ** 53:
            out[c] = v.astype("Int64")
    return out


def _csv(df, path, name, study):
    spreadsheet_frame(_whole(df)).to_csv(path, index=False)


def _xlsx(path, sheets: dict) -> None:
    """A deliverable workbook, a sheet per frame: variable names, their labels (where the frame has them) in
    the row below, both frozen, filters, widths; whole numbers as integers, dates as dates, text as text."""
    book = xlsx_workbook(path, default_date_format="yyyy-mm-dd")  # written whole at close(), or not at all
    for name, df in sheets.items():
        sheet = book.add_worksheet(name)
        labels = df.attrs.get("labels")
        head = [list(df.columns)] + ([[labels.get(c, "") for c in df.columns]] if labels is not None else [])
        for i, row in enumerate(head):
            sheet.write_row(i, 0, row)
        for j, (col, series) in enumerate(_whole(df).items()):
            values = series.astype(object).where(series.notna(), None).tolist()
            try:
                refused = sheet.write_column(len(head), j, values)  # nonzero: a value it could not write
            except TypeError:  # raised for an infinite number or a type no cell holds
                refused = True
            if refused:
                raise UsageError(f"{Path(path).name}: column {col} holds a value no spreadsheet cell can hold (a "
                                 "text over 32,767 characters or a number that is not finite)")
            shown = [min(len(str(v)), 40) for v in values if v is not None][:200]
            sheet.set_column(j, j, max([len(col), *(min(len(h[j]), 30) for h in head[1:]), *shown]) + 2)
        sheet.freeze_panes(len(head), 0)
        sheet.autofilter(len(head) - 1, 0, len(df) + len(head) - 1, len(df.columns) - 1)
    book.close()


def _json(df, path, name, study):
    """CDISC Dataset-JSON v1.1."""
    kinds = {c: column_kind(df[c]) for c in df.columns}
    rows = [[None if (v is None or (isinstance(v, float) and v != v)) else
             v.isoformat() if kinds[c] == "date" and hasattr(v, "isoformat") else v
             for c, v in zip(df.columns, r)] for r in df.itertuples(index=False)]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    doc = {"datasetJSONCreationDateTime": now, "datasetJSONVersion": "1.1.0", "fileOID": f"skintrack.{name}",
           "dbLastModifiedDateTime": now, "originator": "skintrack",
           "sourceSystem": {"name": "skintrack", "version": __version__},
           "studyOID": study.plan.protocol or study.path.name, "metaDataVersionOID": "MDV.1",
           "itemGroupOID": f"IG.{name}", "records": len(df), "name": name,
           "label": df.attrs["dataset_label"],
           "columns": [{"itemOID": f"IT.{name}.{c}", "name": c, "label": df.attrs["labels"].get(c, ""),
                        "dataType": kinds[c], **({"keySequence": 1} if c == "USUBJID" else {})} for c in df.columns],
           "rows": rows}
    path.write_text(json.dumps(doc, default=_plain))


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


WRITERS = {"xpt": _xpt, "parquet": _parquet, "csv": _csv, "json": _json}
