"""Reading CleverTap pages ahead: every page once, in order per source, several sources side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ct_airflow_provider.export.job import read_ahead

Page = list[dict[str, Any]]


def _source(name: str, pages: int, started: list[str] | None = None) -> Callable[[], Iterator[Page]]:
    def pages_of_source() -> Iterator[Page]:
        if started is not None:
            started.append(name)
        for index in range(pages):
            yield [{"source": name, "page": index}]

    return pages_of_source


def test_every_page_arrives_once_and_in_order_within_its_source() -> None:
    sources = [_source(f"day{day}", pages=day + 1) for day in range(7)]
    seen = [page[0] for page in read_ahead(sources, streams=3)]
    assert len(seen) == sum(range(1, 8))
    for day in range(7):
        assert [p["page"] for p in seen if p["source"] == f"day{day}"] == list(range(day + 1))


def test_several_sources_are_read_at_the_same_time() -> None:
    # Each source's first page waits until two sources are running: only side-by-side reading passes.
    both_running = threading.Barrier(2, timeout=10)

    def source(name: str) -> Callable[[], Iterator[Page]]:
        def pages() -> Iterator[Page]:
            both_running.wait()
            yield [{"source": name}]

        return pages

    seen = [page[0]["source"] for page in read_ahead([source("a"), source("b")], streams=2)]
    assert sorted(seen) == ["a", "b"]


def test_one_stream_reads_the_sources_one_after_another() -> None:
    started: list[str] = []
    order = [page[0]["source"] for page in read_ahead([_source("a", 3, started), _source("b", 2, started)])]
    assert order == ["a", "a", "a", "b", "b"]
    assert started == ["a", "b"]


def test_an_error_of_one_source_is_raised_to_the_reader_of_the_pages() -> None:
    def failing() -> Iterator[Page]:
        yield [{"ok": 1}]
        raise ConnectionError("CleverTap went away")

    with pytest.raises(ConnectionError, match="went away"):
        for _ in read_ahead([_source("a", 50), failing, _source("c", 50)], streams=2):
            pass


def test_stopping_early_stops_the_readers() -> None:
    endless_started = threading.Event()

    def endless() -> Iterator[Page]:
        endless_started.set()
        while True:
            yield [{"x": 1}]

    pages = read_ahead([endless], streams=1)
    assert next(pages) == [{"x": 1}]
    pages.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("clevertap-read-")]
