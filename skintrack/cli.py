"""The `skintrack` command: parse options, call one library function, print.

Exit status: 0 when everything was taken, 1 when any input was rejected or any photo failed,
2 on a usage error (bad option, unreadable manifest, unknown metric).
"""
from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import InvalidManifest, SkintrackError, UnknownMetric, UsageError


class _Group(click.Group):
    """Turns library errors into one clear line and an exit status; no traceback reaches the user."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UsageError, InvalidManifest, UnknownMetric) as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(2)
        except SkintrackError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="skintrack")
def main():
    """skintrack: longitudinal skin analysis from Skin Analyze Pro responses."""


def _print_rejects(rejected):
    for source, reason in rejected:
        click.echo(f"rejected: {source}: {reason}", err=True)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--study", required=True, type=click.Path(file_okay=False), help="Study folder (created if needed).")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV mapping files to subject, visit, taken_at.")
@click.option("--subjects", type=click.Path(dir_okay=False), help="CSV of subject-level columns (arm, age, ...).")
@click.option("--workers", default=1, show_default=True, help="Worker processes for parsing.")
@click.option("--batch-size", default=200, show_default=True, help="Files per atomic batch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(sources, study, manifest, subjects, workers, batch_size, quiet):
    """Ingest response files, folders (recursive), globs or a study's raw/ archive.

    Example: skintrack ingest responses/ --study trial --manifest manifest.csv --subjects subjects.csv
    """
    from .ingest import ingest as run

    report = run(sources, study, manifest=manifest, subjects=subjects, workers=workers,
                 progress=not quiet, chunk_size=batch_size)
    _print_rejects(report.rejected)
    click.echo(f"ingested {report.added} new analyses, skipped {report.skipped} already held, "
               f"rejected {len(report.rejected)}; sessions assigned {report.sessions}, subjects {report.subjects} "
               f"({report.seconds:.1f} s) into {study}")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records instead of a table.")
def metrics(as_json):
    """List every metric key with its meaning, unit, range and better-direction.

    Example: skintrack metrics --json
    """
    from .catalog import catalog

    cat = catalog()
    if as_json:
        click.echo(json.dumps(cat.to_dict("records"), indent=1, default=str))
    else:
        with_cols = cat[["key", "unit", "range", "better", "description"]]
        click.echo(with_cols.to_string(index=False, max_colwidth=70))


@main.command()
@click.option("--study", default="build/demo-study", show_default=True, type=click.Path(file_okay=False),
              help="Where to build the demo study.")
def demo(study):
    """Ingest the embedded SIMULATED sample trial and print a summary.

    Example: skintrack demo --study build/demo-study
    """
    from .demo import run_demo

    click.echo(run_demo(study))


if __name__ == "__main__":  # pragma: no cover
    main()
