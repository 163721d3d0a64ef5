"""Tickets and their results on disk, so a restarted gateway keeps its word.

`Submit` promises a result that `GetResult` can fetch until RESULT_TTL runs
out, even across a gateway restart. Replies still in flight wait in the
durable reply queue, but the gateway must also remember which tickets it
issued (or it would answer NOT_FOUND for them) and the results it had already
taken off the queue. SQLite in WAL mode with synchronous=NORMAL survives a
killed process (not a power cut) at a cost of tens of microseconds per write,
and only Submit pays it. https://www.sqlite.org/wal.html
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    request_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,   -- epoch seconds
    result     BLOB             -- a serialized CalculationResult, once it came
)
"""


@dataclass(frozen=True)
class Ticket:
    request_id: str
    expires_at: float
    result: bytes | None


class TicketStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self.path = path

    def issued(self, request_id: str, expires_at: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO tickets (request_id, expires_at) VALUES (?, ?)", (request_id, expires_at)
        )

    def resolved(self, request_id: str, result: bytes, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO tickets (request_id, expires_at, result) VALUES (?, ?, ?)"
            " ON CONFLICT (request_id) DO UPDATE SET result = excluded.result, expires_at = excluded.expires_at",
            (request_id, expires_at, result),
        )

    def discard(self, request_id: str) -> None:
        self._db.execute("DELETE FROM tickets WHERE request_id = ?", (request_id,))

    def live(self) -> list[Ticket]:
        """Every ticket not yet expired; expired ones are deleted on the way."""
        now = time.time()
        self._db.execute("DELETE FROM tickets WHERE expires_at <= ?", (now,))
        rows = self._db.execute("SELECT request_id, expires_at, result FROM tickets").fetchall()
        return [Ticket(request_id, expires_at, result) for request_id, expires_at, result in rows]

    def purge(self) -> int:
        return self._db.execute("DELETE FROM tickets WHERE expires_at <= ?", (time.time(),)).rowcount

    def close(self) -> None:
        self._db.close()
