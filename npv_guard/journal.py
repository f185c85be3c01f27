"""The refusal journal: a refusal that cannot reach Redis is never lost.

Append-only JSON lines, fsync'd before the refusal is acknowledged. Each entry carries its own
id; replaying writes the refusal to Redis under that id (so a replay repeated after a crash stores
it once) and then appends a `done` line. Only the professional and the consumer's keyed hash are
written: the journal holds no phone number. While an entry is pending, the guard treats that
pair as refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from npv_guard.core.decide import withdrawal_by
from npv_guard.core.model import ConsentEvent, Refusal, RefusalSource

log = logging.getLogger("npv_guard.journal")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: str
    professional: str
    digest: str
    refusal: Refusal
    withdrawal: ConsentEvent | None


class JournalUnreadable(Exception):
    """The refusal journal exists but cannot be read."""


class JournalBusy(Exception):
    """Another running process writes this refusal journal."""


class RefusalJournal:
    def __init__(self, path: str, *, writer: bool = False) -> None:
        """`writer`: this process appends and replays (run, agi, serve). One writer per file: a
        second one would compact the file under the first and lose its pending refusals, so it
        is refused (JournalBusy) until the first exits, crash included (the lock goes with it)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: dict[str, JournalEntry] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_fd = self._claim() if writer else None
        self._load()

    def _claim(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JournalBusy(
                f"refusal journal {self.path} is written by a running guard (pid {holder}): "
                "give each guard process its own journal_path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    @classmethod
    def if_present(cls, path: str) -> RefusalJournal | None:
        """The journal for a command that only reads it (check, scrub): None when there is none
        here, JournalUnreadable when there is one it cannot read, since a pending refusal it
        cannot see could let a refused consumer be called."""
        if not path or not os.path.exists(path):
            return None
        try:
            return cls(path)
        except OSError as error:
            raise JournalUnreadable(
                f"refusal journal {path} cannot be read ({error.strerror}): run as the guard's user"
            ) from None

    def _load(self) -> None:
        if not self.path.exists():
            return
        entries: dict[str, JournalEntry] = {}
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    data = json.loads(line)
                    if data["op"] == "done":
                        entries.pop(data["id"], None)
                    elif data["op"] == "refusal":
                        entries[data["id"]] = _entry(data)
                except (ValueError, KeyError, TypeError):
                    # A torn last line after a crash: the refusal it held was never acknowledged.
                    log.warning("journal %s: skipping unreadable line %d", self.path, number)
        self._pending = entries
        if entries:
            log.warning("journal %s: %d refusal(s) still to replay into Redis", self.path, len(entries))

    def _append(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def add(self, professional: str, digest: str, refusal: Refusal, withdrawal: ConsentEvent | None) -> JournalEntry:
        entry = JournalEntry(uuid.uuid4().hex, professional, digest, refusal, withdrawal)
        record: dict[str, object] = {
            "op": "refusal",
            "id": entry.id,
            "professional": professional,
            "digest": digest,
            "at": refusal.at.isoformat(),
            "source": refusal.source.value,
            "call_id": refusal.call_id,
            "withdraws_consent": withdrawal is not None,
        }
        with self._lock:
            self._append(record)
            self._pending[entry.id] = entry
        return entry

    def done(self, entry: JournalEntry) -> None:
        with self._lock:
            self._append({"op": "done", "id": entry.id})
            self._pending.pop(entry.id, None)
            if not self._pending:
                self._compact()

    def _compact(self) -> None:
        # Everything is replayed: start a fresh file atomically.
        fresh = self.path.with_suffix(self.path.suffix + ".new")
        fresh.write_bytes(b"")
        os.replace(fresh, self.path)

    def pending(self) -> list[JournalEntry]:
        with self._lock:
            return list(self._pending.values())

    def pending_for(self, professional: str, digest: str) -> list[JournalEntry]:
        with self._lock:
            return [e for e in self._pending.values() if e.professional == professional and e.digest == digest]

    def __len__(self) -> int:
        return len(self._pending)


def _entry(data: dict[str, object]) -> JournalEntry:
    at = datetime.fromisoformat(str(data["at"])).astimezone(UTC)
    refusal = Refusal(at, RefusalSource(str(data["source"])), str(data.get("call_id", "")))
    withdrawal = withdrawal_by(refusal) if data.get("withdraws_consent") else None
    return JournalEntry(str(data["id"]), str(data["professional"]), str(data["digest"]), refusal, withdrawal)
