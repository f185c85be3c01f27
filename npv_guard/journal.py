"""The refusal journal: a refusal that cannot reach Redis is never lost.

Append-only JSON lines, fsync'd before the refusal is acknowledged. Each entry carries its own
id; replaying writes the refusal to Redis under that id (so a replay repeated after a crash stores
it once) and then appends a `done` line. Only the professional and the consumer's keyed hash are
written: the journal holds no phone number. While an entry is pending, the guard treats that
pair as refused.

A record is complete once its newline is written. A crash in the middle of an append leaves a
torn last line: the writer cuts it off when it opens the file (that refusal was never
acknowledged), so the next record starts on a line of its own. A reader also finds a complete
record glued to a torn one (a file written before that cut existed) by resynchronising on the
next `{"op"` of the line.

The guards of one host share their pending refusals: every journal also reads the other
`*.journal` files of its directory (its peers), re-read whenever their size or inode changes,
and a guard replays and compacts a peer whose writer died (its lock is free).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from npv_guard.core.decide import withdrawal_by
from npv_guard.core.model import ConsentEvent, Refusal, RefusalSource

log = logging.getLogger("npv_guard.journal")

# The file name ending that makes a journal visible to the other guards of its directory.
SUFFIX = ".journal"
# A peer's journal appears when its guard starts: the directory's own stat (one syscall per
# decision) shows it, and a full listing this often covers a change within the stat's timestamp
# granularity.
PEER_LISTING_S = 1.0
# json.dumps puts "op" first: where a record starts inside a line (quotes are escaped in values).
RECORD_START = b'{"op"'


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


@dataclass(slots=True)
class Contents:
    """What one read of a journal file found."""

    entries: dict[str, JournalEntry] = field(default_factory=dict)
    unreadable: int = 0  # lines skipped: not a record (a torn tail included)
    first_unreadable: int = 0  # its line number, for the one warning
    complete_end: int = 0  # offset just past the last newline
    tail: bytes = b""  # bytes after the last newline: a torn append, or nothing
    tail_is_record: bool = False  # the tail holds a whole record, only its newline is missing


def parse(data: bytes) -> Contents:
    """Every record of a journal's bytes; never raises, whatever the bytes."""
    contents = Contents()
    lines = data.split(b"\n")
    contents.tail = lines.pop()
    contents.complete_end = len(data) - len(contents.tail)
    for number, line in enumerate(lines, start=1):
        if line.strip() and not _apply(contents.entries, line):
            _skipped(contents, number)
    if contents.tail.strip():
        contents.tail_is_record = _apply(contents.entries, contents.tail)
        if not contents.tail_is_record:
            _skipped(contents, len(lines) + 1)
    return contents


def _skipped(contents: Contents, number: int) -> None:
    contents.unreadable += 1
    contents.first_unreadable = contents.first_unreadable or number


def _apply(entries: dict[str, JournalEntry], line: bytes) -> bool:
    """Apply the line's record; False when it holds none. A line that does not parse as a whole
    may be torn bytes followed by a complete record, which then starts at the line's last
    `{"op"` (a record holds only one: quotes inside values are escaped)."""
    for start in sorted({0, line.rfind(RECORD_START)}):
        if start < 0:
            continue
        try:
            data = json.loads(line[start:])
            if data["op"] == "done":
                entries.pop(str(data["id"]), None)
                return True
            if data["op"] == "refusal":
                entry = _entry(data)
                entries[entry.id] = entry
                return True
        except Exception:  # any bytes at all: a bad line is skipped, never fatal
            continue
    return False


