"""Keep each profile once, however many events it did, without holding the export in memory."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

_BATCH = 5000


def profile_key(profile: dict[str, Any]) -> str | None:
    """The identity CleverTap de-duplicates on: ``identity``, else the first ``objectId``."""
    identity = profile.get("identity")
    if identity not in (None, ""):
        return f"identity:{identity}"
    object_id = profile.get("objectId")
    if object_id in (None, ""):
        for platform in profile.get("platformInfo") or ():
            if isinstance(platform, dict) and platform.get("objectId"):
                object_id = platform["objectId"]
                break
    return None if object_id in (None, "") else f"objectId:{object_id}"


class ProfileDeduplicator:
    """A disk-backed set of profiles (SQLite in the export's work folder); thread-safe.

    Profiles come from several streams read side by side; which record of a profile is kept, and
    the order of the unique profiles, follow the streams' order (``source_rank``) and each
    stream's own order, never the order in which their pages happened to arrive. Memory stays
    bounded whatever the number of profiles: SQLite pages to disk.

    :param path: the database file, created fresh.
    """

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE profiles (key TEXT PRIMARY KEY, rank INTEGER, record BLOB)")
        self._lock = threading.Lock()
        self.seen = 0
        self.without_key = 0

    def add_pages(self, pages: Iterable[list[dict[str, Any]]], source_rank: int = 0) -> None:
        """Add every profile of every page of one stream; of two records of one profile, the one
        from the earlier stream (lower ``source_rank``), or earlier in the same stream, is kept.

        :param pages: the stream's pages.
        :param source_rank: the stream's place among the export's streams.
        """
        rows: list[tuple[str, int, bytes]] = []
        position = source_rank << 32
        for page in pages:
            for profile in page:
                position += 1
                key = profile_key(profile)
                if key is None:
                    # Nothing identifies it, so it cannot be a duplicate of anything: keep it.
                    key = f"anonymous:{position}"
                    with self._lock:
                        self.without_key += 1
                rows.append((key, position, orjson.dumps(profile)))
            if len(rows) >= _BATCH:
                self._flush(rows)
        self._flush(rows)

    def _flush(self, rows: list[tuple[str, int, bytes]]) -> None:
        if rows:
            with self._lock:
                self.seen += len(rows)
                self._db.executemany(
                    "INSERT INTO profiles (key, rank, record) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                    "SET rank = excluded.rank, record = excluded.record WHERE excluded.rank < profiles.rank",
                    rows,
                )
                self._db.commit()
            rows.clear()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def pages(self, size: int = _BATCH) -> Iterator[list[dict[str, Any]]]:
        """The unique profiles, in the streams' order, a page at a time."""
        cursor = self._db.execute("SELECT record FROM profiles ORDER BY rank")
        while rows := cursor.fetchmany(size):
            yield [orjson.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
