"""Helper results and fits in Jupyter: labelled, rounded as the report rounds, every digit kept underneath;
user text escaped; any other DataFrame keeps pandas' display."""
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from skintrack.demo import demo_study
from skintrack.show import display


@pytest.fixture(scope="module")
def demo():
    return demo_study()


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    display.register()
    yield shell
    InteractiveShell.clear_instance()


def test_a_helper_result_is_drawn_labelled_and_rounded(demo, shell):
    df = demo.change_from_baseline("score.water")
    assert df.attrs["skintrack"]["call"] == "change_from_baseline('score.water')"
    html = shell.display_formatter.format(df)[0]["text/html"]
    assert "<b>change_from_baseline(&#39;score.water&#39;)</b>" in html
    assert "<th>subject</th>" in html and "<th>baseline value</th>" in html
    first = df.iloc[1]
    assert f"<td>{first['days']:.2f}</td>" in html and repr(float(first["days"])) not in html
    assert df["days"].iloc[1] == first["days"]  # the frame itself is untouched


def test_a_derived_frame_keeps_pandas_display(demo, shell):
    df = demo.change_from_baseline("score.water")
    part = df[df["visit"] == "W12"]
    assert 'class="dataframe"' in shell.display_formatter.format(part)[0]["text/html"]
    assert 'class="dataframe"' in shell.display_formatter.format(pd.DataFrame({"x": [1.5]}))[0]["text/html"]


def test_a_fit_shows_its_method_and_rounded_tables(demo, shell):
    fit = demo.mmrm("score.water")
    html = shell.display_formatter.format(fit)[0]["text/html"]
    row = fit.diffs.iloc[-1]
    assert "Kenward-Roger" in html and f"<td>{row['estimate']:.2f}</td>" in html
    assert "<th>95% CI low</th>" in html and "<td>&lt;0.001</td>" in html


def test_p_columns_and_long_frames_and_hostile_text():
    df = display.titled(pd.DataFrame({"subject_id": ["<script>x</script>"] + [f"S{i}" for i in range(99)],
                                      "p_adjusted": [0.00002] + [0.5] * 99, "tost_p": [0.0312] * 100}), "claims()")
    html = display.html(df)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<th>p adjusted</th><th>p tost</th>" in html and "<td>&lt;0.001</td>" in html and "<td>0.031</td>" in html
    assert "... 40 rows ..." in html and html.count("<tr>") == 1 + 60 + 1
