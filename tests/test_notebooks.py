"""The notebooks run from a clean kernel, end to end, without an error."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


# what each notebook must show: (charts at least, a line of its output)
SHOWS = {"01-quickstart.ipynb": (1, "ingested 96 responses"), "02-trial-analysis.ipynb": (4, "points more than placebo"),
         "03-your-own-study.ipynb": (0, "Corneometer) at W12 (MMRM, fixed-sequence testing")}


def test_every_notebook_is_known():
    assert [p.name for p in NOTEBOOKS] == list(SHOWS)


def test_the_own_study_notebook_uses_only_the_public_api():
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOKS[2], as_version=4).cells if c.cell_type == "code")
    assert "skintrack.tables" not in source and "skintrack.analysis" not in source and "skintrack.show" not in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    charts, line = SHOWS[path.name]
    assert len(images) >= charts
    assert line in "".join(o.get("text", "") for o in outputs)
