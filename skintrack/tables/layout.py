"""Where things are: the names of a study folder's parts and the user's cache, in a module light enough for
the command line to read a study's catalog without loading DuckDB (`skintrack.kept`).

Example
-------
>>> CATALOG, DATA, PLAN
('lake.sqlite', 'lake', 'plan.toml')
"""
import os
from pathlib import Path

CATALOG = "lake.sqlite"  # the local catalog (SQLite)
DATA = "lake"  # the data files
CONFIG = "store.toml"  # a shared catalog's address, when the study has one
PLAN = "plan.toml"  # the study plan as the user edits it


def cache_dir() -> Path | None:
    """The user's cache (kept outputs, verified extension files); None when `SKINTRACK_CACHE=off`."""
    chosen = os.environ.get("SKINTRACK_CACHE")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skintrack"
