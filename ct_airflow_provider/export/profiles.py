"""Keep each profile once, however many events it did, without holding the export in memory."""

from __future__ import annotations

import sqlite3
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
    """A disk-backed set of profiles (SQLite in the export's work folder), first record kept.

    Memory stays bounded whatever the number of profiles: SQLite pages to disk.

    :param path: the database file, created fresh.
    """

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE profiles (seq INTEGER PRIMARY KEY, key TEXT UNIQUE, record BLOB)")
        self.seen = 0
        self.without_key = 0

    def add_pages(self, pages: Iterable[list[dict[str, Any]]]) -> None:
        """Add every profile of every page; a profile already present is not added again."""
        rows: list[tuple[str, bytes]] = []
        for page in pages:
            for profile in page:
                self.seen += 1
                key = profile_key(profile)
                if key is None:
                    # Nothing identifies it, so it cannot be a duplicate of anything: keep it.
                    self.without_key += 1
                    key = f"anonymous:{self.seen}"
                rows.append((key, orjson.dumps(profile)))
            if len(rows) >= _BATCH:
                self._flush(rows)
        self._flush(rows)

    def _flush(self, rows: list[tuple[str, bytes]]) -> None:
        if rows:
            self._db.executemany("INSERT OR IGNORE INTO profiles (key, record) VALUES (?, ?)", rows)
            self._db.commit()
            rows.clear()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def pages(self, size: int = _BATCH) -> Iterator[list[dict[str, Any]]]:
        """The unique profiles, in the order first seen, a page at a time."""
        cursor = self._db.execute("SELECT record FROM profiles ORDER BY seq")
        while rows := cursor.fetchmany(size):
            yield [orjson.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
