"""DuckDB extensions: a file is loaded without DuckDB's signature check only once DuckDB has verified that very
file, and a study's connection never loads an unsigned file (skintrack.tables.extensions)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from unittest import mock

import duckdb
import pytest

from skintrack.demo import demo_study
from skintrack.tables import extensions

REFUSED = "signature is either missing or invalid"


def unsigned_allowed(con) -> bool:
    return con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0]


@pytest.fixture
def genuine(tmp_path) -> Path:
    """A copy of the PostgreSQL scanner's extension file (a study with a local catalog never loads it)."""
    origin = Path(importlib.util.find_spec(extensions.PACKAGES["postgres_scanner"]).origin).parent
    found = next(origin.rglob("postgres_scanner.duckdb_extension"))
    copy = tmp_path / "ext" / "postgres_scanner.duckdb_extension"
    copy.parent.mkdir()
    shutil.copyfile(found, copy)
    return copy


def tamper(path: Path) -> None:
    """Flip one byte in the middle of the file (its size and DuckDB's metadata footer stay as they were)."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_study_connection_refuses_an_unsigned_extension(genuine):
    s = demo_study()
    s.timeline("score.water")
    assert not unsigned_allowed(s.con)
    tamper(genuine)
    with pytest.raises(duckdb.Error, match=REFUSED):
        s.con.execute(f"LOAD '{genuine}'")


def test_a_file_is_trusted_after_duckdb_verified_it_and_checked_again_once_changed(tmp_path, genuine):
    with mock.patch.dict("os.environ", {"SKINTRACK_CACHE": str(tmp_path / "cache")}):
        first = duckdb.connect(config={"allow_unsigned_extensions": True})
        extensions.load_file(first, genuine)  # never seen: DuckDB checks it, and the connection is locked
        assert not unsigned_allowed(first)
        record = (tmp_path / "cache" / extensions.RECORD).read_text().split()
        assert extensions._identity(genuine) in record

        again = duckdb.connect(config={"allow_unsigned_extensions": True})
        extensions.load_file(again, genuine)  # the same file: loaded without the check
        assert unsigned_allowed(again)
        extensions.lock(again)
        assert not unsigned_allowed(again)

        tamper(genuine)  # same path and size, another change time: checked again, and refused
        assert extensions._identity(genuine) not in record
        changed = duckdb.connect(config={"allow_unsigned_extensions": True})
        with pytest.raises(duckdb.Error, match=REFUSED):
            extensions.load_file(changed, genuine)


def test_an_unreadable_record_costs_a_check_only(tmp_path, genuine):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    extensions._remembered.cache_clear()
    try:
        with mock.patch.dict("os.environ", {"SKINTRACK_CACHE": str(tmp_path / "cache")}):
            con = duckdb.connect(config={"allow_unsigned_extensions": True})
            extensions.load_file(con, genuine)
            assert not unsigned_allowed(con)
            assert con.execute("SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'postgres_scanner' "
                               "AND loaded").fetchone() == (1,)
    finally:
        extensions._remembered.cache_clear()
