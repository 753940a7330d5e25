"""The `skintrack` command: parse options, call one library function, print.

Exit status: 0 when everything was taken, 1 when any input was rejected or any photo failed,
2 on a usage error (bad option, unreadable manifest, unknown metric), 3 when the disk is full.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import click

from . import __version__
from .errors import InvalidManifest, SkintrackError, UnknownMetric, UsageError

# A command's linear algebra is on small matrices (a trial's MMRM, its imputations), where OpenBLAS's threads
# only spin: one thread saves ~0.25 s of CPU at each start and a third of a fit's. Set before numpy loads
# (nothing above loads it); a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


DISK_FULL = 3


class _Command(click.Command):
    """Remembers the study a command works on, so that any failure can name it."""

    def invoke(self, ctx):
        study = ctx.params.get("study")
        if study is not None:
            ctx.find_root().ensure_object(dict)["study"] = study
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns library errors into one clear line and an exit status; no traceback reaches the user."""

    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UsageError, InvalidManifest, UnknownMetric) as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(2)
        except SkintrackError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)
        except BrokenPipeError:  # the reader left (`| head`): stop quietly, as command-line tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # nothing left to flush at exit
            ctx.exit(1)
        except OSError as e:  # the machine said no: a full disk, a folder we may not write, ...
            where = f" ({e.filename})" if e.filename else ""
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                click.echo(f"Error: the disk is full{where}. Nothing half-written is visible; free some space and "
                           "run the same command again to finish.", err=True)
                ctx.exit(DISK_FULL)
            click.echo(f"Error: {e.strerror or e}{where}", err=True)
            ctx.exit(1)
        except Exception as e:  # a DuckDB failure the library did not name: still one line, naming the study
            if not type(e).__module__.lstrip("_").startswith("duckdb"):
                raise
            study = (ctx.obj or {}).get("study", "the study")
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            click.echo(f"Error: {study}: the study store failed ({first}); `skintrack check {study}` lists damaged "
                       "files", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="skintrack")
def main():
    """skintrack: longitudinal skin analysis from Skin Analyze Pro responses."""


def _print_rejects(rejected):
    for source, reason in rejected:
        click.echo(f"rejected: {source}: {reason}", err=True)


@main.command()
@click.argument("sources", nargs=-1)
@click.option("--study", required=True, type=click.Path(file_okay=False), help="Study folder (created if needed).")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV mapping files to subject, visit, taken_at.")
@click.option("--subjects", type=click.Path(dir_okay=False), help="CSV of subject-level columns (arm, age, ...).")
@click.option("--measures", type=click.Path(dir_okay=False),
              help="CSV of instrument readings, expert grades or questionnaire answers: subject_id, visit, measure, "
                   "value (+ taken_at, unit, device, rater, replicate, side); each is the metric measure.<name>.")
@click.option("--measures-catalog", type=click.Path(dir_okay=False),
              help="TOML declaring each measure (description, unit, range, better, type, levels); kept in the study.")
@click.option("--workers", default=1, show_default=True, help="Worker processes for parsing.")
@click.option("--batch-size", default=200, show_default=True, help="Files read per chunk (per worker task).")
@click.option("--commit-every", default=20_000, show_default=True,
              help="Commit a long ingest every N analyses (each a version); a crash loses at most N.")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
              help="spark: flatten inside Apache Spark (pip install skintrack[spark]; Java 17).")
@click.option("--spark-master", default="local[2]", show_default=True, help="Spark master URL for --engine spark.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(sources, study, manifest, subjects, measures, measures_catalog, workers, batch_size, commit_every, engine,
           spark_master, quiet):
    """Ingest response files, folders (recursive), globs or a study's raw/ archive, and the CSVs that go
    with them (manifest, subjects, measures).

    Example: skintrack ingest responses/ --study trial --manifest manifest.csv --subjects subjects.csv

    Example: skintrack ingest --study trial --measures corneometer.csv --measures-catalog measures.toml
    """
    if not (sources or subjects or measures or measures_catalog):
        raise UsageError("nothing to ingest: name response files or folders, or --subjects, --measures or "
                         "--measures-catalog")
    if engine == "spark" and (measures or measures_catalog):
        raise UsageError("--measures go in with the local engine (they are small): drop --engine spark")
    if engine == "spark":
        from .spark.engine import local_session
        from .spark.ingest import ingest as run_on_spark

        report = run_on_spark(local_session(spark_master), sources, study, manifest=manifest, subjects=subjects)
    else:
        from .tables.ingest import ingest as run

        report = run(sources, study, manifest=manifest, subjects=subjects, workers=workers,
                     progress=not quiet, chunk_size=batch_size, commit_every=commit_every, measures=measures,
                     measures_catalog=measures_catalog)
    _print_rejects(report.rejected)
    for where, what in report.warnings:
        click.echo(f"warning: {where}: {what}", err=True)
    _say(f"ingested {report.added} new analyses, skipped {report.skipped} already held, "
         f"rejected {len(report.rejected)}; sessions assigned {report.sessions}, subjects {report.subjects}"
         + (f", measure readings {report.measures}" if measures else "") + f" ({report.seconds:.1f} s) into {study}")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records instead of a table.")
