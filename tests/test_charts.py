"""Charts take the helpers' DataFrames and return Figures, labelled from the catalog, saved three ways."""
import io

import matplotlib
import pandas as pd
import pytest
from matplotlib.figure import Figure

import skintrack
from skintrack import charts

from conftest import FIXTURES


@pytest.fixture(scope="session")
def s():
    from skintrack.demo import demo_study

    return demo_study()


def texts(fig):
    ax = fig.axes[0]
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in ax.get_legend().get_texts()] \
        if ax.get_legend() else []


def test_trend_lines(s):
    fig = charts.trend_lines(s.timeline("score.water"), s.cohort("score.water"), "score.water",
                             s.sql("select * from subjects"))
    title, xlabel, ylabel, legend = texts(fig)
    assert isinstance(fig, Figure) and ylabel == "Skin moisture score (points)" and xlabel == "Visit"
    assert legend == ["active (mean, 95% CI)", "placebo (mean, 95% CI)"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["D0", "W4", "W8", "W12"]
    timeline = s.timeline("score.water")
    lines = fig.axes[0].collections[0].get_segments()  # one line per subject, in one collection
    assert len(lines) == timeline["subject_id"].nunique() == 24
    assert sorted(len(line) for line in lines) == sorted(timeline.groupby("subject_id").size())


def test_a_subjects_line_breaks_where_a_value_is_missing():
    timeline = pd.DataFrame({"subject_id": ["b", "a", "a", "b", "a", "c"], "visit": ["D0", "D0", "W4", "W4", "W8", "W4"],
                             "value": [5.0, 1.0, float("nan"), 6.0, 3.0, 7.0], "arm": ["x", "y", "y", "x", "y", "x"]})
    arms, lines = charts._subject_lines(timeline, {"D0": 0, "W4": 1, "W8": 2})
    assert arms == ["y", "y", "x", "x"]
    assert [line.tolist() for line in lines] == [[[0, 1.0]], [[2, 3.0]], [[0, 5.0], [1, 6.0]], [[1, 7.0]]]
    assert charts._subject_lines(timeline.iloc[:0], {"D0": 0}) == ([], [])


def test_change_bars_mark_significance(s):
    tests = pd.concat([s.compare_arms("score.water", v, test="ancova") for v in ("W4", "W8", "W12")])
    fig = charts.change_bars(s.cohort("score.water"), "score.water", tests)
    marks = [t.get_text() for t in fig.axes[0].texts]
    assert marks == [charts._stars(p) for p in tests["p"]] and marks[-1] == "***"
    assert len(fig.axes[0].patches) == 6  # 3 visits x 2 arms


def test_waterfall_and_responders(s):
    fig = charts.waterfall(s.change_from_baseline("score.water"), "score.water", "W12", s.sql("select * from subjects"))
    assert len(fig.axes[0].patches) == 23 and texts(fig)[3] == ["active", "placebo"]  # S11 W12: QC-excluded
    fig = charts.responder_bars(s.responders("score.water", 10), "score.water", 10)
    assert "improved by at least 10 points" in texts(fig)[0]
    # the plan excludes QC-flagged captures: S03 W8 and S11 W12 (active), S07 W4 (placebo)
    assert [t.get_text() for t in fig.axes[0].texts] == ["4/12", "7/11", "11/11", "0/11", "0/12", "0/12"]


def test_profile_face_and_qc(s):
    prof = pd.DataFrame({"metric": ["score.water", "score.skin_type", "score.acne"], "baseline": [60, 30, 90],
                         "latest": [75, 35, 92]})
    fig = charts.score_profile(prof, "S05")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["Skin moisture", "Acne"]  # no type scale
    regions = pd.DataFrame({"region": ["forehead", "left_cheek", "right_cheek", "whole_face"], "value": [.1, .2, .3, .4]})
    fig = charts.face_regions(regions, "Water", "share")
    assert sorted(t.get_text() for t in fig.axes[0].texts if t.get_text()[0] in "0.") == ["0.1", "0.2", "0.3"]
    fig = charts.qc_overview(s.qc())
    assert fig.axes[0].get_title() == "Capture quality: 3 of 96 analyses flagged"


def test_map_panels_over_the_real_photo(tmp_path):
    import skintrack

    case = FIXTURES / "real" / "ailabtools-docs-case1"
    skintrack.ingest([case / "response-v1.7.json", case / "response-old.json"], tmp_path)
    maps = skintrack.open(tmp_path).sql("select path from maps where name = 'red_area' order by path")["path"]
    fig = charts.map_panels(tmp_path / maps[0], tmp_path / maps[1], "red_area", case / "image.jpeg", case / "image.jpeg")
    assert [ax.get_title() for ax in fig.axes] == ["Baseline: red area", "Latest: red area"]
    assert fig.axes[0].images[0].get_array().shape[:2] == (1024, 1024)


def test_save_writes_png_svg_pdf(s, tmp_path):
    fig = charts.qc_overview(s.qc())
    paths = charts.save(fig, tmp_path / "qc")
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:400]
    assert paths[2].read_bytes()[:5] == b"%PDF-"
    assert fig._repr_png_()[:4] == b"\x89PNG"  # shows itself in Jupyter without pyplot


