"""The append-only, hash-chained SQLite event log.

One writer connection per log, serialised by a lock; WAL so that readers in
other processes never block it; ``synchronous=FULL`` when durable so that an
append that returned survives a crash or power loss.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

from .errors import LogIntegrityError, LogWriteError, SchemaVersionError, UsageError
from .events import KINDS, Event, VerifyReport
from .hashing import GENESIS_HASH, CheckedJSON, canonical_json, check_json, event_hash
from .schema import SCHEMA_VERSION
from .verify import StoredRow, check_chain, check_head

if TYPE_CHECKING:
    from sqlite_utils import Database

logger = logging.getLogger(__name__)

_SQLITE_HEADER = b"SQLite format 3\x00"
_COLUMNS = "seq, session, ts, kind, checkpoint, data, prev_hash, hash"
_BATCH = 1000
BUSY_TIMEOUT_MS = 10_000


def _to_utc_iso(value: datetime | str, name: str) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as err:
            raise UsageError(f"{name}={value!r} is not an ISO-8601 time") from err
    if value.tzinfo is None:
        raise UsageError(f"{name} must be timezone-aware (got {value.isoformat()}); add +00:00")
    return value.astimezone(UTC).isoformat()


def _lenient_text(raw: bytes) -> str:
    """Decode a TEXT column that may have been damaged; bad bytes become surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def _row_to_event(row: tuple[Any, ...]) -> Event:
    return Event(seq=row[0], session=row[1], ts=row[2], kind=row[3], checkpoint=row[4],
                 data=orjson.loads(row[5]), prev_hash=row[6], hash=row[7])


def _shown_path(p: Path, limit: int = 80) -> str:
    """A path for a one-line message: a very long one is cut in the middle."""
    text = str(p)
    return text if len(text) <= limit else f"{text[:40]}...{text[-30:]}"