class RefusalJournal:
    def __init__(
        self, path: str, *, writer: bool = False, peers: bool = True, live: bool | None = None, wait_s: float = 0.0
    ) -> None:
        """`writer`: this process appends and replays (run, agi, serve). One writer per file: a
        second one would compact the file under the first and lose its pending refusals, so it
        is refused (JournalBusy) until the first exits, crash included (the lock goes with it);
        `wait_s` lets a guard that starts while another one replays this orphaned file wait for it.
        `peers`: also read the other journals of the directory; `live` (writers by default):
        re-read them when they change, at every question, rather than once now."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: dict[str, JournalEntry] = {}
        self._unreadable = 0
        self._peers: dict[str, _Peer] | None = {} if peers else None
        self._folder = str(self.path.parent)  # str, not Path: this is on the hot path
        self._peer_paths: list[tuple[str, str]] = []  # (name, path)
        self._directory: tuple[int, int, int, int] | None = None
        self._next_listing = 0.0
        self._live = writer if live is None else live
        if writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_fd = self._claim(wait_s) if writer else None
        try:
            self._load()
            self._refresh_peers()
        except BaseException:
            self.close()
            raise
        if writer and peers and not self.path.name.endswith(SUFFIX):
            log.warning(
                "journal %s: its name does not end in %s, the other guards of this host will not see "
                "its pending refusals",
                self.path,
                SUFFIX,
            )

    def _claim(self, wait_s: float) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
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
        """The journals for a command that only reads them (check, scrub): this one and its peers,
        read once. None when there is none here, JournalUnreadable when one cannot be read, since
        a pending refusal it cannot see could let a refused consumer be called."""
        if not path:
            return None
        if not os.path.exists(path) and not _peer_names(Path(path)):
            return None
        try:
            journal = cls(path)
        except OSError as error:
            raise JournalUnreadable(
                f"refusal journal {path} cannot be read ({error.strerror}): run as the guard's user"
            ) from None
        blind = journal.blind_to()
        if blind:
            raise JournalUnreadable(f"refusal journal {blind} cannot be read: run as the guard's user")
        return journal

    @classmethod
    def adopt(cls, path: str) -> RefusalJournal | None:
        """A peer's journal whose writer is gone, claimed for replaying it; None while it has one."""
        try:
            return cls(path, writer=True, peers=False)
        except JournalBusy:
            return None

    def close(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)  # releases the lock
            self._writer_fd = None

    def _load(self) -> None:
        cut = self._repair() if self._writer_fd is not None else 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        contents = parse(data)
        self._pending = contents.entries
        self._unreadable = contents.unreadable + cut
        _warn_unreadable(self.path, contents)
        if contents.entries:
            log.warning("journal %s: %d refusal(s) still to replay into Redis", self.path, len(contents.entries))

    def _repair(self) -> int:
        """Writer only, at open: end the file on a complete line, so that the next record cannot
        be glued to a torn one. A torn tail was never acknowledged (its fsync did not return);
        a tail that is a whole record only lacks its newline, which is added. 1 when cut."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        cut = 0
        try:
            contents = parse(_read_all(fd))
            if contents.tail_is_record:
                os.lseek(fd, 0, os.SEEK_END)
                os.write(fd, b"\n")
            elif contents.tail:
                os.ftruncate(fd, contents.complete_end)
                cut = 1
                log.warning(
                    "journal %s: cut a torn last record (%d bytes) left by a crash", self.path, len(contents.tail)
                )
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.path.parent)  # the file may have just been created
        return cut

    def _append(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except BaseException:
                # Not acknowledged (disk full, I/O error): leave no torn line for the next record.
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def add(
        self,
        professional: str,
        digest: str,
        refusal: Refusal,
        withdrawal: ConsentEvent | None,
        refusal_id: str | None = None,
    ) -> JournalEntry:
        """Journal a refusal; `refusal_id`: the id a Redis write that may have landed used, so that
        the replay stores it once."""
        entry = JournalEntry(refusal_id or uuid.uuid4().hex, professional, digest, refusal, withdrawal)
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
                try:
                    self._compact()
                except OSError as error:
                    # Every line is already durable: the file is only longer than it needs to be.
                    log.warning("journal %s: compaction failed (%s), retried later", self.path, error.strerror)

    def _compact(self) -> None:
        # Everything is replayed: start a fresh file atomically, with the mode of the old one.
        fresh = self.path.with_name(self.path.name + ".new")
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mode = 0o600
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, self.path)
        fsync_directory(self.path.parent)  # the rename itself survives a power cut

    def pending(self) -> list[JournalEntry]:
        """This journal's own entries, the ones it replays."""
        with self._lock:
            return list(self._pending.values())

    def pending_for(self, professional: str, digest: str) -> list[JournalEntry]:
        """The pair's refusals waiting in this journal or in a peer's."""
        with self._lock:
            self._refresh_peers_if_live()
            found = {e.id: e for e in self._pending.values() if e.professional == professional and e.digest == digest}
            for peer in (self._peers or {}).values():
                for entry in peer.entries.values():
                    if entry.professional == professional and entry.digest == digest:
                        found.setdefault(entry.id, entry)
            return list(found.values())

    def has_pending(self) -> bool:
        """Whether any refusal waits here or in a peer (or a peer cannot be read): the hot path's
        cheap question, a stat of the directory and one per peer journal."""
        with self._lock:
            self._refresh_peers_if_live()
            return bool(self._pending) or any(p.entries or p.blind for p in (self._peers or {}).values())

    @property
    def blind(self) -> bool:
        """A peer journal holds something this process cannot read: fail-open would be unsafe."""
        return self.blind_to() is not None

    def blind_to(self) -> str | None:
        with self._lock:
            return next((str(self.path.with_name(n)) for n, p in (self._peers or {}).items() if p.blind), None)

    def orphans(self) -> list[str]:
        """The peers with pending refusals, which this guard may adopt once their writer is gone."""
        with self._lock:
            self._refresh_peers_if_live()
            return [str(self.path.with_name(name)) for name, peer in (self._peers or {}).items() if peer.entries]

    def unreadable_lines(self) -> int:
        """Lines skipped at the last read of this journal and of its peers."""
        with self._lock:
            return self._unreadable + sum(peer.unreadable for peer in (self._peers or {}).values())

    def __len__(self) -> int:
        return len(self._pending)

    def _refresh_peers_if_live(self) -> None:
        if self._live:
            self._refresh_peers()

    def _refresh_peers(self) -> None:
        if self._peers is None:
            return
        try:
            info = os.stat(self._folder)
            directory = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        except OSError:
            directory = None
        now = time.monotonic()
        if directory is None or directory != self._directory or now >= self._next_listing:
            # Stat first, list next: a file created in between shows at the next question.
            self._directory, self._next_listing = directory, now + PEER_LISTING_S
            self._peer_paths = [(name, os.path.join(self._folder, name)) for name in _peer_names(self.path)]
        seen: set[str] = set()
        for name, path in self._peer_paths:
            try:
                info = os.stat(path)
            except OSError:
                continue  # gone between the listing and now
            if not stat.S_ISREG(info.st_mode):
                continue
            seen.add(name)
            signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            known = self._peers.get(name)
            if known is None or known.signature != signature:
                self._peers[name] = _Peer.read(Path(path), signature)
        if len(seen) != len(self._peers):
            for name in set(self._peers) - seen:
                del self._peers[name]


