"""The DuckDB extensions a study needs (DuckLake and its catalog's scanner), loaded from their PyPI packages
with each file's signature checked by DuckDB once per machine instead of on every connection.

DuckDB checks an extension's signature by hashing the whole file at each LOAD: 0.25 s of CPU for each of
the two a study needs, which was half of what opening a study and running one helper cost
(benchmarks/report.py). A file DuckDB has verified is remembered by its identity (path, size, inode,
modification and change times, DuckDB's version): in this process, and in the user's cache unless
`SKINTRACK_CACHE=off`. A later connection loads that same file without the check. Any change to the file
gives it another change time, which no user can set back, so it is checked again; a file from DuckDB's own
repository (no PyPI package) is always checked. Whoever could rewrite a remembered file could equally
rewrite DuckDB's own library, which nothing checks, so remembering widens nothing.

A connection is made allowing unsigned loads (DuckDB's setting is fixed when it starts, and can only be
turned off later), the remembered files are loaded, and `lock` turns the setting off for the rest of its
life: a query can never load an unsigned file.

Example
-------
>>> import duckdb
>>> con = duckdb.connect(config={"allow_unsigned_extensions": True})
>>> load(con, "ducklake")
>>> lock(con)
>>> con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()
(False,)
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import duckdb

from ..sinks import sql_literal
from .layout import cache_dir

PACKAGES = {"ducklake": "duckdb_extension_ducklake", "sqlite_scanner": "duckdb_extension_sqlite_scanner",
            "postgres_scanner": "duckdb_extension_postgres_scanner"}
RECORD = "verified-extensions"  # in the cache: one identity per line


def load(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load extension `name` from its PyPI package (pinned with DuckDB), or from DuckDB's own repository when
    that package is missing."""
    spec = importlib.util.find_spec(PACKAGES[name])
    path = None
    if spec is not None and spec.origin:
        found = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        path = found if found.is_file() else None
    if path is None:
        lock(con)
        con.execute(f"INSTALL {name}; LOAD {name}")
    else:
        load_file(con, path)


def load_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Load the extension file at `path`: without DuckDB's signature check if DuckDB has verified this very
    file before and `con` still allows it, else with the check (remembering the file once it passes)."""
    identity = _identity(path)
    trusted = identity in _remembered() and _allows_unsigned(con)
    if not trusted:
        lock(con)  # DuckDB checks the signature, or refuses the file
    con.execute(f"LOAD {sql_literal(str(path))}")
    if not trusted:
        _remember(identity)


def lock(con: duckdb.DuckDBPyConnection) -> None:
    """From now on `con` loads only signed extension files."""
    con.execute("SET allow_unsigned_extensions = false")


def _allows_unsigned(con) -> bool:
    return bool(con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0])


def _identity(path: Path) -> str:
    st = os.stat(path)
    fields = (os.path.realpath(path), st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns,
              duckdb.__version__)
    return hashlib.sha256(repr(fields).encode()).hexdigest()


def _record() -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / RECORD


@functools.cache
def _remembered() -> set[str]:
    """The identities verified before: read from the cache once, then added to by this process."""
    record = _record()
    try:
        return set(record.read_text(encoding="ascii").split()) if record else set()
    except (OSError, ValueError):  # no record yet, or unreadable: the files are checked again
        return set()


def _remember(identity: str) -> None:
    if identity in _remembered():
        return
    _remembered().add(identity)
    if (record := _record()) is None:
        return
    try:  # appended whole in one write; a torn or unreadable record costs a check, never a wrong trust
        record.parent.mkdir(parents=True, exist_ok=True)
        with open(record, "a", encoding="ascii") as f:
            f.write(identity + "\n")
    except OSError:
        pass
