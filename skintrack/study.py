"""`skintrack.open(DIR)`: a study folder as DuckDB views, with query helpers.

Example
-------
>>> import tempfile
>>> s = open(tempfile.mkdtemp())
>>> s.sql("select count(*) as n from analyses")["n"].tolist()
[0]
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from . import store
from .errors import UsageError


class Study:
    """A study folder opened for reading: `con` has one view per table plus `metrics` and `metrics_wide`."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path}: not a study folder")
        self.con = duckdb.connect()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the folder (after an ingest by another process)."""
        store.create_views(self.con, self.path)

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r})"

    def sql(self, query: str, params=None) -> pd.DataFrame:
        """Run a query against the study's views; `params` are bound, never pasted into the SQL.

        Example
        -------
        >>> import tempfile
        >>> open(tempfile.mkdtemp()).sql("select ? + 1 as two", [1])["two"].tolist()
        [2]
        """
        rel = self.con.sql(query, params=params)
        return rel.to_arrow_table().to_pandas() if rel is not None else pd.DataFrame()


def open(path) -> Study:  # noqa: A001 - the contract names it skintrack.open
    """Open a study folder (it need not exist yet: an empty study has empty views)."""
    return Study(path)