def test_marks_name_their_treatment_and_no_legend_covers_them():
    """Issue 22: with several arms a mark says which arm it is, and the legend sits below the axes."""
    lsmeans = pd.DataFrame([(a, v, e, e - 2, e + 2) for a, base in (("vehicle", 1), ("low", 4), ("high", 8))
                            for v, e in (("Day14", base), ("Day28", base * 1.5), ("Day56", base * 2))],
                           columns=["arm", "visit", "estimate", "ci_low", "ci_high"])
    diffs = pd.DataFrame([(v, t, p) for v in ("Day14", "Day28", "Day56") for t, p in (("low", 0.2), ("high", 0.004))],
                         columns=["visit", "treatment", "p"])
    fig = charts.lsmeans_plot(lsmeans, diffs, "score.water", ["vehicle", "low", "high"])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["vehicle", "low", "high"]  # the control first
    marks = [t for t in ax.texts if "low:" in t.get_text()]
    assert len(marks) == 3 and all(t.get_text() == "low: ns\nhigh: **" for t in marks)
    box = legend.get_window_extent()
    for t in marks:
        assert not box.overlaps(t.get_window_extent()), t.get_text()
        assert ax.get_window_extent().contains(*t.get_window_extent().p1)  # inside the axes, not clipped


def test_the_study_draws_its_own_charts_in_the_plans_arm_order(s):
    """Issue 23: `s.plot.*` gathers the frames; every legend lists the control first."""
    figs = {"trend": s.plot.trend("score.water"), "change": s.plot.change("score.water"),
            "waterfall": s.plot.waterfall("score.water"), "responders": s.plot.responders("score.water"),
            "lsmeans": s.plot.lsmeans(s.mmrm("score.water"))}
    for name, fig in figs.items():
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert [x.split(" ")[0] for x in legend] == ["placebo", "active"], name
    marks = [t.get_text() for t in figs["change"].axes[0].texts]
    welch = s.compare_arms("score.water", "W12")
    assert marks[-1] == charts._stars(float(welch["p"].iloc[0]))  # the change chart's mark is the helper's p
    assert "at W12" in figs["waterfall"].axes[0].get_title()  # the primary endpoint's visit
    assert "at least 5 points" in figs["responders"].axes[0].get_title()  # the plan's threshold
    regions = s.plot.regions("severity.pores", "W12")
    assert regions.axes[0].get_title() == "severity.pores at W12 (mean of the subjects)"
    assert len(regions.axes[0].texts) == 2 + 4  # a value in each of the four regions, and the two sides named
    with pytest.raises(skintrack.UsageError, match="no keys by face region"):
        s.plot.regions("count.acne")  # front, left and right views: not regions of a face


def test_a_chart_with_nothing_to_draw_says_so(s):
    """A chart of a metric the study never measured (side photos' moles), of a visit without values or of a
    subject who is not in the study is refused with a sentence, not drawn empty."""
    nothing = "nothing to draw: no value of count.mole.left"
    for name, draw, said in [("trend", lambda: s.plot.trend("count.mole.left"), nothing),
                             ("change", lambda: s.plot.change("count.mole.left"), nothing),
                             ("waterfall", lambda: s.plot.waterfall("count.mole.left"), nothing + "'s change at W12"),
                             ("regions", lambda: s.plot.regions("severity.pores", "W12", subject="S99"),
                              "no subject 'S99' in this study")]:
        with pytest.raises(skintrack.UsageError) as e:
            draw()
        assert str(e.value).startswith(said), name
    assert s.plot.regions("severity.pores", "W12", subject="S01").axes[0].get_title().endswith("(subject S01)")


def test_face_regions_names_the_shape_it_needs():
    from skintrack import UsageError

    with pytest.raises(UsageError, match="columns region and value .* has no region"):
        charts.face_regions(pd.DataFrame({"where": ["forehead"], "value": [1.0]}), "x")


def test_plot_cli_writes_each_chart(s, run_cli, tmp_path):
    for chart, metric in (("trend", "score.water"), ("lsmeans", "score.water"), ("regions", "severity.pores")):
        proc = run_cli("plot", s.path, chart, metric, "--out", tmp_path / f"{chart}.svg", check=0)
        assert proc.stdout.strip().endswith(f"{chart}.svg") and (tmp_path / f"{chart}.svg").read_text().startswith("<?xml")
    bad = run_cli("plot", s.path, "trend", "score.water", "--out", tmp_path / "x.jpg")
    assert bad.returncode == 2 and "name a .png, .svg or .pdf file" in bad.stderr