@click.option("--study", type=click.Path(file_okay=False), help="Also the study's measures (measure.<name>).")
def metrics(as_json, study):
    """List every metric key with its meaning, unit, range and better-direction.

    Example: skintrack metrics --json

    Example: skintrack metrics --study trial
    """
    import pandas as pd

    from .tables.catalog import catalog, metric_info

    cat = catalog()
    if study:
        s = _open(study)
        names = s.sql("SELECT DISTINCT measure FROM measures ORDER BY measure")["measure"]
        cat = pd.concat([cat, pd.DataFrame([metric_info(f"measure.{n}") for n in names])[cat.columns]],
                        ignore_index=True)
    if as_json:
        click.echo(json.dumps(cat.to_dict("records"), indent=1, default=str))
    else:
        click.echo(_listing(cat[["key", "unit", "range", "better", "description"]], "description"))


def _csv(value):
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@main.command()
@click.argument("photos", nargs=-1, required=True)
@click.option("--study", required=True, type=click.Path(file_okay=False), help="Study folder; responses go to DIR/raw/.")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="CSV: file (the photo), subject_id, visit, taken_at, left_side_file, right_side_file, ...")
@click.option("--maps", default="", help="return_maps, comma-separated (e.g. red_area,brown_area).")
@click.option("--marks", default="", help="return_marks, comma-separated (e.g. wrinkle_mark,melanin_mark).")
@click.option("--side-results", default="", help="return_side_results (jawline_info; needs side photos).")
@click.option("--colors", default="", help='roi_outline_color as JSON, e.g. \'{"acne_color": "FF0000"}\'.')
@click.option("--concurrency", default=4, show_default=True, help="Calls in flight at once.")
@click.option("--qps", default=2.0, show_default=True, help="Most call starts per second (0: no limit).")
@click.option("--dry-run", is_flag=True, help="Check the photos and say how many calls would be made; no network.")
@click.option("--retry-failed", is_flag=True, help="Call again photos whose archived answer was a failure.")
@click.option("--resend-uncertain", is_flag=True, help="Send again photos whose earlier call was sent but whose answer "
              "was lost: the service may have billed it, so this MAY PAY TWICE for them.")
@click.option("--fix", is_flag=True, help="Convert non-JPEG photos and downsize oversized ones (recorded).")
@click.option("--no-ingest", is_flag=True, help="Only archive the responses.")
@click.option("--url", envvar="SKINTRACK_API_URL", help="API address [env SKINTRACK_API_URL].")
@click.option("--api-key-file", type=click.Path(dir_okay=False), help="A file holding the API key (else "
              "AILABAPI_API_KEY, else asked for in a terminal; never an option: options show in process lists).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--sentinel", type=click.Path(exists=True, file_okay=False), help="A folder of 3-5 reference photos "
              "sent before the batch's first study photo and after its last (2 calls per photo per batch): a model "
              "change stops the batch before a study photo is paid for.")
@click.option("--accept-drift", is_flag=True, help="Go on although the sentinel moved (recorded in the study's "
              "history).")
def analyze(photos, study, manifest, maps, marks, side_results, colors, concurrency, qps, dry_run, retry_failed,
            resend_uncertain, fix, no_ingest, url, api_key_file, quiet, sentinel, accept_drift):
    """Analyse photos with the API, archive every response, then ingest them.

    Example: skintrack analyze photos/ --study trial --manifest photos.csv --sentinel panel/ --dry-run
    """
    from .api.analyze import analyze as run, summary
    from .api.client import Client
    from .api.request import Params

    try:
        color_map = json.loads(colors) if colors else {}
    except json.JSONDecodeError as e:
        raise UsageError(f"--colors is not JSON ({e})") from None
    params = Params(_csv(maps), _csv(marks), _csv(side_results), color_map)
    client = None if dry_run else Client(api_key=_api_key(api_key_file), url=url)
    report = run(photos, study, manifest=manifest, params=params, client=client, concurrency=concurrency,
                 qps=qps or None, dry_run=dry_run, retry_failed=retry_failed, resend_uncertain=resend_uncertain,
                 fix=fix, run_ingest=not no_ingest, progress=not quiet, sentinel=sentinel, accept_drift=accept_drift)
    _say(summary(report, dry_run))
    sys.exit(0 if report.ok else 1)


