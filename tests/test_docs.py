"""Docs that cannot go stale: public surface, docstring examples, CLI help, README commands."""
import importlib
import inspect
import re
from pathlib import Path

import click
import pytest

import skintrack
from skintrack.cli import main

ROOT = Path(__file__).parent.parent


PUBLIC = {
    "AnalyzeReport", "AnswerLost", "ApiError", "AuthError", "Client", "Endpoint", "FaceQualityError", "IngestReport",
    "InvalidInput", "InvalidManifest", "InvalidResponse", "NotApplicable", "Params", "ParameterError", "PhotoRejected",
    "Plan", "RateLimited", "RetryPolicy", "ServerError", "SkintrackError", "StoreError", "Study", "TransportError",
    "UnknownMetric", "UsageError", "Visit", "analyze", "build_report", "catalog", "export", "flatten", "ingest", "open",
}


def test_all_is_pinned():
    """Adding to or removing from the public surface is a decision: change this list with it."""
    assert set(skintrack.__all__) == PUBLIC and len(skintrack.__all__) == len(PUBLIC)


def test_stage_packages_say_what_they_take_and_give():
    for stage in ("api", "tables", "spark", "analysis", "show", "sample"):
        doc = importlib.import_module(f"skintrack.{stage}").__doc__
        assert doc and " in, " in doc.splitlines()[0] and " out" in doc.splitlines()[0], stage


def test_no_import_runs_back_up_the_flow():
    """tables <- sample <- api; tables <- spark <- analysis <- show; the top (cli, demo) may import any stage.
    The api stage judges its sentinel panel with the analysis stage's drift statistics (analysis never imports
    api, so there is no cycle); a study's `plot` accessor loads the show stage's charts when it is used, and
    helper results and fits are drawn in Jupyter by the show stage's display."""
    allowed = {"tables": set(), "sample": {"tables"}, "api": {"tables", "sample", "analysis"}, "spark": {"tables"},
               "analysis": {"tables", "spark"}, "show": {"tables", "analysis"}}
    accessors = {("study.py", "show"),  # Study.plot, as pandas' DataFrame.plot; and the helpers' labels (display)
                 ("mmrm.py", "show")}  # MMRMResult._repr_html_ draws through show.display
    for stage, ok in allowed.items():
        for path in (ROOT / "skintrack" / stage).glob("*.py"):
            for other in re.findall(r"from \.\.(\w+)", path.read_text()):
                assert other in ok | {"errors", "sinks"} or other == "" or (path.name, other) in accessors, \
                    (path.name, other)


def test_all_is_the_public_surface():
    public = {n for n in dir(skintrack) if not n.startswith("_") and not inspect.ismodule(getattr(skintrack, n))}
    assert set(skintrack.__all__) == public


@pytest.mark.parametrize("name", skintrack.__all__)
def test_public_names_have_docstrings(name):
    obj = getattr(skintrack, name)
    assert inspect.getdoc(obj), name
    if inspect.isfunction(obj):
        assert "Example" in inspect.getdoc(obj) or "Example" in inspect.getdoc(inspect.getmodule(obj)), name


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield " ".join(prefix + (name,)), cmd


@pytest.mark.parametrize("name, cmd", list(_commands(main)))
def test_every_command_has_help_with_an_example(name, cmd):
    assert cmd.help and "Example: skintrack " + name in cmd.help, name
    assert all(p.help for p in cmd.params if isinstance(p, click.Option) and p.name not in ("help",)), name


def test_readme_gives_the_two_commands_first_and_every_command():
    readme = (ROOT / "README.md").read_text()
    first = readme.index("make demo"), readme.index("make test")
    assert max(first) < readme.index("## ")
    for name, _ in _commands(main):
        assert f"skintrack {name}" in readme, name


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)


def readme_commands():
    """The README's `$ skintrack ...` lines (continuations joined, comments and pipes cut), in order."""
    lines, out = (ROOT / "README.md").read_text().splitlines(), []
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ skintrack"):
            cmd = lines[i][2:]
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            out.append(cmd.split("#")[0].split("|")[0].split())
        i += 1
    return out


def test_the_readme_commands_run(tmp_path, run_cli):
    """Every README command that needs neither photos nor an API runs as shown, in a scratch folder."""
    import os

    os.symlink(ROOT / "data", tmp_path / "data")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ran, previous = [], None
        for args in readme_commands():
            if args[1] in ("analyze", "emulate", "share"):  # an API, a photo folder, a PostgreSQL server
                continue
            proc = run_cli(*args[1:], env={"SKINTRACK_CACHE": str(tmp_path / "kept")})  # as a user has it
            assert proc.returncode == 0, (args, proc.stderr)
            ran.append((args[1], proc.stdout))
            answered_again = "the output kept for this study version" in proc.stderr
            assert answered_again == (args == previous), args  # only a command run again on the same study
            previous = args
    finally:
        os.chdir(cwd)
    names = [a for a, _ in ran]
    assert names == ["ingest", "ingest", "metrics", "demo", "drift", "bridge", "check", "plan", "plan", "endpoints",
                     "sensitivity", "ingest", "raters", "trends", "trends", "compare", "compare", "qc", "export",
                     "report", "history", "compact", "endpoints", "endpoints", "ingest"]

    def at(name, k=0):
        return [o for a, o in ran if a == name][k]

    assert "ingested 96 new analyses" in at("ingest") and "ingested 0 new analyses, skipped 96" in at("ingest", 1)
    assert "Headline findings" in at("demo") and at("check") == "trial: no problems found\n"
    assert "no sentinel results" in at("drift") and "no photo was analysed under two API generations" in at("bridge")
    assert "primary endpoint: score.water at W12" in at("plan") and "multiplicity: holm at alpha 0.05" in at("plan", 1)
    assert "assumed" not in at("plan", 1)
    assert any(line.split()[1:8] == ["primary", "score.water", "W12", "active", "placebo", "mmrm", "15.55"]
               for line in at("endpoints").splitlines()), at("endpoints")
    assert "primary: MMRM (missing at random)" in at("sensitivity")
    assert "W12  active 11          11" in at("trends") and at("trends", 1).startswith("kind,visit,arm,control,estimate")  # the plan leaves out S11 W12 (QC), as the report does
    assert "glasses_changed" in at("qc")
    assert "measure readings 624" in at("ingest", 2) and "ICC(2,1)" in at("raters")
    assert at("export").splitlines()[0].endswith("trial-adam/adsl.xpt") and "define.csv" in at("export")
    assert at("endpoints", 1) == at("endpoints", 2)  # the second answered from the first (kept)
    assert "1. Primary endpoint 1, Skin moisture score at W12 (MMRM, Holm testing at alpha 0.05)" in at("report")
