"""The on-disk spool of journal records waiting for PostgreSQL: JSON lines, fsynced, in a directory of its own.

Files in the directory:
- `pending.jsonl`: records not yet written, oldest first. Appends are flushed and fsynced before they
  count as spooled, so a record survives the process and the machine once `append` has returned.
- `rejected.jsonl`: records PostgreSQL refused for what they are (a damaged line, a violated
  constraint): kept for an operator, never dropped, never retried.
- `lock`: held (flock) while a process uses the directory; a second process gets `SpoolLocked` at
  once instead of interleaving its lines.

Records hold redacted text only (banking/journal.py), so the spool holds no secret; files are still
created readable by their owner only. Every method blocks on disk I/O: call it off the event loop, and
from one task at a time.
A crash during an append can leave a torn last line; reading skips it with a log line.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from banking.journal import JournalRecord

log = logging.getLogger(__name__)

PENDING: Final = "pending.jsonl"
REJECTED: Final = "rejected.jsonl"
LOCK: Final = "lock"
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


class SpoolLocked(RuntimeError):
    """Another process already spools into this directory."""


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self.directory = directory
        self._pending = directory / PENDING
        self._rejected = directory / REJECTED
        self._lock_fd: int | None = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolLocked(f"{directory} is in use by another process") from None
        self._count = len(self.pending())

    def __len__(self) -> int:
        """Records pending."""
        return self._count

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @staticmethod
    def _append(path: Path, lines: Sequence[str]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        try:
            os.write(fd, "".join(line + "\n" for line in lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, records: Sequence[JournalRecord]) -> None:
        """Add records after those pending, durably."""
        if not records:
            return
        created = not self._pending.exists()
        self._append(self._pending, [record.to_json() for record in records])
        if created:
            _fsync_dir(self.directory)
        self._count += len(records)

    def pending(self) -> list[JournalRecord]:
        """The records pending, oldest first; unreadable lines are moved to the rejected file."""
        try:
            data = self._pending.read_bytes()
        except FileNotFoundError:
            return []
        records: list[JournalRecord] = []
        unreadable: list[str] = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(JournalRecord.from_json(line))
            except (ValueError, TypeError, KeyError) as exc:  # a torn last line after a crash, or damage
                log.error("spool %s line %d unreadable, kept aside: %s", self._pending, number, exc)
                unreadable.append(line.decode("utf-8", "replace"))
        if unreadable:
            self._append(self._rejected, unreadable)
            self.keep_from(records, 0)  # once aside, out of the pending file
        return records

    def keep_from(self, records: Sequence[JournalRecord], written: int) -> None:
        """`records` (as `pending` returned them) were written up to `written`: keep only the rest.

        The rest is rewritten to a new file that atomically replaces the old one, so a crash midway leaves
        either file whole; records written twice are harmless (writes are idempotent).
        """
        rest = records[written:]
        if not rest:
            self._pending.unlink(missing_ok=True)
        else:
            fresh = self._pending.with_suffix(".tmp")
            fresh.unlink(missing_ok=True)
            self._append(fresh, [record.to_json() for record in rest])
            os.replace(fresh, self._pending)
        _fsync_dir(self.directory)
        self._count = len(rest)

    def reject(self, record: JournalRecord) -> None:
        self._append(self._rejected, [record.to_json()])

    def rejected(self) -> list[str]:
        """The lines kept aside, for an operator (and tests)."""
        try:
            return self._rejected.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
