"""Compare what an export wrote with CleverTap's own counts of the same events and days.

CleverTap's counts API gives the number of events of one name over whole days (account time zone).
An export that wrote fewer records than CleverTap counts lost some (a cursor that ended early, a
dropped page) or ran before late events arrived (offline devices upload after the day ended); one
that wrote more duplicated some. Either way the numbers say which event and day to look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

#: ``fail``: a mismatch fails the export (no manifest); ``warn``: the manifest says ``"reconciled":
#: false`` and the log warns; ``off``: CleverTap's counts are not asked.
RECONCILE_MODES = ("fail", "warn", "off")


class ReconciliationError(RuntimeError):
    """The records exported differ from CleverTap's counts; the message names each event and day."""


class CountSource(Protocol):
    """CleverTap's counts (the CleverTap hook)."""

    def count_events(self, event_name: str, from_date: dt.date, to_date: dt.date) -> int: ...


def check_reconcile_mode(mode: object) -> str:
    """Return ``mode`` if it is one of :data:`RECONCILE_MODES`, else raise a ``ValueError`` saying so."""
    if mode not in RECONCILE_MODES:
        raise ValueError(f"reconcile={mode!r}: choose one of {', '.join(map(repr, RECONCILE_MODES))}.")
    return str(mode)


@dataclass(frozen=True)
class DayCount:
    """One event on one day: records exported and events CleverTap counts."""

    exported: int
    clevertap: int

    def describe(self) -> str:
        if self.exported < self.clevertap:
            return f"exported {self.exported}, CleverTap counts {self.clevertap} (short by {self.clevertap - self.exported})"
        return (
            f"exported {self.exported}, CleverTap counts {self.clevertap} "
            f"({self.exported - self.clevertap} more than CleverTap counts)"
        )


@dataclass
class Reconciliation:
    """Per event and day (``yyyymmdd``), what was exported and what CleverTap counts."""

    counts: dict[str, dict[str, DayCount]] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return not self.mismatches()

    def mismatches(self) -> list[tuple[str, str, DayCount]]:
        return [
            (event, day, count)
            for event, days in sorted(self.counts.items())
            for day, count in sorted(days.items())
            if count.exported != count.clevertap
        ]

    def describe_mismatches(self) -> str:
        return "; ".join(f"{event!r} on {day}: {count.describe()}" for event, day, count in self.mismatches())

    @classmethod
    def from_manifest(cls, data: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Reconciliation:
        """The reconciliation :meth:`as_manifest` describes."""
        return cls(
            {
                event: {day: DayCount(int(c["exported"]), int(c["clevertap"])) for day, c in days.items()}
                for event, days in data.items()
            }
        )

    def as_manifest(self) -> dict[str, dict[str, dict[str, int]]]:
        return {
            event: {
                day: {"exported": c.exported, "clevertap": c.clevertap} for day, c in sorted(days.items())
            }
            for event, days in sorted(self.counts.items())
        }


def reconcile(
    source: CountSource,
    exported: Mapping[str, Mapping[str, int]],
    event_names: Iterable[str],
    days: Sequence[dt.date],
    *,
    concurrent_requests: int = 1,
) -> Reconciliation:
    """Ask CleverTap's count of each event on each day and set it beside the records exported.

    :param source: the CleverTap hook.
    :param exported: records written, by event and ``yyyymmdd`` day (days without records may be absent).
    :param event_names: the events exported (not those skipped).
    :param days: the days exported, in the account's time zone.
    :param concurrent_requests: counts requests in flight at once (they share CleverTap's budget).
    """
    pairs = [(event, day) for event in event_names for day in days]

    def count(pair: tuple[str, dt.date]) -> int:
        return source.count_events(pair[0], pair[1], pair[1])

    with ThreadPoolExecutor(
        max_workers=max(1, concurrent_requests), thread_name_prefix="clevertap-count"
    ) as pool:
        clevertap = list(pool.map(count, pairs))
    result = Reconciliation()
    for (event, day), counted in zip(pairs, clevertap, strict=True):
        key = day.strftime("%Y%m%d")
        result.counts.setdefault(event, {})[key] = DayCount(int(exported.get(event, {}).get(key, 0)), counted)
    return result


def summary(reconciliation: Reconciliation | None) -> dict[str, Any]:
    """The manifest's fields: ``reconciliation`` by event and day, and ``reconciled`` (``None``: not checked)."""
    if reconciliation is None:
        return {"reconciliation": None, "reconciled": None}
    return {"reconciliation": reconciliation.as_manifest(), "reconciled": reconciliation.reconciled}


class DayNotCoveredError(RuntimeError):
    """The windows exported so far do not cover the whole day: a window is missing or not complete yet."""


def day_ts_bounds(day: dt.date) -> tuple[int, int]:
    """The ``ts`` range of a whole day, ``[day 00:00:00, next day 00:00:00)``."""
    following = day + dt.timedelta(days=1)
    return int(f"{day:%Y%m%d}000000"), int(f"{following:%Y%m%d}000000")


def exported_on_day(manifests: Iterable[Mapping[str, Any]], day: dt.date) -> tuple[dict[str, int], list[str]]:
    """Records per event on ``day`` written by the recurring windows' ``manifests``, and the windows used.

    :raises DayNotCoveredError: the complete windows do not cover the day without a gap (the message
        names the first gap).
    """
    first, last = day_ts_bounds(day)
    windows = sorted(
        (m["window_ts"]["start"], m["window_ts"]["end"], m)
        for m in manifests
        if m.get("status") == "complete" and m.get("window_ts")
        and m["window_ts"]["start"] < last and m["window_ts"]["end"] > first
    )  # fmt: skip
    covered = first
    for start, end, _ in windows:
        if start > covered:
            break
        covered = max(covered, end)
    if covered < last:
        raise DayNotCoveredError(
            f"The complete windows exported so far cover {day} only up to ts {covered} (the day ends at {last}): "
            "a window of the day is missing or not finished. Run this check after the day's last window "
            "(or backfill the missing window)."
        )
    records: dict[str, int] = {}
    key = f"{day:%Y%m%d}"
    for _, _, manifest in windows:
        for file in manifest["files"]:
            if file["day"] == key:
                records[file["event_name"]] = records.get(file["event_name"], 0) + int(file["records"])
    return records, [str(m["request_id"]) + "-" + str(m["run_timestamp"]) for _, _, m in windows]