class EventLog:
    """An open event log; also a context manager.

    Use :meth:`open`; the constructor is internal.
    """

    def __init__(self, db: Database, path: Path, *, readonly: bool, durable: bool) -> None:
        self._db = db
        self._conn = db.conn
        self.path = path
        self.readonly = readonly
        self.durable = durable
        self._lock = threading.RLock()
        self._closed = False
        # Lenient reads, so that a damaged log still opens and verify() can say where.
        with self._lenient_text():
            self._meta: dict[str, str] = dict(
                self._conn.execute("SELECT key, value FROM meta").fetchall())
            last = self._conn.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self._head: tuple[int, str] = (last[0], last[1]) if last else (0, GENESIS_HASH)

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False,
             durable: bool = True) -> Self:
        """Open the log at ``path``, creating it (mode 0600) unless ``readonly``.

        A failed open never modifies the file: the schema is checked before any
        pragma or migration writes to it.

        :raises UsageError: when ``readonly`` and there is no file.
        :raises LogIntegrityError: when the file is not an installengine log.
        :raises SchemaVersionError: when the log is of a newer schema.
        """
        p = Path(path)
        try:
            exists = p.exists()
        except OSError as err:  # a name too long for the filesystem, most likely
            raise UsageError(f"cannot open log {_shown_path(p)}: {err.strerror or err}; pass the "
                             "path of an installengine log.db") from err
        if readonly and not exists:
            raise UsageError(f"no log at {p}; pass the path of an installengine log.db")
        if exists and p.is_dir():
            raise UsageError(f"{p} is a directory; pass the path of an installengine log.db")
        if exists and p.stat().st_size > 0:
            with p.open("rb") as f:
                if f.read(16) != _SQLITE_HEADER:
                    raise LogIntegrityError(f"{p} is not an installengine log (not SQLite); pass the "
                                            "log.db in a target's .installengine directory")
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None)
            else:
                if not exists:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
                conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Imported here, not at module level: sqlite-utils is the largest part of
            # the import time, and only opening a log needs it.
            from sqlite_utils import Database

            from .schema import migrations

            db = Database(conn)
            cls._check_schema(db, p, readonly=readonly)
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                # One transaction for the migrations table and every pending migration:
                # a crash while a log is created must leave an empty file, not half a schema.
                with db.atomic():
                    migrations().apply(db)
                if durable and not exists:
                    _fsync_dir(p.parent)
            return cls(db, p, readonly=readonly, durable=durable)
        except sqlite3.DatabaseError as err:
            if conn is not None:
                conn.close()
            raise LogIntegrityError(f"{p} is not a readable installengine log: {err}; restore it "
                                    "from a backup, or run installengine verify on it") from err
        except BaseException:
            # Close now, not when the traceback is collected: the last connection to a
            # WAL file removes the -wal and -shm files it created.
            if conn is not None:
                conn.close()
            raise

    @staticmethod
    def _check_schema(db: Database, path: Path, *, readonly: bool) -> None:
        tables = set(db.table_names())
        ours = {"events", "meta"}
        if not tables and not readonly:
            return  # a new, empty file: migrations will create the schema
        if not ours <= tables:
            raise LogIntegrityError(
                f"{path} is a SQLite file but not an installengine log (no events/meta tables); "
                "pass the log.db in a target's .installengine directory")
        row = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        text = str(row[0]) if row else "0"
        if not (text.isascii() and text.isdigit()):
            raise LogIntegrityError(
                f"{path} records schema version {text!r}, not a number: its meta table is "
                "damaged; restore the log from a backup")
        found = int(text)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"log {path} has schema version {found}; this installengine reads up to "
                f"{SCHEMA_VERSION}: upgrade installengine", found=found, supported=SCHEMA_VERSION)

    # -- properties ----------------------------------------------------------------

    @property
    def install_id(self) -> str:
        return str(self._meta["install_id"])

    @property
    def created(self) -> str:
        return str(self._meta["created"])

    @property
    def schema_version(self) -> int:
        return int(self._meta["schema_version"])

    @property
    def head(self) -> tuple[int, str]:
        """(last seq, its hash); (0, 64 zeros) for an empty log."""
        with self._lock:
            return self._head

    @property
    def lock(self) -> threading.RLock:
        """The writer lock: hold it to read ``head`` and append with no append in between."""
        return self._lock

    def __len__(self) -> int:
        return self.head[0]

    # -- writing ---------------------------------------------------------------------

    def append(self, kind: str, *, session: str, checkpoint: str | None = None,
               data: Any = None) -> Event:
        """Append one event and return it as stored.

        :raises UsageError: for an unknown kind, non-JSON data or a read-only log.
        :raises LogWriteError: when the file cannot be written; nothing is kept.
        """
        return self.append_many([{"kind": kind, "session": session, "checkpoint": checkpoint,
                                  "data": data}])[0]

    def append_many(self, records: Iterable[Mapping[str, Any]], *, sync: bool = True) -> list[Event]:
        """Append several events in one transaction: all of them are kept, or none.

        ``sync=False`` commits without waiting for the disk, even on a durable log:
        the events survive a crash of the process at once, and a power cut only
        once a later synced commit has flushed them with its own. For events whose
        loss costs nothing, such as registrations before anything has run.

        :raises UsageError: for an unknown kind, non-JSON data or a read-only log.
        :raises LogWriteError: when the file cannot be written; nothing is kept.
        """
        if self.readonly:
            raise UsageError(f"log {self.path} is open read-only; open it without readonly=True "
                             "to append")
        prepared = [self._prepare(r) for r in records]
        if not prepared:
            return []
        with self._lock:
            self._check_open()
            seq, prev = self._head
            rows: list[tuple[Any, ...]] = []
            events: list[Event] = []
            ts = datetime.now(UTC).isoformat()
            for kind, session, checkpoint, data, data_json in prepared:
                seq += 1
                h = event_hash(seq=seq, session=session, ts=ts, kind=kind,
                               checkpoint=checkpoint, data_json=data_json, prev_hash=prev)
                rows.append((seq, session, ts, kind, checkpoint, data_json, prev, h))
                events.append(Event(seq, session, ts, kind, checkpoint, data, prev, h))
                prev = h
            relaxed = self.durable and not sync
            try:
                if relaxed:
                    self._conn.execute("PRAGMA synchronous = NORMAL")
                with self._db.atomic():
                    self._conn.executemany(
                        f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    self._conn.executemany(
                        "UPDATE meta SET value = ? WHERE key = ?",
                        [(str(seq), "head_seq"), (prev, "head_hash")])
            except sqlite3.Error as err:
                raise LogWriteError(
                    f"cannot append to log {self.path}: {err}; nothing of this append was "
                    "recorded (free disk space or check the file, then retry)") from err
            finally:
                if relaxed:
                    self._conn.execute("PRAGMA synchronous = FULL")
            self._head = (seq, prev)
            return events

    @staticmethod
    def _prepare(record: Mapping[str, Any]) -> tuple[str, str, str | None, Any, str]:
        unknown = set(record) - {"kind", "session", "checkpoint", "data"}
        if unknown:
            raise UsageError(f"unknown event field(s) {sorted(unknown)}; "
                             "use kind, session, checkpoint, data")
        kind = record.get("kind")
        if kind not in KINDS:
            raise UsageError(f"unknown event kind {kind!r}; use one of EventKind")
        session = record.get("session")
        if not isinstance(session, str) or not session:
            raise UsageError(f"event session must be a non-empty string, got {session!r}")
        checkpoint = record.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise UsageError(f"event checkpoint must be a string or None, got {checkpoint!r}")
        data = record.get("data")
        if isinstance(data, CheckedJSON):
            return str(kind), session, checkpoint, data.value, data.text.decode()
        # orjson alone would write NaN as null and a datetime as a string: the event
        # would come back different from what was appended.
        check_json(data)
        data_json = canonical_json(data).decode()
        return str(kind), session, checkpoint, data, data_json

    # -- reading ---------------------------------------------------------------------

    def query(self, *, session: str | None = None, kind: str | None = None,
              checkpoint: str | None = None, since: datetime | str | None = None,
              until: datetime | str | None = None, limit: int | None = None,
              newest_first: bool = False, after_seq: int | None = None) -> Iterator[Event]:
        """Yield events matching every given filter, in seq order (or newest first).

        ``since`` is inclusive and ``until`` exclusive. Every value is bound as a
        parameter; rows are read in batches so a million events never sit in memory.
        A time range first reads the ``ts`` index over the range to find the seqs it
        spans, so its cost grows with the events in the range, not with the log.

        :raises UsageError: for a bad time or limit.
        """
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("session", session), ("kind", kind), ("checkpoint", checkpoint)):
            if value is not None:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    # a stray byte from the command line, decoded as a surrogate
                    raise UsageError(f"the {column} filter {value!r} is not valid text; "
                                     f"pass a {column} as the log records it") from None
                where.append(f"{column} = ?")
                args.append(value)
        since_ts = None if since is None else _to_utc_iso(since, "since")
        until_ts = None if until is None else _to_utc_iso(until, "until")
        # "+ts" keeps the time bounds as filters only: ordering by seq over the ts index
        # would sort every match again for each page. _paged narrows by seq instead.
        if since_ts is not None:
            where.append("+ts >= ?")
            args.append(since_ts)
        if until_ts is not None:
            where.append("+ts < ?")
            args.append(until_ts)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise UsageError(f"limit must be a non-negative integer, got {limit!r}")
        if after_seq is not None and not isinstance(after_seq, int):
            raise UsageError(f"after_seq must be an integer, got {after_seq!r}")
        return self._paged(where, args, limit=limit, newest_first=newest_first,
                           after_seq=after_seq, since_ts=since_ts, until_ts=until_ts)

    def _seq_span(self, since_ts: str | None, until_ts: str | None) -> tuple[int, int] | None:
        """The lowest and highest seq with a ts in the range, or None if there is none.

        Exact even where ts goes backwards (a clock set back): it reads the covering
        ts index over the whole range rather than assuming ts grows with seq.
        """
        clauses, params = [], []
        if since_ts is not None:
            clauses.append("ts >= ?")
            params.append(since_ts)
        if until_ts is not None:
            clauses.append("ts < ?")
            params.append(until_ts)
        lo, hi = self._conn.execute(
            f"SELECT min(seq), max(seq) FROM events WHERE {' AND '.join(clauses)}", params).fetchone()
        return None if lo is None else (lo, hi)

    def _paged(self, where: list[str], args: list[Any], *, limit: int | None, newest_first: bool,
               after_seq: int | None, since_ts: str | None, until_ts: str | None) -> Iterator[Event]:
        # Every bound on seq is folded into one "seq > low" and one "seq < high": given
        # two lower bounds, SQLite may seek by the looser one and scan from there on
        # every page, which makes iterating a long result quadratic.
        low = after_seq
        high: int | None = None
        if since_ts is not None or until_ts is not None:
            with self._lock:
                self._check_open()
                try:
                    span = self._seq_span(since_ts, until_ts)
                except sqlite3.DatabaseError as err:
                    raise LogIntegrityError(f"cannot read log {self.path}: {err}") from err
            if span is None:
                return
            low = span[0] - 1 if low is None else max(low, span[0] - 1)
            if until_ts is not None:
                # Without an upper bound in time, events appended while iterating still count.
                high = span[1] + 1
        order = "DESC" if newest_first else "ASC"
        remaining = limit
        while remaining is None or remaining > 0:
            clauses = list(where)
            params = list(args)
            if low is not None:
                clauses.append("seq > ?")
                params.append(low)
            if high is not None:
                clauses.append("seq < ?")
                params.append(high)
            batch = _BATCH if remaining is None else min(_BATCH, remaining)
            sql = f"SELECT {_COLUMNS} FROM events"
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            sql += f" ORDER BY seq {order} LIMIT {batch}"
            with self._lock:
                self._check_open()
                try:
                    rows = self._conn.execute(sql, params).fetchall()
                except sqlite3.DatabaseError as err:
                    raise LogIntegrityError(f"cannot read log {self.path}: {err}") from err
            for row in rows:
                try:
                    yield _row_to_event(row)
                except orjson.JSONDecodeError as err:
                    raise LogIntegrityError(f"event {row[0]} in {self.path} has corrupt data; "
                                            "run installengine verify",
                                            first_bad_seq=row[0]) from err
            if len(rows) < batch:
                return
            if newest_first:
                high = rows[-1][0]
            else:
                low = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def get(self, seq: int) -> Event | None:
        """The event at ``seq``, or None.

        :raises UsageError: when the log is closed.
        :raises LogIntegrityError: when the file cannot be read or the event's data is corrupt.
        """
        with self._lock:
            self._check_open()
            try:
                row = self._conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?",
                                         (seq,)).fetchone()
            except sqlite3.DatabaseError as err:
                raise LogIntegrityError(f"cannot read event {seq} of log {self.path}: {err}; "
                                        "run installengine verify") from err
        if row is None:
            return None
        try:
            return _row_to_event(row)
        except orjson.JSONDecodeError as err:
            raise LogIntegrityError(f"event {seq} in {self.path} has corrupt data; run "
                                    "installengine verify", first_bad_seq=seq) from err

    def verify(self) -> VerifyReport:
        """Recompute the hash chain and compare its end with the recorded head.

        Every row is checked, including any numbered before 1, and columns are read
        as the bytes they hold, so a byte that is not UTF-8 is reported at its event
        instead of making the file unreadable.

        :raises UsageError: when the log is closed.
        """
        def rows() -> Iterator[StoredRow]:
            last: int | None = None
            while True:
                with self._lock, self._lenient_text():
                    if last is None:
                        batch = self._conn.execute(
                            f"SELECT {_COLUMNS} FROM events ORDER BY seq LIMIT ?", (_BATCH,)
                        ).fetchall()
                    else:
                        batch = self._conn.execute(
                            f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                            (last, _BATCH)).fetchall()
                for r in batch:
                    yield StoredRow(*r)
                if len(batch) < _BATCH:
                    return
                last = batch[-1][0]

        try:
            report = check_chain(rows())
            with self._lock, self._lenient_text():
                # One read transaction, so that an append by another connection between
                # these reads cannot look like a removed or added event.
                self._conn.execute("BEGIN")
                try:
                    meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
                    # Rows numbered below 1 are outside the chain, so never its end.
                    last = self._conn.execute(
                        "SELECT seq, hash FROM events WHERE seq > 0 ORDER BY seq DESC LIMIT 1"
                    ).fetchone()
                    invalid = self._conn.execute(
                        "SELECT seq FROM events WHERE json_valid(data) = 0 ORDER BY seq LIMIT 1"
                    ).fetchone()
                finally:
                    self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            return VerifyReport(False, None, f"the log file cannot be read: {err}")
        report = check_head(report, recorded_seq=str(meta.get("head_seq", "0")),
                            recorded_hash=meta.get("head_hash"),
                            last=(last[0], last[1]) if last else None)
        if not report.ok:
            return report
        if invalid:
            return VerifyReport(False, invalid[0], f"event {invalid[0]} holds invalid JSON",
                                report.events)
        damage = self._storage_damage()
        if damage is not None:
            return VerifyReport(False, None, damage, report.events)
        return report

    def _storage_damage(self) -> str | None:
        """What SQLite's integrity check finds outside the rows the chain covers, if anything.

        The chain proves the rows; a damaged index page can still make a filtered
        query skip events (and the rules read the log through such queries), so
        an intact chain over a damaged file is no verified log.
        """
        try:
            with self._lock:
                found = [str(r[0]) for r in self._conn.execute("PRAGMA integrity_check(5)")]
        except sqlite3.DatabaseError as err:
            return f"the log file cannot be read: {err}"
        if found == ["ok"]:
            return None
        hint = ("rebuild them with: sqlite3 " + str(self.path) + " REINDEX"
                if all("index" in line for line in found)
                else "restore the log from a backup")
        return (f"the log file is damaged outside the events' rows (SQLite integrity check: "
                f"{found[0]}); the events verify, but a query may miss some: {hint}")

    @contextmanager
    def _lenient_text(self) -> Iterator[None]:
        """Read TEXT columns as they are stored, bad bytes as surrogates; call under the lock."""
        self._check_open()
        self._conn.text_factory = _lenient_text
        try:
            yield
        finally:
            self._conn.text_factory = str

    # -- copying and closing ------------------------------------------------------------

    def copy_to(self, dest: str | os.PathLike[str]) -> None:
        """Copy the whole log, seq and hashes included, into a new file at ``dest``.

        :raises UsageError: when ``dest`` already exists.
        """
        d = Path(dest)
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: never write into a file that is there, even one created just now.
            os.close(os.open(d, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError as err:
            raise UsageError(f"cannot copy the log to {d}: a file is already there; "
                             "choose a new path or remove it") from err
        target = sqlite3.connect(d)
        try:
            with self._lock:
                self._conn.backup(target)
            target.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as err:
            raise LogWriteError(f"cannot copy the log to {d}: {err}") from err
        finally:
            target.close()
        with d.open("rb") as f:
            os.fsync(f.fileno())
        _fsync_dir(d.parent)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"log {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventLog.open({str(self.path)!r}, readonly={self.readonly!r})"


def _fsync_dir(path: Path) -> None:
    """fsync a directory: a new or renamed file is durable only once its entry is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
