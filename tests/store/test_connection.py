"""How every connection to the store is set up."""

from __future__ import annotations

from bridge.store import db as store


def test_a_connection_is_durable_and_bounds_the_wal_file(tmp_path):
    db = store.connect(tmp_path / "bridge.sqlite3")
    pragma = {
        name: db.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "journal_size_limit", "busy_timeout")
    }
    db.close()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL: a webhook's 2xx follows its commit to disk
        "journal_size_limit": store.JOURNAL_SIZE_LIMIT_BYTES,
        "busy_timeout": int(store.BUSY_TIMEOUT_SECONDS * 1000),
    }


def wal_size_after_a_burst(tmp_path, limit: int) -> tuple[int, int]:
    """The -wal file's size after a 1.6 MB transaction, and after the next checkpoint and
    write, with the given journal_size_limit."""
    db = store.connect(tmp_path / f"limit{limit}.sqlite3")
    db.execute(f"PRAGMA journal_size_limit = {limit}")
    db.execute("CREATE TABLE t (x TEXT)")
    with store.immediate(db):
        for _ in range(400):
            db.execute("INSERT INTO t VALUES (?)", ["x" * 4000])
    wal = tmp_path / f"limit{limit}.sqlite3-wal"
    grown = wal.stat().st_size
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db.execute("INSERT INTO t VALUES ('after')")  # the first write after it restarts the log
    after = wal.stat().st_size
    db.close()
    return grown, after


def test_the_wal_file_is_cut_back_after_a_burst(tmp_path):
    grown, after = wal_size_after_a_burst(tmp_path, 65536)
    assert grown > 1_000_000 and after <= 65536
    # Without a limit the file keeps the burst's size: the limit is what cuts it.
    grown, after = wal_size_after_a_burst(tmp_path, -1)
    assert after == grown
