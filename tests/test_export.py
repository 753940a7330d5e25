"""The ADaM export read back as a statistician's tools read it: every row checked against the helpers."""
import json

import numpy as np
import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pyreadstat
import pytest

from skintrack.demo import demo_study
from skintrack.show.adam import paramcd
from skintrack.errors import UsageError
from skintrack.show.export import _xlsx, export
from skintrack.tables.catalog import catalog


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam")
    export(demo_study(), out, metrics=["score.water", "count.blackhead.nose", "severity.pores.chin"])
    return out


def test_paramcd_is_unique_and_fits_sas_v5_over_the_whole_catalog():
    codes = [paramcd(k) for k in catalog()["key"]]
    assert len(set(codes)) == len(codes) and max(map(len, codes)) <= 8
    assert all(c.isalnum() and c.isupper() or c.isdigit() for c in codes)


def test_xpt_is_sas_v5_with_labels_and_every_row_matches_the_helpers(exported):
    s = demo_study()
    for name in ("adsl", "adskin"):
        df, meta = pyreadstat.read_xport(exported / f"{name}.xpt")
        assert max(map(len, df.columns)) <= 8 and all(0 < len(lab) <= 40 for lab in meta.column_labels)
    adsl = pd.read_sas(exported / "adsl.xpt", format="xport", encoding="utf-8")
    assert len(adsl) == 24 and set(adsl["ITTFL"]) == {"Y"} and set(adsl["TRT01P"]) == {"active", "placebo"}
    # pandas decodes the IBM float zero of XPORT as 5.4e-79 (pyreadstat and SAS read 0)
    assert [round(x, 12) for x in adsl["TRT01PN"]] == [0.0 if a == "placebo" else 1.0 for a in adsl["TRT01P"]]
    assert {"AGE", "SEX", "SKIN_TYP"} <= set(adsl.columns)
    adskin = pd.read_sas(exported / "adskin.xpt", format="xport", encoding="utf-8")
    water = adskin[adskin["PARAMCD"] == "SCWATER"].copy()
    water["subject_id"] = water["USUBJID"].str.split("-").str[-1]
    assert len(water) == 96  # every capture is a record; the 3 QC-flagged ones say why they are not analysed
    assert sorted(water.loc[water["ANLREAS"] != "", "ANLREAS"].str.split(" [(]").str[0]) == \
        ["excluded by capture QC"] * 3
    ch = s.change_from_baseline("score.water").merge(s.timeline("score.water")[["subject_id", "visit", "taken_at"]])
    used = water[water["ANLREAS"] == ""]
    merged = used.merge(ch, left_on=["subject_id", "AVISIT"], right_on=["subject_id", "visit"], validate="1:1")
    assert len(merged) == len(used) == len(ch) == 93
    close = dict(rtol=1e-13, atol=1e-9)  # XPORT stores IBM floats: the last bits may move
    np.testing.assert_allclose(merged["AVAL"], merged["value"], **close)
    np.testing.assert_allclose(merged["BASE"], merged["baseline_value"], **close)
    post = ~merged["is_baseline"].astype(bool)
    np.testing.assert_allclose(merged.loc[post, "CHG"], merged.loc[post, "delta"], **close)
    assert merged.loc[~post, "CHG"].isna().all()
    assert (merged["ABLFL"] == "Y").sum() == 24 and set(merged.loc[merged["ABLFL"] == "Y", "AVISIT"]) == {"D0"}
    sas_epoch = pd.Timestamp("1960-01-01")
    assert ((sas_epoch + pd.to_timedelta(merged["ADT"], unit="D")).dt.date == merged["taken_at"].dt.date).all()
    flagged = s.qc().query("flagged")
    assert set(zip(water.loc[water["CRIT1FL"] == "Y", "subject_id"], water.loc[water["CRIT1FL"] == "Y", "AVISIT"])) \
        == set(zip(flagged["subject_id"], flagged["visit"]))
    assert (merged["ANL01FL"] == "Y").sum() == s.mmrm("score.water").n_obs  # the primary analysis records
    assert set(adskin["PARAMCD"]) == {"SCWATER", paramcd("count.blackhead.nose"), paramcd("severity.pores.chin")}


