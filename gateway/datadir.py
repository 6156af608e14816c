"""The gateway's data directory: writable, held by one process, owned by one gateway.

The directory holds the outbox, the operator state, the signing key and the models of one
gateway. Two processes on it would keep two sequence counters over one outbox, and a
gateway started there with another `--id` would send the first one's unacknowledged
records, chained and signed, as its own: the cloud would file a second gateway's data
under the wrong name and the first gateway's gaps would never fill. So the first start
writes the owner's id to `gateway.id`, and every start takes an exclusive lock on
`gateway.lock` (released by the kernel however the process ends, `kill -9` included).
A directory from before `gateway.id` is adopted by the first gateway that starts there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

ID_FILE = "gateway.id"
LOCK_FILE = "gateway.lock"


class DataDirError(ValueError):
    """The data directory is another gateway's, or in use; the message says what to do."""


def check_data_dir(path: Path) -> None:
    """Refuse, in one line, a place the gateway cannot write (a file, /proc, a read-only
    mount or directory) before anything starts, and make nothing meanwhile: a directory
    still to be made is judged by the nearest one that exists, so a mistake elsewhere on
    the command line leaves no /var/lib/fogline behind (`claim_data_dir` makes it)."""
    if path.exists() and not path.is_dir():
        raise DataDirError(f"--data-dir {path}: exists and is not a directory")
    there = next(p for p in (path, *path.absolute().parents) if p.exists())
    try:
        if not there.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        probe = there / f".fogline-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataDirError(
            f"--data-dir {path}: cannot write there ({reason}); choose a writable directory"
        ) from None


@contextlib.contextmanager
def claim_data_dir(path: Path, gateway_id: str) -> Iterator[None]:
    """Hold `path` for `gateway_id` while the block runs; refuse another gateway's
    directory and one a running gateway holds."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DataDirError(
                f"--data-dir {path}: another gateway (pid {holder}) is running there; "
                "stop it first, or give this one its own --data-dir"
            ) from None
        owner = _owner(path)
        if owner is None:
            _write_owner(path, gateway_id)
        elif owner != gateway_id:
            raise DataDirError(
                f"--data-dir {path} belongs to gateway {owner!r} and holds its outbox; "
                f"start that gateway with --id {owner}, or give {gateway_id!r} its own "
                "--data-dir"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor


def _owner(path: Path) -> str | None:
    try:
        return (path / ID_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _write_owner(path: Path, gateway_id: str) -> None:
    """Written whole or not at all: a crash here leaves no half-written owner behind."""
    tmp = path / f".{ID_FILE}.{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(f"{gateway_id}\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path / ID_FILE)
