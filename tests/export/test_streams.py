"""Reading streams side by side: every page once, in order per stream, each group to its own writer."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ct_airflow_provider.export.streams import StreamGroup, read_side_by_side

Page = list[dict[str, Any]]


class Refused(Exception):
    """What a source raises for a group the export skips (an event CleverTap refuses)."""


def _stream(name: str, pages: int, started: list[str] | None = None) -> Callable[[], Iterator[Page]]:
    def pages_of_stream() -> Iterator[Page]:
        if started is not None:
            started.append(name)
        for index in range(pages):
            yield [{"stream": name, "page": index}]

    return pages_of_stream


def _collect(group: StreamGroup, pages: Iterator[Page]) -> list[dict[str, Any]]:
    return [page[0] for page in pages]


def test_every_page_reaches_its_group_once_and_in_order_within_its_stream() -> None:
    groups = [
        StreamGroup(f"event{event}", [_stream(f"e{event}d{day}", pages=day + 1) for day in range(4)])
        for event in range(3)
    ]
    results = read_side_by_side(groups, _collect, concurrency=3)
    for event, seen in enumerate(results):
        assert isinstance(seen, list)
        assert len(seen) == 1 + 2 + 3 + 4
        for day in range(4):
            assert [p["page"] for p in seen if p["stream"] == f"e{event}d{day}"] == list(range(day + 1))


def test_streams_of_different_events_and_of_one_event_are_read_at_the_same_time() -> None:
    # Each stream's first page waits until three streams are running: only side-by-side reading passes,
    # here with two streams of one event and one of another.
    three_running = threading.Barrier(3, timeout=10)

    def stream(name: str) -> Callable[[], Iterator[Page]]:
        def pages() -> Iterator[Page]:
            three_running.wait()
            yield [{"stream": name, "page": 0}]

        return pages

    groups = [StreamGroup("a", [stream("a1"), stream("a2")]), StreamGroup("b", [stream("b1")])]
    results = read_side_by_side(groups, _collect, concurrency=3)
    assert [sorted(p["stream"] for p in seen) for seen in results] == [["a1", "a2"], ["b1"]]  # type: ignore[union-attr]


def test_never_more_streams_at_once_than_the_concurrency() -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def stream() -> Iterator[Page]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        yield [{"stream": "s", "page": 0}]

    groups = [StreamGroup(f"e{event}", [stream] * 5) for event in range(4)]
    read_side_by_side(groups, _collect, concurrency=2)
    assert most[0] == 2


def test_one_at_a_time_reads_the_streams_in_order() -> None:
    started: list[str] = []
    groups = [
        StreamGroup("a", [_stream("a1", 2, started), _stream("a2", 1, started)]),
        StreamGroup("b", [_stream("b1", 1, started)]),
    ]
    results = read_side_by_side(groups, _collect, concurrency=1)
    assert started == ["a1", "a2", "b1"]
    assert [[p["stream"] for p in seen] for seen in results] == [["a1", "a1", "a2"], ["b1"]]  # type: ignore[union-attr]


def test_a_refused_group_is_skipped_and_the_others_are_complete() -> None:
    def refused() -> Iterator[Page]:
        raise Refused("not allowed")
        yield []  # pragma: no cover

    groups = [
        StreamGroup("a", [_stream("a1", 3), refused, _stream("a3", 30)]),
        StreamGroup("b", [_stream("b1", 5)]),
    ]
    results = read_side_by_side(groups, _collect, concurrency=2, skippable=(Refused,))
    assert isinstance(results[0], Refused)
    assert [p["page"] for p in results[1]] == list(range(5))  # type: ignore[union-attr]


def test_any_other_error_stops_every_stream_and_writer_and_is_raised() -> None:
    writers_stopped: list[str] = []

    def failing() -> Iterator[Page]:
        yield [{"stream": "f", "page": 0}]
        raise ConnectionError("CleverTap went away")

    def endless() -> Iterator[Page]:
        while True:
            yield [{"stream": "endless", "page": 0}]

    def consume(group: StreamGroup, pages: Iterator[Page]) -> None:
        try:
            for _ in pages:
                pass
        finally:
            writers_stopped.append(group.name)

    groups = [StreamGroup("endless", [endless]), StreamGroup("failing", [failing])]
    with pytest.raises(ConnectionError, match="went away"):
        read_side_by_side(groups, consume, concurrency=2)
    assert sorted(writers_stopped) == ["endless", "failing"]
    time.sleep(0.5)  # a reader blocked on its group's queue notices the stop within a poll
    assert not [
        t for t in threading.enumerate() if t.name.startswith(("clevertap-read-", "ct-export-writer"))
    ]


def test_a_writer_s_error_stops_the_export_too() -> None:
    def consume(group: StreamGroup, pages: Iterator[Page]) -> None:
        next(pages)
        raise ValueError("a record cannot be written")

    with pytest.raises(ValueError, match="cannot be written"):
        read_side_by_side([StreamGroup("a", [_stream("a1", 1000)])], consume, concurrency=1)


def test_a_group_without_streams_still_gets_its_writer() -> None:
    results = read_side_by_side(
        [StreamGroup("empty", []), StreamGroup("b", [_stream("b1", 1)])], _collect, concurrency=3
    )
    assert results[0] == []


def test_a_group_s_first_pages_arrive_in_its_streams_order_even_when_a_later_one_is_ready_first() -> None:
    # Day 0's first page is slow, days 1 and 2 answer at once: the writer still meets day 0 first,
    # so that it learns the keys of its days in the days' order (CSV's columns follow it); later
    # pages come as they are ready. A stream without pages waits its turn too.
    def stream(name: str, pages: int, delay: float) -> Callable[[], Iterator[Page]]:
        def read() -> Iterator[Page]:
            time.sleep(delay)
            for index in range(pages):
                yield [{"stream": name, "page": index}]

        return read

    groups = [
        StreamGroup(
            "e", [stream("d0", 2, 0.3), stream("empty", 0, 0), stream("d1", 3, 0), stream("d2", 3, 0)]
        )
    ]
    (seen,) = read_side_by_side(groups, _collect, concurrency=3)
    assert isinstance(seen, list)
    firsts = [page["stream"] for page in seen if page["page"] == 0]
    assert firsts == ["d0", "d1", "d2"]
    assert sorted((page["stream"], page["page"]) for page in seen) == sorted(
        [("d0", 0), ("d0", 1)] + [(day, index) for day in ("d1", "d2") for index in range(3)]
    )


def test_a_stream_that_waits_holds_only_its_own_reader() -> None:
    # The first stream is told "not ready" until every other group is written: the other streams
    # are read and written meanwhile, on the other readers, instead of waiting behind it.
    others_written = threading.Event()
    written: list[str] = []
    lock = threading.Lock()

    def not_ready_until_the_others_are_done() -> Iterator[Page]:
        assert others_written.wait(10), "the other streams waited behind the one not ready"
        yield [{"stream": "slow", "page": 0}]

    def collect(group: StreamGroup, pages: Iterator[Page]) -> list[dict[str, Any]]:
        seen = _collect(group, pages)
        with lock:
            written.append(group.name)
            if {"a", "b"} <= set(written):
                others_written.set()
        return seen

    groups = [
        StreamGroup("slow", [not_ready_until_the_others_are_done]),
        StreamGroup("a", [_stream("a1", 2), _stream("a2", 2)]),
        StreamGroup("b", [_stream("b1", 3)]),
    ]
    results = read_side_by_side(groups, collect, concurrency=3)
    assert written == ["a", "b", "slow"] or written == ["b", "a", "slow"]
    assert [len(seen) for seen in results] == [1, 4, 3]  # type: ignore[arg-type]


def test_three_streams_of_one_event_hold_no_more_pages_than_one_stream() -> None:
    # CleverTap answers about as fast as the writer writes: asking for more pages would only fill
    # memory. One event's three streams then hold what one stream holds: the page being written,
    # one waiting for the writer, and one held or asked for.
    lock = threading.Lock()
    produced, written, most = [0], [0], [0]

    def stream() -> Iterator[Page]:
        for index in range(15):
            with lock:  # a page asked for
                produced[0] += 1
                most[0] = max(most[0], produced[0] - written[0])
            time.sleep(0.015)  # CleverTap answers, about as fast as the writer writes
            yield [{"stream": "s", "page": index}]

    def slow_writer(group: StreamGroup, pages: Iterator[Page]) -> int:
        count = 0
        for _page in pages:
            time.sleep(0.01)
            with lock:
                written[0] += 1  # the page is written: the writer lets it go
            count += 1
        return count

    (count,) = read_side_by_side([StreamGroup("e", [stream, stream, stream])], slow_writer, concurrency=3)
    assert count == 45
    assert most[0] <= 3


class _TrackedPage(list[dict[str, Any]]):
    """A page that can be watched with a weak reference (plain lists cannot)."""


def test_a_written_page_is_let_go_even_while_the_next_is_awaited() -> None:
    # The count above sees what the export means to hold; this one sees what memory holds. A page the
    # writer is done with must not stay referenced by the reader that fetched it (while it asks for
    # its next page) or by the writer's side (while it waits for its next page).
    lock = threading.Lock()
    alive, most = [0], [0]

    def let_go() -> None:
        with lock:
            alive[0] -= 1

    class Source:
        """Pages of one stream, keeping none once returned (as the CleverTap hook's iterator)."""

        def __init__(self) -> None:
            self.index = 0

        def __iter__(self) -> Source:
            return self

        def __next__(self) -> Page:
            if self.index == 15:
                raise StopIteration
            with lock:  # the pages in memory as one more is asked for
                most[0] = max(most[0], alive[0])
            time.sleep(0.015)
            page = _TrackedPage([{"stream": "s", "page": self.index}])
            self.index += 1
            with lock:
                alive[0] += 1
            weakref.finalize(page, let_go)
            return page

    def slow_writer(group: StreamGroup, pages: Iterator[Page]) -> int:
        count = 0
        for page in pages:
            time.sleep(0.01)
            count += len(page)
            del page  # written
        return count

    (count,) = read_side_by_side([StreamGroup("e", [Source, Source, Source])], slow_writer, concurrency=3)
    assert count == 45
    # One being written and one waiting (or held, or fetched and on its way): never a third.
    assert most[0] <= 2