def test_parquet_csv_excel_and_dataset_json_hold_the_same_rows(exported):
    xpt = pd.read_sas(exported / "adskin.xpt", format="xport", encoding="utf-8")
    table = pq.read_table(exported / "adskin.parquet")
    assert table.num_rows == len(xpt) and table.schema.field("CHG").metadata[b"label"] == b"Change from Baseline"
    assert len(pd.read_csv(exported / "adskin.csv")) == len(xpt)
    book = openpyxl.load_workbook(exported / "adsl.xlsx", read_only=True)
    assert book.sheetnames == ["ADSL", "define"]
    sheet = openpyxl.load_workbook(exported / "adskin.xlsx")["ADSKIN"]
    names, labels = [c.value for c in sheet[1]], [c.value for c in sheet[2]]
    assert names == list(xpt.columns) and labels[names.index("CHG")] == "Change from Baseline"
    assert sheet.freeze_panes == "A3" and sheet.auto_filter.ref.startswith("A2:")
    assert sheet.column_dimensions["H"].width >= len(labels[7]) // 2  # widths set, not Excel's default
    excel = pd.read_excel(exported / "adskin.xlsx", skiprows=[1])
    assert len(excel) == len(xpt) and excel["TRTPN"].dtype.kind == "i"  # codes as integers
    assert all(isinstance(c.value, int) for c in sheet["D"][2:12])
    csv_codes = pd.read_csv(exported / "adskin.csv", dtype=str)["AVISITN"].dropna()
    assert not csv_codes.str.contains(r"\.").any()  # 4, never 4.0
    doc = json.loads((exported / "adskin.json").read_text())
    assert doc["datasetJSONVersion"] == "1.1.0" and doc["records"] == len(doc["rows"]) == len(xpt)
    assert [c["name"] for c in doc["columns"]] == list(xpt.columns)
    assert next(c for c in doc["columns"] if c["name"] == "ADT")["dataType"] == "date"
    define = pd.read_csv(exported / "define.csv")
    assert set(define["dataset"]) == {"ADSL", "ADSKIN"} and define["label"].notna().all()


@pytest.mark.parametrize("value", ["x" * 40_000, np.inf])
def test_a_value_no_spreadsheet_holds_is_refused_by_name(tmp_path, value):
    frame = pd.DataFrame({"USUBJID": ["S1", "S2"], "AVAL": [1.0, 2.0]})
    frame.loc[1, "USUBJID" if isinstance(value, str) else "AVAL"] = value
    frame.attrs["labels"] = {}
    with pytest.raises(UsageError, match=f"adsl.xlsx: column {'USUBJID' if isinstance(value, str) else 'AVAL'} "
                                         "holds a value no spreadsheet cell can hold"):
        _xlsx(tmp_path / "adsl.xlsx", {"ADSL": frame})
    assert not (tmp_path / "adsl.xlsx").exists()  # no half-written workbook


def test_export_cli(run_cli, tmp_path):
    proc = run_cli("export", demo_study().path, "--out", tmp_path / "x", "--format", "xpt,csv", check=0)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted(
        ["adsl.csv", "adsl.xpt", "adskin.csv", "adskin.xpt", "define.csv", "define.xml"])
    assert proc.stdout.count("\n") == 6
    bad = run_cli("export", demo_study().path, "--out", tmp_path / "y", "--format", "sas7bdat")
    assert bad.returncode == 2 and "unknown export format sas7bdat" in bad.stderr


def _define_schema():
    """The CDISC Define-XML 2.1 schema, as odmlib ships it."""
    from pathlib import Path

    import odmlib
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(Path(odmlib.__file__).parent / "schemas/define/2.1/define2-1-0.xsd")))


