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
from skintrack.show.export import export
from skintrack.tables.catalog import catalog

pytestmark = pytest.mark.xdist_group("export")  # its module fixtures are built once, on one worker


@pytest.fixture(scope="module")
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


def test_export_cli(run_cli, tmp_path):
    proc = run_cli("export", demo_study().path, "--out", tmp_path / "x", "--format", "xpt,csv", check=0)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted(
        ["adsl.csv", "adsl.xpt", "adskin.csv", "adskin.xpt", "define.csv"])
    assert proc.stdout.count("\n") == 5
    bad = run_cli("export", demo_study().path, "--out", tmp_path / "y", "--format", "sas7bdat")
    assert bad.returncode == 2 and "unknown export format sas7bdat" in bad.stderr
