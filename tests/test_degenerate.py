"""Degenerate studies cut from the SIMULATED sample trial (an arm without follow-up, a visit nobody attended, a
visit held by the measures only, two subjects per arm, a random third of the captures, only the baseline), with
the measures of the subjects kept, each under plans whose primary endpoint is a score, an area's share, a count,
a grade, a metric the study holds no value of and one without an order: every endpoint is a number or says why
not, every analysis answers or refuses with a reason (`UsageError`), and the report and the ADaM export are
written. Found by a longer run of the same cuts (seeds and plans at random): an overflow, a division by zero, a
NaN root and three crashed reports, each fixed and kept here as its case."""
import random
import shutil

import numpy as np
import pytest

import skintrack
from skintrack import UsageError
from skintrack.sample import sample_study_dir
from skintrack.show.adam import adam
from skintrack.show.report import build_report

SRC = sample_study_dir()
ROWS = (SRC / "manifest.csv").read_text().splitlines()
ARMS = dict(line.split(",")[:2] for line in (SRC / "subjects.csv").read_text().splitlines()[1:])


def _cut(kind: str, rows: list[str]) -> list[str]:
    first_two = {arm: sorted(s for s, a in ARMS.items() if a == arm)[:2] for arm in set(ARMS.values())}
    keep = {
        "an arm without follow-up": lambda r: ARMS[r[1]] == "active" or r[2] == "D0",
        "no W8 at all": lambda r: r[2] != "W8",
        "no W12 photograph, W12 measures": lambda r: r[2] != "W12",
        "two subjects per arm": lambda r: r[1] in first_two[ARMS[r[1]]],
        "a random third": lambda r, rnd=random.Random(17): rnd.random() < 0.35,
        "only the baseline": lambda r: r[2] == "D0",
    }[kind]
    return [row for row in rows if keep(row.split(","))]


PRIMARIES = ["score.water", "area.water.whole_face", "count.blackhead.nose", "severity.pores.chin",
             "area.enlarged_pore.right_cheek", "tone.skin_tone"]  # the last two: no value, no order


@pytest.fixture(scope="module", params=["an arm without follow-up", "no W8 at all", "no W12 photograph, W12 measures",
                                        "two subjects per arm", "a random third", "only the baseline"])
def cut(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cut")
    rows = _cut(request.param, ROWS[1:])
    (folder / "m.csv").write_text("\n".join([ROWS[0], *(f"{SRC}/{r}" for r in rows)]) + "\n")
    measured = {r.split(",")[1] for r in rows}  # the measures of the subjects photographed, at every visit
    readings = (SRC / "measures.csv").read_text().splitlines()
    (folder / "measures.csv").write_text("\n".join([readings[0], *(r for r in readings[1:]
                                                                 if r.split(",")[0] in measured)]) + "\n")
    skintrack.ingest([SRC / r.split(",")[0] for r in rows], folder / "s", manifest=folder / "m.csv",
                     subjects=SRC / "subjects.csv", measures=folder / "measures.csv",
                     measures_catalog=SRC / "measures.toml")
    return folder


@pytest.mark.parametrize("primary", PRIMARIES)
def test_every_number_is_given_or_refused_with_why_and_the_report_and_export_are_written(cut, primary):
    plan = (SRC / "plan.toml").read_text().replace('metric = "score.water"', f'metric = "{primary}"')
    (cut / "s" / "plan.toml").write_text(plan)
    s = skintrack.open(cut / "s")
    ends = s.endpoints()
    for e in ends.itertuples():
        assert np.isfinite(e.estimate) or (e.decision in ("not estimable", "not tested") and
                                           (e.reason or e.decision == "not tested")), e
    for analysis in (s.sensitivity, lambda: s.mmrm(primary), lambda: s.responders_between("score.water"), s.claims):
        try:
            analysis()
        except UsageError as e:
            assert str(e)  # a refusal says why
            assert "no single difference" not in str(e) or str(e).startswith(primary)  # of which metric
    shutil.rmtree(cut / "r", ignore_errors=True)
    r = build_report(s, cut / "r", metrics=[primary], pdf=False)
    assert r.html.stat().st_size and r.docx.stat().st_size
    _, adskin = adam(s)
    assert adskin["AVAL"].notna().all()


def test_every_chart_of_the_study_is_drawn_or_refused_with_why(cut):
    """A notebook's `s.plot` on the same cuts: a chart, or a `UsageError` saying why there is nothing to draw.
    Found by a run of every chart on every cut: the change bars of a study without a defined interval (NaN axis
    limits) and the responder bars of an arm missing a visit (a NaN count as its label) crashed."""
    from skintrack.show.charts import png_bytes

    s = skintrack.open(cut / "s")
    for metric in PRIMARIES:
        charts = {"trend": lambda: s.plot.trend(metric), "change": lambda: s.plot.change(metric),
                  "waterfall": lambda: s.plot.waterfall(metric), "responders": lambda: s.plot.responders(metric, 1.0),
                  "lsmeans": lambda: s.plot.lsmeans(metric),
                  "regions": lambda: s.plot.regions(metric.rsplit(".", 1)[0])}
        for name, chart in charts.items():
            try:
                fig = chart()
            except UsageError as e:
                assert str(e), (metric, name)
                continue
            assert png_bytes(fig, dpi=30).startswith(b"\x89PNG"), (metric, name)