def test_define_xml_is_valid_and_describes_every_exported_variable(exported):
    from lxml import etree

    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1",
          "xlink": "http://www.w3.org/1999/xlink"}
    doc = etree.parse(str(exported / "define.xml"))
    schema = _define_schema()
    assert schema.validate(doc), schema.error_log
    for name in ("adsl", "adskin"):
        data, meta = pyreadstat.read_xport(exported / f"{name}.xpt")
        group = doc.find(f".//odm:ItemGroupDef[@Name='{name.upper()}']", ns)
        assert group.find("def:leaf", ns).get(f"{{{ns['xlink']}}}href") == f"{name}.xpt"
        assert (exported / f"{name}.xpt").exists()
        assert group.find("odm:Description/odm:TranslatedText", ns).text == meta.file_label  # the dataset label
        refs = [r.get("ItemOID") for r in group.findall("odm:ItemRef", ns)]
        assert refs == [f"IT.{name.upper()}.{c}" for c in data.columns]  # every variable, in order
        for col, label in zip(data.columns, meta.column_labels):
            item = doc.find(f".//odm:ItemDef[@OID='IT.{name.upper()}.{col}']", ns)
            assert item.find("odm:Description/odm:TranslatedText", ns).text == label, col
            if item.get("DataType") == "text":
                assert int(item.get("Length")) >= data[col].astype(str).str.len().max(), col
    adskin = pd.read_sas(exported / "adskin.xpt", format="xport", encoding="utf-8")
    coded = [c.get("CodedValue") for c in doc.findall(".//odm:CodeList[@OID='CL.PARAMCD']/odm:CodeListItem", ns)]
    assert sorted(coded) == sorted(adskin["PARAMCD"].unique())
    where = {w.find("odm:RangeCheck/odm:CheckValue", ns).text for w in doc.findall(".//def:WhereClauseDef", ns)}
    assert where == set(coded)  # value-level metadata for each parameter
    methods = {m.get("OID") for m in doc.findall(".//odm:MethodDef", ns)}
    assert {"MT.CHG", "MT.PCHG", "MT.ANL01FL", "MT.BASE", "MT.ABLFL"} <= methods
    chg = doc.find(".//odm:ItemGroupDef[@Name='ADSKIN']/odm:ItemRef[@ItemOID='IT.ADSKIN.CHG']", ns)
    assert chg.get("MethodOID") == "MT.CHG"
    graded = adskin[adskin["PARAMCD"] == paramcd("severity.pores.chin")]
    assert set(graded["AVALC"]) <= {"None", "Mild", "Moderate", "Severe"} and graded["AVALC"].str.len().min() > 0
    flags = [c.get("CodedValue") for c in doc.findall(".//odm:CodeList[@OID='CL.NY']/odm:CodeListItem", ns)]
    assert set(flags) <= {"Y", "N"} and "Y" in flags


def test_the_three_arm_study_exports_adam_and_define_a_statistician_accepts(tmp_path):
    import skintrack
    from lxml import etree
    from three_arms import three_arm_study

    s = skintrack.open(three_arm_study(tmp_path / "in"))
    plan = s.plan
    plan.subject_columns = {"sex": {"name": "SEX", "label": "Sex of the subject"}}
    plan.write(s.path)
    s = skintrack.open(s.path)
    export(s, tmp_path / "out", ("xpt",), metrics=["score.water", "score.rough"])
    assert _define_schema().validate(etree.parse(str(tmp_path / "out" / "define.xml")))
    adsl, meta = pyreadstat.read_xport(tmp_path / "out" / "adsl.xpt")
    labels = dict(zip(meta.column_names, meta.column_labels))
    assert labels["SEX"] == "Sex of the subject" and labels["AGE"] == "Age" and set(adsl["AGEU"]) == {"YEARS"}
    assert {"SAFFL", "RANDFL", "TRT01A", "TRT01AN", "TRTEDT"} <= set(adsl.columns)
    assert sorted(set(zip(adsl["TRT01A"], adsl["TRT01AN"]))) == [("high", 2.0), ("low", 1.0), ("vehicle", 0.0)]
    assert meta.file_label == "Subject-Level Analysis Dataset"  # a dataset label never cut mid-word
    adskin, _ = pyreadstat.read_xport(tmp_path / "out" / "adskin.xpt")
    day56 = adskin[(adskin["PARAMCD"] == "SCWATER") & (adskin["AVISIT"] == "Day56")]
    assert set(day56["AWTARGET"]) == {56.0} and set(day56["AWLO"]) == {53.0} and set(day56["AWHI"]) == {59.0}
    assert set(adskin["BASETYPE"]) == {"Baseline"} and set(adskin["TRTA"]) == {"vehicle", "low", "high"}
    assert adskin.groupby("PARAMCD")["PARAMN"].nunique().eq(1).all() and adskin["PARAMN"].nunique() == 2
