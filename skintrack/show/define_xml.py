"""Define-XML 2.1 for the exported ADaM datasets (lxml): the datasets (item groups) with their XPT files,
every variable (item) with its label, type and length, codelists for coded variables (parameters, visits,
treatments, flags), the methods of the derived variables, and value-level metadata of AVAL per PARAMCD.

The ADaM frames come from `skintrack.show.adam`; `skintrack export` writes ``define.xml`` beside the XPT
files it names. tests/test_export.py validates it against the CDISC Define-XML 2.1 schema (odmlib ships it).

Example
-------
>>> import tempfile, pathlib
>>> from skintrack.demo import demo_study
>>> from skintrack.show.adam import adam
>>> adsl, adskin = adam(demo_study(), ["score.water"])
>>> path = write_define({"ADSL": adsl, "ADSKIN": adskin}, pathlib.Path(tempfile.mkdtemp()) / "define.xml",
...                     study_name="SIM-2024-01")
>>> b"SCWATER" in path.read_bytes()
True
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
from lxml import etree

from .. import __version__
from ..sinks import xml_text
from .export import column_kind

ODM, DEF, XLINK = "http://www.cdisc.org/ns/odm/v1.3", "http://www.cdisc.org/ns/def/v2.1", "http://www.w3.org/1999/xlink"
XML = "http://www.w3.org/XML/1998/namespace"
NSMAP = {None: ODM, "def": DEF, "xlink": XLINK}
STRUCTURE = {"ADSL": ("SUBJECT LEVEL ANALYSIS DATASET", "One record per subject", ["STUDYID", "USUBJID"]),
             "ADSKIN": ("BASIC DATA STRUCTURE", "One record per subject per parameter per analysis visit per capture",
                        ["STUDYID", "USUBJID", "PARAMCD", "AVISIT", "ADT", "ANALYSID"])}
# How each derived variable is computed, said once for every reader of the define.
METHODS = {
    "BASE": "AVAL of the record with ABLFL = 'Y' of the same subject and parameter: the plan's baseline visit, "
            "the latest capture there that passed the plan's QC and window rules.",
    "CHG": "AVAL - BASE, for post-baseline records with a BASE.",
    "PCHG": "100 * (AVAL - BASE) / abs(BASE), for post-baseline records with a non-zero BASE.",
    "ABLFL": "'Y' on the record used as baseline: the latest usable capture at the plan's baseline visit.",
    "ANL01FL": "'Y' on the records the primary analysis uses: the latest capture per subject, parameter and visit "
               "that passes the plan's capture QC, visit windows and intercurrent-event strategies, with a BASE.",
    "AVISIT": "The plan's visit of the capture: its nominal visit, or the visit whose window holds its day when "
              "the plan maps captures to windows.",
    "ADY": "ADT - TRTSDT + 1 on or after the first exposure, ADT - TRTSDT before it (no day 0).",
    "AVALC": "The catalog's label of a graded AVAL.",
    "DTYPE": "'AVERAGE' when AVAL is the mean of several readings of a measure at the visit (raters, replicates, "
             "sides).",
    "EFFFL": "'Y' for randomised subjects with a usable baseline and at least one analysed later value of the "
             "primary endpoint.",
    "SAFFL": "'Y' for randomised subjects photographed after baseline.",
}
DECODES = {"Y": "Yes", "N": "No"}


def _e(parent, tag: str, attrs: dict | None = None, text: str | None = None, ns: str = ODM):
    """An element; its attribute values and text from users made safe for XML (`skintrack.sinks.xml_text`)."""
    el = etree.SubElement(parent, f"{{{ns}}}{tag}")
    for k, v in (attrs or {}).items():
        el.set(k, xml_text(v))
    if text is not None:
        el.text = xml_text(text)
    return el


def _description(parent, text: str, tag: str = "Description") -> None:
    _e(_e(parent, tag), "TranslatedText", {f"{{{XML}}}lang": "en"}, text)


def _kind(series: pd.Series) -> str:
    """Define-XML's data type: the export's kind (`skintrack.show.export`), numbers told apart as integer or
    float."""
    kind = column_kind(series)
    if kind != "double":
        return "date" if kind == "date" else "text"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_float_dtype(series):
        v = series.dropna()
        return "integer" if len(v) and ((v % 1) == 0).all() and v.abs().max() < 2 ** 31 else "float"
    return "text"


def _length(series: pd.Series, kind: str) -> int | None:
    if kind == "date":
        return None
    if kind == "text":
        return max(1, int(series.fillna("").astype(str).str.len().max() or 1)) if len(series) else 1
    v = series.dropna()
    return max(1, len(str(int(v.abs().max())))) if len(v) else 8 if kind == "float" else 1


def _coded(name: str, series: pd.Series) -> list | None:
    """The coded values of a variable a codelist should list (None for free values)."""
    if name in ("PARAMCD", "AVISIT", "TRTP", "TRTA", "TRT01P", "TRT01A", "ARM", "ACTARM", "BASETYPE", "SRCDOM") \
            or name.endswith("FL"):
        return [v for v in dict.fromkeys(series.dropna().astype(str)) if v != ""]
    return None


def write_define(datasets: dict, path, study_name: str = "", description: str = "", source: str = "") -> Path:
    """Write Define-XML 2.1 of `datasets` ({"ADSL": frame, "ADSKIN": frame}, each with ``attrs["labels"]``
    and ``attrs["dataset_label"]``) at `path`; the XPT files are referenced as ``<name>.xpt`` beside it."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    root = etree.Element(f"{{{ODM}}}ODM", nsmap=NSMAP)
    for k, v in {"ODMVersion": "1.3.2", "FileType": "Snapshot", "FileOID": f"DEFINE.{study_name or 'study'}",
                 "CreationDateTime": now, "Originator": "skintrack", "SourceSystem": "skintrack",
                 "SourceSystemVersion": __version__, f"{{{DEF}}}Context": "Other"}.items():
        root.set(k, v)
    study = _e(root, "Study", {"OID": f"STUDY.{study_name or 'study'}"})
    names = _e(study, "GlobalVariables")
    _e(names, "StudyName", text=study_name or "study")
    _e(names, "StudyDescription", text=description or study_name or "study")
    _e(names, "ProtocolName", text=study_name or "study")
    mdv = _e(study, "MetaDataVersion", {"OID": "MDV.1", "Name": f"ADaM of {study_name or 'the study'}",
                                        "Description": source or "skintrack export", f"{{{DEF}}}DefineVersion": "2.1.0"})
    standards = _e(mdv, "Standards", ns=DEF)
    _e(standards, "Standard", {"OID": "STD.ADAMIG", "Name": "ADaMIG", "Type": "IG", "Version": "1.3",
                               "Status": "Final"}, ns=DEF)
    adskin = datasets.get("ADSKIN")
    params = list(dict.fromkeys(adskin["PARAMCD"])) if adskin is not None and len(adskin) else []
    if params:  # value-level metadata: AVAL (and AVALC for a graded parameter) per PARAMCD
        vl = _e(mdv, "ValueListDef", {"OID": "VL.ADSKIN.AVAL"}, ns=DEF)
        for i, code in enumerate(params, 1):
            ref = _e(vl, "ItemRef", {"ItemOID": f"IT.ADSKIN.AVAL.{code}", "OrderNumber": i, "Mandatory": "No"})
            _e(ref, "WhereClauseRef", {"WhereClauseOID": f"WC.ADSKIN.PARAMCD.{code}"}, ns=DEF)
        for code in params:
            wc = _e(mdv, "WhereClauseDef", {"OID": f"WC.ADSKIN.PARAMCD.{code}"}, ns=DEF)
            check = _e(wc, "RangeCheck", {"SoftHard": "Soft", f"{{{DEF}}}ItemOID": "IT.ADSKIN.PARAMCD",
                                          "Comparator": "EQ"})
            _e(check, "CheckValue", text=code)
    items, codelists, methods = [], {}, set()
    for name, df in datasets.items():
        cls, structure, keys = STRUCTURE[name]
        group = _e(mdv, "ItemGroupDef", {"OID": f"IG.{name}", "Name": name, "SASDatasetName": name, "Repeating":
                                         "No" if name == "ADSL" else "Yes", "IsReferenceData": "No",
                                         "Purpose": "Analysis", f"{{{DEF}}}Structure": structure,
                                         f"{{{DEF}}}StandardOID": "STD.ADAMIG", f"{{{DEF}}}ArchiveLocationID":
                                         f"LF.{name}"})
        _description(group, df.attrs.get("dataset_label", name))
        for i, col in enumerate(df.columns, 1):
            attrs = {"ItemOID": f"IT.{name}.{col}", "OrderNumber": i, "Mandatory": "Yes" if col in keys else "No"}
            if col in keys:
                attrs["KeySequence"] = keys.index(col) + 1
            if col in METHODS:
                attrs["MethodOID"] = f"MT.{col}"
                methods.add(col)
            _e(group, "ItemRef", attrs)
            items.append((name, col, df[col]))
        _e(group, "Class", {"Name": cls}, ns=DEF)
        leaf = _e(group, "leaf", {"ID": f"LF.{name}", f"{{{XLINK}}}href": f"{name.lower()}.xpt"}, ns=DEF)
        _e(leaf, "title", text=f"{name.lower()}.xpt", ns=DEF)
    for name, col, series in items:
        kind = _kind(series)
        attrs = {"OID": f"IT.{name}.{col}", "Name": col, "SASFieldName": col, "DataType": kind}
        length = _length(series, kind)
        if length is not None:
            attrs["Length"] = length
        if kind == "float":
            attrs["SignificantDigits"] = 6
        if kind == "date":
            attrs[f"{{{DEF}}}DisplayFormat"] = "DATE9."
        item = _e(mdv, "ItemDef", attrs)
        _description(item, datasets[name].attrs["labels"].get(col, col))
        coded = _coded(col, series)
        if coded:
            key = "NY" if col.endswith("FL") else col
            codelists.setdefault(key, (kind, {}))[1].update({v: _decode(col, v, datasets) for v in coded})
            _e(item, "CodeListRef", {"CodeListOID": f"CL.{key}"})
        origin = "Derived" if col in METHODS else "Assigned" if col in ("STUDYID", "BASETYPE", "CRIT1", "SRCDOM") \
            else "Predecessor"
        _e(item, "Origin", {"Type": origin, "Source": "Sponsor" if origin != "Predecessor" else "Vendor"}, ns=DEF)
        if name == "ADSKIN" and col == "AVAL" and params:
            _e(item, "ValueListRef", {"ValueListOID": "VL.ADSKIN.AVAL"}, ns=DEF)
    for code in params:  # the value-level items: AVAL of each parameter
        rows = adskin[adskin["PARAMCD"] == code]
        kind = _kind(rows["AVAL"])
        attrs = {"OID": f"IT.ADSKIN.AVAL.{code}", "Name": "AVAL", "SASFieldName": "AVAL", "DataType": kind,
                 "Length": _length(rows["AVAL"], kind)}
        if kind == "float":
            attrs["SignificantDigits"] = 6
        item = _e(mdv, "ItemDef", attrs)
        _description(item, f"{rows['PARAM'].iloc[0]}")
        _e(item, "Origin", {"Type": "Predecessor", "Source": "Vendor"}, ns=DEF)
    for key, (kind, values) in codelists.items():
        cl = _e(mdv, "CodeList", {"OID": f"CL.{key}", "Name": "No Yes Response" if key == "NY" else key,
                                  "DataType": "text" if kind == "date" else kind})
        for value, decode in values.items():
            entry = _e(cl, "CodeListItem", {"CodedValue": value})
            _description(entry, decode, "Decode")
    for col in sorted(methods):
        method = _e(mdv, "MethodDef", {"OID": f"MT.{col}", "Name": f"Algorithm to derive {col}",
                                       "Type": "Computation"})
        _description(method, METHODS[col])
    path = Path(path)
    from ..tables.store import write_atomic

    write_atomic(path, etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
    return path


def _decode(col: str, value: str, datasets: dict) -> str:
    """What a coded value means: a parameter's name, else the value itself (Y and N spelled out)."""
    if col == "PARAMCD":
        adskin = datasets["ADSKIN"]
        return str(adskin.loc[adskin["PARAMCD"] == value, "PARAM"].iloc[0])
    return DECODES.get(value, value)