@dataclass(slots=True)
class _Peer:
    signature: tuple[int, int, int, int]
    entries: dict[str, JournalEntry]
    unreadable: int
    blind: bool  # not empty, yet cannot be read

    @classmethod
    def read(cls, path: Path, signature: tuple[int, int, int, int]) -> _Peer:
        try:
            data = path.read_bytes()
        except OSError as error:
            blind = signature[1] > 0
            if blind:
                log.warning("journal %s: cannot read this peer journal (%s)", path, error.strerror)
            return cls(signature, {}, 0, blind)
        contents = parse(data)
        _warn_unreadable(path, contents)
        return cls(signature, contents.entries, contents.unreadable, False)


def _peer_names(path: Path) -> list[str]:
    """The other journals next to `path` (one directory listing)."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return [name for name in names if name.endswith(SUFFIX) and name != path.name]


def _warn_unreadable(path: Path, contents: Contents) -> None:
    if contents.unreadable:
        log.warning(
            "journal %s: skipped %d unreadable line(s), the first at line %d",
            path,
            contents.unreadable,
            contents.first_unreadable,
        )


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def fsync_directory(directory: Path) -> None:
    """Make a file created or renamed in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # those file systems cannot sync a directory: nothing more to do there
    finally:
        os.close(fd)


def _entry(data: dict[str, object]) -> JournalEntry:
    at = datetime.fromisoformat(str(data["at"]))
    if at.tzinfo is None:
        raise ValueError("a journaled instant without its offset")
    refusal = Refusal(at.astimezone(UTC), RefusalSource(str(data["source"])), str(data.get("call_id", "")))
    withdrawal = withdrawal_by(refusal) if data.get("withdraws_consent") else None
    for name in ("id", "professional", "digest"):
        if not isinstance(data[name], str) or not data[name]:
            raise ValueError(f"journal record without its {name}")
    return JournalEntry(str(data["id"]), str(data["professional"]), str(data["digest"]), refusal, withdrawal)