def _api_key(key_file) -> str:
    """The API key: from a file, else the environment, else asked for (hidden) in a terminal; never argv."""
    from .api.client import KEY_ENV, check_key

    if key_file:
        try:
            return check_key(Path(key_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--api-key-file {key_file}: cannot be read ({getattr(e, 'strerror', None) or e})") \
                from None
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    if sys.stdin.isatty():
        return click.prompt("API key", hide_input=True)
    raise UsageError(f"no API key: set {KEY_ENV}, or give --api-key-file FILE (or run in a terminal to be asked)")


@main.command()
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port on 127.0.0.1.")
@click.option("--api-key-file", type=click.Path(dir_okay=False),
              help="A file holding the key to accept (else AILABAPI_API_KEY, else asked for in a terminal).")
@click.option("--latency", default=2.3, show_default=True, help="Median seconds per call.")
@click.option("--latency-spread", default=0.15, show_default=True, help="Log-normal sigma around the median.")
@click.option("--fail-429", default=0.0, help="Share of calls answered 429 (with Retry-After).")
@click.option("--fail-503", default=0.0, help="Share answered 503 AI_SERVICE_FLOW_RESTRICTION.")
@click.option("--fail-500", default=0.0, help="Share answered 500.")
@click.option("--drop", default=0.0, help="Share of calls analysed and billed whose connection then closes unanswered.")
@click.option("--truncate", default=0.0, help="Share of calls analysed and billed whose answer is cut in half.")
@click.option("--gateway", default=0.0, help="Share of calls analysed and billed answered by a gateway's 502 page.")
@click.option("--hollow", default=0.0,
              help="Share of calls analysed and billed answered 200 with JSON holding no result.")
@click.option("--seed", default=0, help="Seed of the fault draws.")
@click.option("--generation", default="v1.7.6", show_default=True,
              help="Answer in the shape of this API version (v1.5.1 ... v1.7.6).")
@click.option("--model-shift", "shifts", multiple=True, metavar="METRIC=DELTA@N",
              help="Change the model after N billed calls: add DELTA to METRIC (score.wrinkle=27@40), or answer as "
                   "another version (generation=v1.6.6@40). Repeatable.")
def emulate(port, api_key_file, latency, latency_spread, fail_429, fail_503, fail_500, drop, truncate, gateway,
            hollow, seed, generation, shifts):
    """Serve a local SIMULATED Skin Analyze Pro API on 127.0.0.1 until interrupted.

    Example: skintrack emulate --port 8765 --latency 0.2 --fail-503 0.1 --model-shift score.wrinkle=27@40
    """
    from .api.emulator import Emulator, EmulatorConfig, parse_shift
    from .tables.generations import NAMES

    if generation not in NAMES:
        raise UsageError(f"--generation {generation!r} is not one of {', '.join(NAMES)}")
    cfg = EmulatorConfig(api_key=_api_key(api_key_file), latency=latency, latency_spread=latency_spread,
                         share_429=fail_429, share_503=fail_503, share_500=fail_500, share_drop=drop,
                         share_truncate=truncate, share_gateway=gateway, share_hollow=hollow, seed=seed,
                         generation=generation, shifts=tuple(parse_shift(x) for x in shifts))
    emu = Emulator(cfg, port=port)
    click.echo(f"emulating Skin Analyze Pro at {emu.url} (SIMULATED answers): export SKINTRACK_API_URL={emu.base} "
               "Ctrl-C stops.")
    try:
        emu.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.server.server_close()
        stats = emu.stats()
        _say(f"calls {stats['calls']}, billed {stats['billed']}, by status {stats['statuses']}")


def _output(fn):
    fn = click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")(fn)
    fn = click.option("--json", "fmt", flag_value="json", help="Print JSON records.")(fn)
    return fn


class _Tee(io.StringIO):
    """Standard output that also keeps what it was given."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        return super().write(text)

    def flush(self):
        self.stream.flush()


def _kept(dated: bool = False):
    """The command answers again what it printed (and wrote into `--out`) for the same options, study version,
    plan and skintrack (`skintrack.kept`); `--fresh` computes it again. `dated`: the output prints today's date."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(fresh, **options):
            from . import kept

            study, out, version = options["study"], options.get("out"), options.get("version")
            keyed = {**options, "columns": _columns()}  # the text is as wide as the terminal it was printed in
            k = kept.key(fn.__name__, keyed, study, version, dated)
            text = None if fresh else kept.replay(k, out)
            if text is not None:
                click.echo(text, nl=False)
                click.echo("(the output kept for this study version, plan and skintrack: --fresh computes it again)",
                           err=True)
                return
            before = kept.listing(out)
            with contextlib.redirect_stdout(_Tee(sys.stdout)) as printed:
                fn(**options)
            if k is not None and k == kept.key(fn.__name__, keyed, study, version, dated):  # nothing committed
                kept.keep(k, printed.getvalue(), out, before)
        return click.option("--fresh", is_flag=True, help="Compute again instead of answering what this command "
                            "printed for the same study version, plan and options.")(run)
    return wrap


def _columns() -> int | None:
    """How wide the text output may be in a terminal: $COLUMNS, else the terminal's width. None when the output
    goes to a file or a pipe, whatever $COLUMNS says: whole lines, one record each, for grep and scripts."""
    return max(shutil.get_terminal_size().columns, 40) if sys.__stdout__ and sys.__stdout__.isatty() else None


def _say(text: str) -> None:
    """Print prose, each line longer than `_columns()` wrapped there (its continuation indented 2 more)."""
    width = _columns()
    if width is not None:
        text = "\n".join(textwrap.fill(line, width, subsequent_indent=line[:len(line) - len(line.lstrip())] + "  ",
                                       break_long_words=False, break_on_hyphens=False) if len(line) > width else line
                         for line in text.split("\n"))
    click.echo(text)


def _listing(df, wrapped: str) -> str:
    """`df` as left-aligned columns, its last one `wrapped` under its heading to fit `_columns()`."""
    width, cells = _columns(), df.astype(object).where(df.notna(), "").astype(str)
    fixed = [max([len(c), *cells[c].str.len()]) for c in df.columns[:-1]]
    room = max((width or 0) - sum(w + 2 for w in fixed), 24) if width else None
    lines = []
    for row in [list(df.columns), *cells.itertuples(index=False)]:
        head = "  ".join(v.ljust(w) for v, w in zip(row[:-1], fixed)) + "  "
        parts = textwrap.wrap(row[-1], room, break_long_words=False, break_on_hyphens=False) if room else [row[-1]]
        lines += [(head if i == 0 else " " * len(head)) + part for i, part in enumerate(parts or [""])]
    return "\n".join(line.rstrip() for line in lines)


def _emit(df, fmt):
    if fmt == "csv":
        from .sinks import spreadsheet_frame

        click.echo(spreadsheet_frame(df).to_csv(index=False), nl=False)
    elif fmt == "json":  # every digit (pandas' own JSON keeps 10 decimals: a p of 1e-13 would print as 0.0)
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        click.echo(json.dumps(records, indent=1, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)))
    elif df.empty:
        _say("nothing to show: no rows (check the metric, the visits and the study's data with `skintrack check`)")
    else:
        width = _columns()  # in a terminal the columns fold into blocks that fit it and long texts are cut
        text = df.to_string(index=False, max_rows=200, float_format=lambda x: f"{x:.4g}", line_width=width,
                            max_colwidth=width and width // 2)
        click.echo("\n".join(line.rstrip() for line in text.split("\n")))


def _open(study, version=None):
    from .analysis.study import open as open_study
    from .tables.store import check_catalog, is_old_layout, is_study

    check_catalog(study)  # data files without their catalog: refused, never taken for an empty folder
    if not os.path.exists(study):
        raise UsageError(f"{study}: no such study folder (`skintrack ingest FILES --study {study}` starts one)")
    if os.path.isdir(study) and not is_study(study) and not is_old_layout(study):
        raise UsageError(f"{study}: not a study (nothing ingested yet); ingest something first")
    return open_study(study, version=version)  # a missing folder is an error there


_VERSION = click.option("--version", "version", type=int, help="Use this version of the study (skintrack history "
                        "lists them): reproduces an earlier output exactly.")


VIEWS = ("timeline", "change", "slopes", "cohort", "responders", "mmrm")
_QC = click.option("--exclude-flagged/--include-flagged", default=None,
                   help="Leave out (or keep) the captures QC flagged; default: as the plan says, like the report.")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.argument("metric")
@click.option("--view", type=click.Choice(VIEWS), default="cohort", show_default=True, help="What to compute.")
@click.option("--baseline", help="Baseline visit (change, responders); default: the plan's.")
@click.option("--by", help="Grouping columns for cohort (default: visit,arm; visit alone in a study without arms).")
@click.option("--threshold", type=float, help="Improvement that makes a responder (responders).")
@click.option("--relative", is_flag=True, help="Threshold in % of baseline (responders).")
@_QC
@_output
@_VERSION
@_kept()
def trends(study, metric, view, baseline, by, threshold, relative, exclude_flagged, fmt, version):
    """Per-person trends of one metric: timeline, change, slopes, cohort, responders, or the MMRM's LS-means
    and differences.

    Example: skintrack trends trial score.water --view cohort --by visit,arm --csv
    """
    s = _open(study, version)
    if view == "responders" and threshold is None:
        raise UsageError("--view responders needs --threshold")
    df = {"timeline": lambda: s.timeline(metric, exclude_flagged),
          "change": lambda: s.change_from_baseline(metric, baseline, exclude_flagged),
          "slopes": lambda: s.slopes(metric, exclude_flagged),
          "cohort": lambda: s.cohort(metric, _csv(by) or None, exclude_flagged),
          "responders": lambda: s.responders(metric, threshold, relative, baseline, exclude_flagged),
          "mmrm": lambda: _mmrm_table(s.mmrm(metric, exclude_flagged=exclude_flagged))}[view]()
    _emit(df, fmt)


def _mmrm_table(fit):
    import pandas as pd

    return pd.concat([fit.lsmeans.assign(kind="lsmean"), fit.diffs.rename(columns={"treatment": "arm"}).assign(
        kind="difference")], ignore_index=True)[["kind", "visit", "arm", "control", "estimate", "std_error", "df",
                                                "ci_low", "ci_high", "p"]]


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.argument("metrics", nargs=-1, required=True)
@click.option("--baseline", help="Baseline visit (paired comparison).")
@click.option("--followup", help="Follow-up visit (paired comparison).")
@click.option("--arms", "visit", help="Compare arms on the change from baseline at this visit instead.")
@click.option("--test", help="paired_t or wilcoxon (paired); welch, mannwhitney or ancova (--arms).")
@_QC
@_output
@_VERSION
@_kept()
def compare(study, metrics, baseline, followup, visit, test, exclude_flagged, fmt, version):
    """Paired tests against baseline for several metrics, or treatment against control at one visit.

    Example: skintrack compare trial score.water score.total --baseline D0 --followup W12
    """
    import pandas as pd

    s = _open(study, version)
    if visit:
        df = pd.concat([s.compare_arms(m, visit, test or "welch", exclude_flagged=exclude_flagged) for m in metrics])
    elif baseline and followup:
        df = s.compare(list(metrics), baseline, followup, test or "paired_t", exclude_flagged)
    else:
        raise UsageError("give --baseline and --followup, or --arms VISIT")
    _emit(df, fmt)


def _endpoint(text):
    from .tables.plan import Endpoint

    metric, sep, visit = text.partition("@")
    if not sep or not metric or not visit:
        raise UsageError(f"endpoint {text!r}: write METRIC@VISIT, e.g. score.water@W12")
    return Endpoint(metric, visit)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--from", "source", type=click.Path(dir_okay=False), help="Start from this plan.toml.")
@click.option("--title", help="Study title.")
@click.option("--sponsor", help="Sponsor.")
@click.option("--product", help="Product under test.")
@click.option("--protocol", help="Protocol number.")
@click.option("--baseline", help="Baseline visit label.")
@click.option("--visits", help="Schedule: LABEL:DAY:WINDOW,... in order (e.g. D0:0:0,W4:28:3,W12:84:7).")
@click.option("--control", help="The control arm.")
@click.option("--treatments", help="Treatment arms, comma-separated.")
@click.option("--primary", help="Primary endpoint as METRIC@VISIT.")
@click.option("--secondary", multiple=True, help="Key secondary endpoint METRIC@VISIT, in testing order (repeat).")
@click.option("--multiplicity", type=click.Choice(["fixed_sequence", "holm"]), help="Multiplicity strategy.")
@click.option("--qc", type=click.Choice(["exclude", "include"]), help="QC-flagged captures in the primary analysis.")
@click.option("--responder", multiple=True, help="Responder threshold METRIC=VALUE (repeat).")
@click.option("--init", is_flag=True, help="Write a commented starter plan.toml from the data (a study without a plan).")
def plan(study, source, title, sponsor, product, protocol, baseline, visits, control, treatments, primary, secondary,
         multiplicity, qc, responder, init):
    """Write or show the study plan (STUDY/plan.toml): baseline, visits, arms, endpoints, multiplicity, QC.

    With no option it shows the plan, with what was assumed from the data. Options change what they name,
    and the result is checked against the study before it is stored.

    Example: skintrack plan trial --primary score.water@W12 --secondary score.rough@W12 --control placebo
    """
    import dataclasses

    from .tables.plan import Plan, Visit

    s = _open(study)
    if init:
        from .tables.plan import FILE, starter

        if Plan.read(study) is not None:
            raise UsageError(f"{study} already has a plan ({FILE}); change it with the options or --from")
        from .tables.store import write_atomic

        write_atomic(Path(study) / FILE, starter(s.plan, study).encode())
        _say(f"wrote {Path(study) / FILE}: a starter plan with every choice commented; edit it, then "
             f"`skintrack plan {study}` checks it")
        return
    current = Plan.load(source) if source else (Plan.read(study) or Plan())
    changes = {k: v for k, v in dict(title=title, sponsor=sponsor, product=product, protocol=protocol,
                                      baseline=baseline, control=control, multiplicity=multiplicity, qc=qc).items()
               if v is not None}
    if visits:
        try:
            changes["visits"] = [Visit(lab, float(day), float(win)) for lab, day, win in
                                 (v.split(":") for v in _csv(visits))]
        except ValueError:
            raise UsageError(f"--visits {visits!r}: write LABEL:DAY:WINDOW,... e.g. D0:0:0,W12:84:7") from None
    if treatments:
        changes["treatments"] = list(_csv(treatments))
    if primary:
        changes["primary"] = _endpoint(primary)
    if secondary:
        changes["secondary"] = [_endpoint(e) for e in secondary]
    if responder:
        try:
            changes["responders"] = {k: float(v) for k, v in (r.split("=") for r in responder)}
        except ValueError:
            raise UsageError("--responder: write METRIC=VALUE, e.g. score.water=5") from None
    new = dataclasses.replace(current, **changes)
    if changes or source:
        new.write(study)
    _say(s.plan.describe())


@main.command(name="mmrm")
@click.argument("study", type=click.Path(file_okay=False))
@click.argument("metric")
@_QC
@_output
@_VERSION
@_kept()
def mmrm_command(study, metric, exclude_flagged, fmt, version):
    """The MMRM of METRIC's change from baseline under the plan: how it was fitted, the LS-means and each
    treatment minus the control (with --csv or --json, the differences).

    Example: skintrack mmrm trial score.water
    """
    fit = _open(study, version).mmrm(metric, exclude_flagged=exclude_flagged)
    if fmt:
        _emit(fit.diffs, fmt)
    else:
        _say(fit.headline)
        for title, table in (("LS-means", fit.lsmeans), ("Differences", fit.diffs)):
            click.echo(f"\n{title}")
            _emit(table, None)


CHARTS = ("trend", "change", "waterfall", "responders", "lsmeans", "regions")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.argument("chart", type=click.Choice(CHARTS))
@click.argument("metric")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file: .png, .svg or .pdf.")
@click.option("--visit", help="The visit (waterfall, regions; default: the primary endpoint's, or the last).")
@click.option("--threshold", type=float, help="Responder threshold (default: the plan's).")
@_QC
def plot(study, chart, metric, out, visit, threshold, exclude_flagged):
    """Draw one chart of the study (as `study.plot` does in Python) into a PNG, SVG or PDF file.

    Example: skintrack plot trial change score.water --out water-change.png
    """
    from .show.charts import save

    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise UsageError(f"--out {out}: name a .png, .svg or .pdf file")
    from .tables.store import check_output

    check_output(study, out)
    plots = _open(study).plot
    draw = {"trend": lambda: plots.trend(metric, exclude_flagged),
            "change": lambda: plots.change(metric, exclude_flagged=exclude_flagged),
            "waterfall": lambda: plots.waterfall(metric, visit, exclude_flagged),
            "responders": lambda: plots.responders(metric, threshold, exclude_flagged=exclude_flagged),
            "lsmeans": lambda: plots.lsmeans(metric), "regions": lambda: plots.regions(metric, visit)}[chart]
    (path,) = save(draw(), Path(out).with_suffix(""), (suffix,))
    _say(f"{chart} of {metric}: {path}")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@_output
@_VERSION
@_kept()
def endpoints(study, fmt, version):
    """The plan's primary and key secondary endpoints in testing order, by the MMRM, with the multiplicity
    decision (what a sponsor reports; never the smallest p-values).

    Example: skintrack endpoints trial
    """
    s = _open(study, version)
    df = s.endpoints()
    if fmt is not None:
        _emit(df, fmt)
        return
    _emit(df[["order", "role", "metric", "visit", "treatment", "control", "model", "estimate", "ci_low", "ci_high",
              "p", "p_adjusted", "decision"]], None)
    _say(f"testing order: {df.attrs['testing_order']}")
    _say("API generations: " + "; ".join(f"{r.metric} at {r.visit}: {r.generations or 'none'}" for r in
                                         df.drop_duplicates(["metric", "visit"]).itertuples()))
    for method in dict.fromkeys(m for m in df["method"] if m):
        _say(f"method: {method}")
    for r in df[df["decision"] == "not estimable"].itertuples():
        _say(f"not estimable: {r.metric} at {r.visit}, {r.treatment}: {r.reason}")
    if s.plan.assumed:
        _say("assumed (no plan says otherwise): " + "; ".join(s.plan.assumed))


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--methods", default="", help="Comma-separated: qc, mi, j2r, cr, tipping (default: the plan's).")
@click.option("--imputations", type=int, help="Imputations per method (default: the plan's, else 100).")
@click.option("--seed", type=int, help="Seed of every draw (default: the plan's).")
@_output
@_VERSION
@_kept()
def sensitivity(study, methods, imputations, seed, fmt, version):
    """The primary endpoint's missing-data and QC sensitivity analyses: the MMRM as planned, QC handled the
    other way, multiple imputation under MAR, jump to reference, copy reference, the tipping point.

    Example: skintrack sensitivity trial --imputations 200 --seed 7
    """
    _emit(_open(study, version).sensitivity(list(_csv(methods)) or None, imputations, seed), fmt)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--metrics", default="", help="Comma-separated metric keys (default: every metric the panel has).")
@click.option("--all", "show_all", is_flag=True, help="Every metric of every run, not only those that moved.")
@_output
@_kept()
def drift(study, metrics, show_all, fmt):
    """The sentinel panel's results against its reference run: per run and metric the shift, its 95% CI and
    whether it exceeds the minimal detectable change (at a 5% family-wise error over the metrics). Exit status 1
    when any does, or when the API generation changed.

    Example: skintrack drift trial
    """
    from .analysis.instrument import verdict

    table = _open(study).drift(list(_csv(metrics)) or None)
    shown = table if show_all or fmt is not None else table[table["moved"]]
    if fmt is not None:
        _emit(shown, fmt)
    elif table.empty:
        _say(f"{study}: no sentinel results (analyze --sentinel PANEL_DIR sends a panel with each batch)")
    else:
        runs = table.groupby(["batch", "position"], sort=False)
        _say(f"{runs.ngroups} sentinel runs against the reference {table['reference'].iloc[0]}, "
             f"{table['metric'].nunique()} metrics, {int(table['photos'].max())} photos")
        if len(shown):
            _emit(shown[["batch", "position", "metric", "photos", "shift", "ci_low", "ci_high", "mdc", "noise",
                         "exceeds_mdc", "generation"]], None)
        for (batch, position), g in runs:
            _say(f"{batch} {position}: " + (verdict(g) or "nothing moved beyond the MDC"))
    sys.exit(1 if table["exceeds_mdc"].any() or (table["generation"] != table["reference_generation"]).any() else 0)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--metrics", default="", help="Comma-separated metric keys (default: the plan's endpoints).")
@click.option("--test", type=click.Choice(["paired_t", "wilcoxon"]), default="paired_t", show_default=True,
              help="The test of each visit's change against baseline.")
@_output
@_VERSION
@_kept()
def claims(study, metrics, test, fmt, version):
    """The claim table a cosmetic dossier prints: per metric, arm and visit, the mean change and % change from
    baseline with 95% CIs, the p-value against baseline and the share of subjects improved.

    Example: skintrack claims trial --metrics score.water,score.rough
    """
    table = _open(study, version).claims(list(_csv(metrics)) or None, test)
    _emit(table if fmt else table.drop(columns=["test"]).dropna(axis=1, how="all"), fmt)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.argument("a")
@click.argument("b")
@click.option("--chart", type=click.Path(dir_okay=False), help="Also draw the scatter charts into this PNG/SVG/PDF.")
@_output
def agreement(study, a, b, chart, fmt):
    """Does metric B move with metric A on the same captures? Pearson and Spearman with 95% CIs on the
    values and on the changes from baseline; with a shared unit, Lin's concordance and Bland-Altman.

    Example: skintrack agreement trial score.water score.rough --chart agreement.png
    """
    table = _open(study).agreement(a, b)
    _emit(table, fmt)
    if chart:
        from .show import charts

        fig = charts.agreement_scatter(table)
        fig.savefig(chart, dpi=150)
        if fmt is None:
            _say(f"chart: {chart}")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--metrics", default="", help="Comma-separated measure keys (default: every measure with raters).")
@_output
@_kept()
def raters(study, metrics, fmt):
    """Agreement between the raters of each measure graded by two or more: ICC(2,1) with its 95% CI and,
    for grades, the weighted kappa of each pair of raters.

    Example: skintrack raters trial --metrics measure.wrinkle_grade
    """
    table = _open(study).raters(list(_csv(metrics)) or None)
    if table.empty and fmt is None:
        _say("no measure of this study was graded by two or more raters")
        return
    _emit(table, fmt)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--metrics", default="", help="Comma-separated metric keys (default: every metric).")
@click.option("--all", "show_all", is_flag=True, help="Also the metrics whose offset is 0.")
@_output
@_kept()
def bridge(study, metrics, show_all, fmt):
    """The offset between API generations per metric, from photos analysed under both (sentinels, or photos
    sent again on purpose): the mean difference (newer minus older), its SD, 95% CI and each photo's.

    Example: skintrack bridge trial --metrics score.wrinkle,score.pores
    """
    table = _open(study).bridge(list(_csv(metrics)) or None)
    shown = table if show_all or fmt is not None else table[table["offset"].abs() > 0]
    if table.empty and fmt is None:
        _say(f"{study}: no photo was analysed under two API generations; send some again (or a sentinel "
             "panel) after a change to bridge it")
        return
    _emit(shown, fmt)
    if fmt is None:
        _say(f"{len(table) - len(shown)} of {len(table)} metric offsets are exactly 0 (--all lists them)")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@_output
def check(study, fmt):
    """List every problem of a study: damaged store files, unknown subjects, doubled visits, odd visit labels, ...

    Exit status 1 when there is any. Example: skintrack check trial
    """
    from .errors import StoreError
    from .tables.check import store_problems

    try:
        df = _open(study).check()
    except StoreError:  # a catalog that cannot be opened: what is damaged, without opening it
        df = store_problems(study)
    if fmt is not None:
        _emit(df, fmt)
    else:  # one line per problem: where it is, then what it is
        _say("\n".join(f"{r.where}: {r.problem}" for r in df.itertuples()) or f"{study}: no problems found")
    sys.exit(1 if len(df) else 0)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--flagged-only", is_flag=True, help="Only analyses with at least one flag.")
@_output
def qc(study, flagged_only, fmt):
    """Capture-quality flags per analysis (pose, face size, glasses, hair, distance, lighting).

    Example: skintrack qc trial --flagged-only
    """
    df = _open(study).qc()
    _emit(df[df["flagged"]] if flagged_only else df, fmt)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for report.html, report.pdf, report.docx, figures/.")
@click.option("--metrics", default="", help="Metric keys, comma-separated (default: total, water, rough, melanin, pores).")
@click.option("--subject", multiple=True, help="Add a page for this subject (repeatable).")
@click.option("--no-pdf", is_flag=True, help="No PDF (the HTML and the DOCX only).")
@click.option("--no-docx", is_flag=True, help="No DOCX.")
@click.option("--paper", type=click.Choice(["a4", "letter"]), default="a4", show_default=True, help="Page size.")
@click.option("--figures", default="png", show_default=True, help="Figure files to write: png,svg,pdf.")
@click.option("--title", help="Report title (default: the plan's).")
@click.option("--sponsor", help="Sponsor (default: the plan's).")
@click.option("--product", help="Product (default: the plan's).")
@click.option("--protocol", help="Protocol (default: the plan's).")
@_VERSION
@_kept(dated=True)
def report(study, out, metrics, subject, no_pdf, no_docx, paper, figures, title, sponsor, product, protocol, version):
    """Write the dossier-ready trial report: self-contained HTML, a paged PDF of it, a DOCX with the same
    numbered tables and figures for the medical writer, and the figures.

    Example: skintrack report trial --out trial-report --metrics score.water,score.rough --subject S05
    """
    from .show.report import build_report

    result = build_report(_open(study, version), out, _csv(metrics) or None, list(subject), pdf=not no_pdf, title=title,
                          paper=paper, figure_formats=_csv(figures), docx=not no_docx,
                          names={"sponsor": sponsor, "product": product, "protocol": protocol})
    click.echo(f"report: {result.html}" + (f"\npdf: {result.pdf} ({result.pdf_engine})" if result.pdf else "")
               + (f"\ndocx: {result.docx}" if result.docx else ""))
    for i, finding in enumerate(result.findings, 1):
        _say(f"{i}. {finding}")


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the datasets.")
@click.option("--format", "formats", default="xpt,parquet,csv,xlsx,json", show_default=True,
              help="Comma-separated: xpt (SAS XPORT v5), parquet, csv, xlsx, json (CDISC Dataset-JSON v1.1).")
@click.option("--metrics", default="", help="Parameters, comma-separated (default: every score and the plan's endpoints).")
@_VERSION
def export(study, out, formats, metrics, version):
    """Write the CDISC ADaM datasets ADSL and ADSKIN for the statistician, with a define-style listing (and
    Define-XML 2.1 beside the XPT files).

    Example: skintrack export trial --out trial-adam --format xpt,csv
    """
    from .show.export import export as run

    for path in run(_open(study, version), out, _csv(formats), list(_csv(metrics)) or None):
        click.echo(str(path))


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@_output
def history(study, fmt):
    """Every version of the study: number, time, command, who, and what changed.

    Example: skintrack history trial
    """
    _emit(_open(study).history(), fmt)


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--keep-days", type=float, help="Also expire versions older than this many days (never the newest, "
              "never one an open reader holds) and delete the files only they needed. Default: keep every version.")
def compact(study, keep_days):
    """Merge the study's small data files (each ingest adds some; this also runs by itself as they pile up).

    Example: skintrack compact trial --keep-days 365
    """
    from .tables import versions

    _open(study)  # converts an old study, refuses a folder that is none
    done = versions.compact_study(study, keep_days)
    _say(f"most data files of one table: {done['files_before']} -> {done['files_after']}; "
         f"versions expired: {done['expired']}; files deleted: {done['deleted']}"
         + _waiting(done))


def _waiting(done: dict) -> str:
    """Why files that no version needs were not deleted yet (`versions.delete_unneeded`)."""
    if not done.get("waiting"):
        return ""
    if done["waiting_for"]:
        return (f" ({done['waiting']} wait for process {', '.join(done['waiting_for'])}, reading an older version: "
                "they are deleted by a compact after it reads again or closes)")
    from .tables.versions import SHARED_GRACE

    return (f" ({done['waiting']} wait {SHARED_GRACE.total_seconds() / 60:.0f} minutes: readers of this shared study "
            "on other machines may be reading them; a later compact deletes them)")


@main.command()
@click.argument("study", type=click.Path(file_okay=False, exists=True))
def upgrade(study):
    """Convert a study written by skintrack before 0.2 (batch folders) into the versioned store (opening it
    does the same).

    Example: skintrack upgrade old-trial
    """
    from .tables.upgrade import upgrade as run

    counts = run(study)
    _say(f"converted {study}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))


@main.command()
@click.argument("study", type=click.Path(file_okay=False))
@click.option("--catalog", required=True, help="PostgreSQL connection for the catalog: 'postgres:dbname=... host=... "
              "user=...' (the password from PGPASSWORD or ~/.pgpass).")
@click.option("--data-path", help="Where the Parquet files go, shared by every machine (default: STUDY/lake).")
def share(study, catalog, data_path):
    """Make a new study a team study: its catalog in PostgreSQL, so that several machines read and write it.

    Example: skintrack share trial --catalog 'postgres:dbname=skin host=db.lab user=ana' --data-path /mnt/lake
    """
    from .tables import store

    if store.is_study(study):
        raise UsageError(f"{study}: already a study; share a new study folder before the first ingest")
    store.share(study, catalog, data_path)
    _say(f"{study}: catalog {catalog}")


@main.command()
@click.option("--study", default="build/demo-study", show_default=True, type=click.Path(file_okay=False),
              help="Where to build the demo study.")
def demo(study):
    """The whole pipeline on the embedded SIMULATED sample trial: ingest, QC, statistics, charts, report.

    Example: skintrack demo --study build/demo-study
    """
    from .demo import run_demo

    _say(run_demo(study))


if __name__ == "__main__":  # pragma: no cover
    main()
