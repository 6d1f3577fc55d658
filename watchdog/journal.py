"""The journal: a SQLite file in `state_dir` that remembers incidents, their history, the query cursor and
the notification outbox across restarts.

Who calls it: recovery (incidents, cursor), notify.outbox (outbox rows), the CLI (`history`).
It is an aid, never the only record of "already handled": ClearML's tags and parent links are.
Deleting the file loses history and undelivered alerts, never causes a second clone.

Every state change is a conditional UPDATE plus a row in `incident_log` saying why. The schema carries a
version (`PRAGMA user_version`); older files are migrated forward on open, newer ones are refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from watchdog.errors import StateError

JOURNAL_FILENAME = "journal.sqlite3"

# Each entry migrates from version i to i+1. Append only; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,            -- one per loss or report-only ending
        task_id TEXT NOT NULL,
        task_name TEXT NOT NULL DEFAULT '',
        root_id TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        explanation TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        state TEXT NOT NULL,            -- open | requeued | recovered | gave_up | reported
        attempt INTEGER,
        queue_id TEXT NOT NULL DEFAULT '',
        clone_id TEXT NOT NULL DEFAULT '',
        checkpoint_uri TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',  -- JSON: what notifications need
        detected_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        closed_at TEXT
    );
    CREATE INDEX incidents_by_task ON incidents(task_id);
    CREATE INDEX incidents_open ON incidents(state) WHERE closed_at IS NULL;
    CREATE TABLE incident_log (
        incident_id TEXT NOT NULL,
        at TEXT NOT NULL,
        state TEXT NOT NULL,
        note TEXT NOT NULL
    );
    CREATE INDEX incident_log_by_incident ON incident_log(incident_id);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE outbox (
        key TEXT PRIMARY KEY,           -- <incident id>:<event>:<channel>: the idempotency key
        channel TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,          -- JSON of the Notice
        created_at TEXT NOT NULL,
        state TEXT NOT NULL,            -- pending | sent | expired | dead
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        sent_at TEXT,
        remote_ref TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE TABLE threads (
        incident_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        remote_ref TEXT NOT NULL,       -- Slack ts / Telegram message_id of the incident's first message
        PRIMARY KEY (incident_id, channel)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


@dataclass(frozen=True)
class IncidentRow:
    """An incident as the journal holds it."""

    id: str
    task_id: str
    task_name: str
    root_id: str
    reason: str
    explanation: str
    action: str
    state: str
    attempt: int | None
    queue_id: str
    clone_id: str
    checkpoint_uri: str
    detail: dict[str, Any]
    detected_at: str
    updated_at: str
    closed_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> IncidentRow:
        values = dict(row)
        values["detail"] = json.loads(values["detail"] or "{}")
        return cls(**values)


class Journal:
    """One SQLite connection shared by the scheduler's threads behind a lock (writes are small and rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        except (OSError, sqlite3.Error) as error:
            raise StateError(f"cannot open the journal at {path}: {error}") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        try:
            self._refuse_newer()  # before WAL: switching the journal mode rewrites the file's header
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StateError(f"the journal at {path} is not usable: {error}") from None

    @classmethod
    def open_in(cls, state_dir: Path) -> Journal:
        return cls(state_dir / JOURNAL_FILENAME)

    def _refuse_newer(self) -> None:
        """A file written by a newer watchdog is refused before anything writes to it (not even WAL mode)."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self._db.close()
            raise StateError(
                f"the journal at {self.path} has schema version {version}, newer than this watchdog "
                f"understands ({SCHEMA_VERSION}): upgrade clearml-spot-watchdog, or move the file aside"
            )

    def _migrate(self) -> None:
        self._refuse_newer()
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as db:
                db.executescript_in_tx(MIGRATIONS[target - 1])
                db.execute(f"PRAGMA user_version = {target}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """BEGIN IMMEDIATE ... COMMIT, serialised across threads; rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- key/value (the query cursor) -------------------------------------------------------------

    def get_value(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_value(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- incidents ---------------------------------------------------------------------------------

    def get_incident(self, incident_id: str) -> IncidentRow | None:
        rows = self.query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return IncidentRow.from_row(rows[0]) if rows else None

    def open_incident(
        self,
        *,
        incident_id: str,
        task_id: str,
        task_name: str,
        root_id: str,
        reason: str,
        explanation: str,
        action: str,
        state: str,
        attempt: int | None,
        detail: dict[str, Any],
        now: datetime,
        note: str,
    ) -> bool:
        """Record a new incident. False (and no change) if it is already recorded."""
        with self.transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO incidents(id, task_id, task_name, root_id, reason, explanation, action,"
                " state, attempt, detail, detected_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    task_id,
                    task_name,
                    root_id,
                    reason,
                    explanation,
                    action,
                    state,
                    attempt,
                    json.dumps(detail, default=str),
                    _iso(now),
                    _iso(now),
                ),
            )
            if inserted:
                db.log(incident_id, now, state, note)
            return inserted > 0

    def update_incident(
        self, incident_id: str, *, state: str, now: datetime, note: str, closed: bool = False, **fields: Any
    ) -> bool:
        """Move an incident to `state` (and set any of queue_id/clone_id/checkpoint_uri/action/detail)."""
        allowed = {"queue_id", "clone_id", "checkpoint_uri", "action", "detail", "attempt", "explanation"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not incident fields: {sorted(unknown)}")
        assignments = ["state = ?", "updated_at = ?"]
        values: list[Any] = [state, _iso(now)]
        for name, value in fields.items():
            assignments.append(f"{name} = ?")
            values.append(json.dumps(value, default=str) if name == "detail" else value)
        if closed:
            assignments.append("closed_at = ?")
            values.append(_iso(now))
        with self.transaction() as db:
            changed = db.execute(f"UPDATE incidents SET {', '.join(assignments)} WHERE id = ?", (*values, incident_id))
            if changed:
                db.log(incident_id, now, state, note)
            return changed > 0

    def open_incidents(self) -> list[IncidentRow]:
        rows = self.query("SELECT * FROM incidents WHERE closed_at IS NULL ORDER BY detected_at")
        return [IncidentRow.from_row(r) for r in rows]

    def recent_incidents(self, limit: int = 50) -> list[IncidentRow]:
        rows = self.query("SELECT * FROM incidents ORDER BY detected_at DESC LIMIT ?", (limit,))
        return [IncidentRow.from_row(r) for r in rows]

    def incident_log(self, incident_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM incident_log WHERE incident_id = ? ORDER BY rowid", (incident_id,))

    def prune(self, older_than: datetime) -> int:
        """Drop closed incidents, their logs and finished outbox rows older than `older_than`."""
        cutoff = _iso(older_than)
        with self.transaction() as db:
            removed = db.execute("DELETE FROM incidents WHERE closed_at IS NOT NULL AND closed_at < ?", (cutoff,))
            db.execute("DELETE FROM incident_log WHERE incident_id NOT IN (SELECT id FROM incidents)")
            db.execute("DELETE FROM outbox WHERE state != 'pending' AND created_at < ?", (cutoff,))
            db.execute(
                "DELETE FROM threads WHERE incident_id NOT IN (SELECT id FROM incidents)"
                " AND incident_id NOT IN (SELECT incident_id FROM outbox)"
            )
            return removed


class _Tx:
    """The cursor handed out inside `Journal.transaction()`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return self._db.execute(sql, params).rowcount

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return list(self._db.execute(sql, params).fetchall())

    def executescript_in_tx(self, script: str) -> None:
        # executescript() would COMMIT first; run statement by statement to stay in the transaction.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def log(self, incident_id: str, now: datetime, state: str, note: str) -> None:
        self._db.execute(
            "INSERT INTO incident_log(incident_id, at, state, note) VALUES(?,?,?,?)",
            (incident_id, _iso(now), state, note),
        )