def test_a_png_is_laid_out_once_to_the_same_pixels(s, monkeypatch):
    """Issue 23: `png_bytes` draws a figure once (savefig alone draws it twice when it has a layout engine); the
    PNG is byte for byte what savefig writes (a user's own default layout too), and the figure keeps its layout
    engine and dpi."""
    drawn = []
    monkeypatch.setattr(Figure, "draw", lambda fig, renderer, draw=Figure.draw: drawn.append(fig) or draw(fig, renderer))
    prof = pd.DataFrame({"metric": ["score.water", "score.acne"], "baseline": [60, 90], "latest": [75, 92]})
    makers = {"trend": lambda: s.plot.trend("score.water"), "change": lambda: s.plot.change("score.water"),
              "waterfall": lambda: s.plot.waterfall("score.water"),
              "responders": lambda: s.plot.responders("score.water"),
              "lsmeans": lambda: s.plot.lsmeans(s.mmrm("score.water")),
              "regions": lambda: s.plot.regions("severity.pores", "W12"), "qc": lambda: charts.qc_overview(s.qc()),
              "profile": lambda: charts.score_profile(prof, "S05")}
    for name, make in makers.items():
        for dpi in (120, 150):
            fig = make()
            engine = fig.get_layout_engine()
            drawn.clear()
            ours = charts.png_bytes(fig, dpi=dpi)
            assert len(drawn) == 1 and fig.get_layout_engine() is engine and fig.dpi == 110, name
            alone = io.BytesIO()
            make().savefig(alone, format="png", dpi=dpi, pil_kwargs=charts.PNG_COMPRESSION)
            assert ours == alone.getvalue(), (name, dpi)
    monkeypatch.setitem(matplotlib.rcParams, "figure.autolayout", True)  # a user's own default layout
    alone = io.BytesIO()
    makers["trend"]().savefig(alone, format="png", dpi=120, pil_kwargs=charts.PNG_COMPRESSION)
    assert charts.png_bytes(makers["trend"](), dpi=120) == alone.getvalue()


def test_photo_panels_make_no_tick_and_draw_the_same_pixels():
    """Issue 23: a panel of photographs has no axis to draw, yet placing its title measured the hidden y axis,
    making its ticks (a third of the PNG); with no tick made the pixels are the same as with them."""
    from matplotlib.ticker import AutoLocator

    case = FIXTURES / "real" / "ailabtools-docs-case1"
    fig = charts.photo_pair([case / "image.jpeg"] * 2, [(100, 100, 500, 500)] * 2, ["D0", "W12"])
    ours = charts.png_bytes(fig, dpi=120)
    assert all(len(axis.get_majorticklocs()) == 0 and len(axis.majorTicks) <= 1  # the one unused prototype
               for ax in fig.axes for axis in (ax.xaxis, ax.yaxis))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(AutoLocator())
    assert charts.png_bytes(fig, dpi=120) == ours
    assert max(len(ax.yaxis.majorTicks) for ax in fig.axes) > 1  # the ticks were made this time


def test_one_subjects_regions_in_a_study_without_a_subjects_csv(tmp_path):
    """The subjects a study knows include those photographed without a subjects CSV (`Study.subject_ids`, the
    report's rule too): such a subject's face regions were refused as "no subject"."""
    from skintrack.sample import sample_study_dir

    src = sample_study_dir()
    skintrack.ingest([src / "responses"], tmp_path / "s", manifest=src / "manifest.csv")  # no subjects CSV
    s = skintrack.open(tmp_path / "s")
    assert "S01" in s.subject_ids() and s.sql("SELECT count(*) AS n FROM subjects")["n"].iloc[0] == 0
    assert s.plot.regions("severity.pores", "W12", subject="S01").axes


def test_a_photo_fix_downsized_is_cropped_where_the_api_saw_the_face(tmp_path):
    """`analyze --fix` sends a photo above 4096 px downsized, so its response's face box measures the smaller
    photo; the report cropped the full-size original with it (a corner of the photo, not the face)."""
    import numpy as np
    from PIL import Image

    from skintrack.api.request import prepare_photo
    from skintrack.tables.limits import sent_size

    big = Image.new("RGB", (6000, 4500), "white")
    big.paste((255, 0, 0), (4000, 3000, 4600, 3600))  # the "face": a red square far from the corner
    big.save(tmp_path / "big.jpg", quality=90)
    sent = prepare_photo(tmp_path / "big.jpg", fix=True)
    assert (sent.width, sent.height) == sent_size(6000, 4500) == (4095, 3071)
    scale = 4095 / 6000
    box = (4000 * scale, 3000 * scale, 600 * scale, 600 * scale)  # where the API finds it, in the photo it was sent
    fig = charts.photo_pair([tmp_path / "big.jpg"], [box], ["D0"])
    pixels = np.asarray(fig.axes[0].images[0].get_array())
    centre, corner = pixels[240, 240], pixels[5, 5]
    assert centre[0] > 200 and centre[1] < 60 and corner[0] > 200 and corner[1] > 200  # red face, white margin
