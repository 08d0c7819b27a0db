"""Read many streams of pages side by side and hand each group's pages to its own consumer.

An export reads one stream per event and day (each one CleverTap query, paged by its cursor). Up to
``concurrency`` streams are read at once, whatever the mix of events and days, so CleverTap prepares
pages for several of them while the export writes others; each event's pages go to that event's
writer, which runs in its own thread. A stream waiting on CleverTap ("not ready", 429) only holds
its own reader.

A group keeps at most three pages in memory or on their way, as a single stream does: the one its
writer is writing, one waiting for it, one held or asked for. While the writer waits for pages
(CleverTap is what the export waits for), that is three requests in flight; while it writes, more
pages would only fill memory.

A group's streams hand over their first pages in their order (the later ones wait, holding that
page, until the one before has handed over its first): a writer then meets most keys of its days
in the days' order, which is the order CSV's columns follow (a key first seen after a day's first
page may still arrive out of order; the CSV writer reorders its rows then, slower but the same).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Page = list[dict[str, Any]]
R = TypeVar("R")

#: Seconds a blocked reader or writer waits before it looks again whether the export stopped.
_POLL_SECONDS = 0.2
#: Pages of a group being written, waiting, held or asked for: what one stream keeps.
_PAGES_PER_GROUP = 3


class _Stopped(Exception):
    """The export stopped because another stream or writer failed; never escapes this module."""


@dataclass
class StreamGroup:
    """The streams of one consumer (the days of one event).

    :param name: the group's name (the event name).
    :param streams: callables that each start one page iterator (called in a reader thread).
    """

    name: str
    streams: Sequence[Callable[[], Iterable[Page]]]


@dataclass
class _GroupState(Generic[R]):
    group: StreamGroup
    pages: queue.Queue[tuple[str, Any]] = field(default_factory=lambda: queue.Queue(maxsize=1))
    # Per stream: set once it handed over its first page (or ended without one).
    started: list[threading.Event] = field(default_factory=list)
    # Readers holding a page the queue has no room for, readers asking CleverTap for a page, whether
    # the writer is writing a page, and the condition under which any of them changes.
    holding: int = 0
    asking: int = 0
    writing: bool = False
    caught_up: threading.Condition = field(default_factory=threading.Condition)
    remaining: int = 0
    skipped: BaseException | None = None
    result: R | None = None
    error: BaseException | None = None
    writer: threading.Thread | None = None


def read_side_by_side(
    groups: Sequence[StreamGroup],
    consume: Callable[[StreamGroup, Iterator[Page]], R],
    *,
    concurrency: int,
    skippable: tuple[type[Exception], ...] = (),
) -> list[R | Exception]:
    """Read the streams of ``groups``, ``concurrency`` at a time, and consume each group's pages.

    Streams are started in order (the first group's, then the next group's); a group's consumer is
    started with its first stream and gets the pages of all its streams, those of one stream in their
    order. A ``skippable`` error from a stream or a consumer ends that group only: its other streams
    are not read and its consumer sees the error raised where its next page would have been. Any
    other error stops every stream and consumer and is raised here.

    :param groups: the groups and their streams.
    :param consume: called once per group in a thread of its own, with the group's pages; its
        return value is the group's result.
    :param concurrency: how many streams are read at once.
    :param skippable: errors that end one group rather than everything.
    :returns: per group, in order, the consumer's result or the skippable error that ended it.
    """
    states: list[_GroupState[R]] = [
        _GroupState(group, remaining=len(group.streams), started=[threading.Event() for _ in group.streams])
        for group in groups
    ]
    work = iter(
        [(state, index, stream) for state in states for index, stream in enumerate(state.group.streams)]
    )
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def fail(error: BaseException) -> None:
        with lock:
            failures.append(error)
        stop.set()

    def put(state: _GroupState[R], item: tuple[str, Any], *, asked: bool = False) -> bool:
        """Queue an item for the group's consumer; False once the export or the group stopped.

        :param asked: the item is a page counted as asked for (see :func:`next_page`) until now.
        """
        try:
            state.pages.put_nowait(item)
        except queue.Full:
            pass
        else:
            if asked:
                done_asking(state)  # wakes the writer too
            else:
                with state.caught_up:
                    state.caught_up.notify_all()
            return True
        with state.caught_up:
            state.holding += 1
            if asked:
                state.asking -= 1
        try:
            while not stop.is_set() and state.error is None:
                try:
                    state.pages.put(item, timeout=_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            with state.caught_up:
                state.holding -= 1
                state.caught_up.notify_all()

    def may_ask(state: _GroupState[R]) -> bool:
        pages = state.writing + state.pages.qsize() + state.holding + state.asking
        return pages < _PAGES_PER_GROUP

    def next_page(state: _GroupState[R], pages: Iterator[Page]) -> Page | None:
        """The stream's next page (``None`` at its end), asked for once the group's writer allows.

        A page returned stays counted as asked for until :func:`put` hands it over.
        """
        with state.caught_up:
            while not may_ask(state) and not stop.is_set() and state.error is None:
                state.caught_up.wait(_POLL_SECONDS)
            state.asking += 1
        try:
            page = next(pages, None)
        except BaseException:
            done_asking(state)
            raise
        if page is None:
            done_asking(state)
        return page

    def done_asking(state: _GroupState[R]) -> None:
        with state.caught_up:
            state.asking -= 1
            state.caught_up.notify_all()

    def write(state: _GroupState[R]) -> None:
        def pages() -> Iterator[Page]:
            while True:
                with state.caught_up:
                    if state.writing:  # the page is written: readers waiting for the writer may ask again
                        state.writing = False
                        state.caught_up.notify_all()
                    # Taken from the queue and counted as being written at once, under the lock readers
                    # count under: no reader sees a page in neither place and asks for one too many.
                    while True:
                        try:
                            kind, item = state.pages.get_nowait()
                            break
                        except queue.Empty:
                            if stop.is_set():
                                raise _Stopped() from None
                            state.caught_up.wait(_POLL_SECONDS)
                    state.writing = kind == "page"
                    state.caught_up.notify_all()  # room in the queue
                if kind == "page":
                    yield item
                    del item  # written: held by nothing here while the writer waits for the next
                elif kind == "error":
                    raise item
                else:
                    return

        try:
            state.result = consume(state.group, pages())
        except _Stopped:
            pass
        except skippable as error:
            state.error = error
        except BaseException as error:
            state.error = error
            fail(error)

    def start_writer(state: _GroupState[R]) -> None:
        if state.writer is None:
            state.writer = threading.Thread(target=write, args=(state,), name="ct-export-writer", daemon=True)
            state.writer.start()

    def wait_turn(state: _GroupState[R], index: int) -> None:
        """Wait until the group's stream before ``index`` handed over its first page."""
        if index:
            before = state.started[index - 1]
            while not before.wait(_POLL_SECONDS) and not stop.is_set() and state.error is None:
                continue

    def read() -> None:
        while not stop.is_set():
            with lock:
                state, index, stream = next(work, (None, 0, None))
                if state is None or stream is None:
                    return
                start_writer(state)
            started = state.started[index]
            if state.skipped is None and state.error is None:
                try:
                    pages = iter(stream())
                    while True:
                        page = next_page(state, pages)
                        if page is None:
                            break
                        if not started.is_set():
                            wait_turn(state, index)
                        ok = put(state, ("page", page), asked=True)
                        del page  # the writer's now: not held while the next one is asked for
                        started.set()
                        if not ok:
                            break
                except skippable as error:
                    with lock:
                        first = state.skipped is None
                        state.skipped = state.skipped or error
                    if first:
                        put(state, ("error", error))
                except BaseException as error:
                    fail(error)
                    return
                finally:
                    if not started.is_set():  # no page: the next stream need not wait for this one
                        wait_turn(state, index)
                        started.set()
            started.set()
            with lock:
                state.remaining -= 1
                last = state.remaining == 0 and state.skipped is None
            if last:
                put(state, ("done", None))

    readers = [
        threading.Thread(target=read, name=f"clevertap-read-{index}", daemon=True)
        for index in range(max(1, min(concurrency, sum(len(group.streams) for group in groups))))
    ]
    try:
        for reader in readers:
            reader.start()
        # A reader in the middle of a request (or of its retries) is not waited for once the export
        # stopped: it notices the stop when its request ends, and its page goes nowhere.
        for reader in readers:
            while reader.is_alive() and not stop.is_set():
                reader.join(_POLL_SECONDS)
        for state in states:
            if state.writer is None and not stop.is_set():
                start_writer(state)  # a group without streams: its consumer still runs, on no pages
                put(state, ("done", None))
            if state.writer is not None:
                state.writer.join()
    except BaseException:
        stop.set()  # interrupted (the task was killed): the writers abandon their files
        for state in states:
            if state.writer is not None:
                state.writer.join(timeout=30)
        raise
    if failures:
        raise failures[0]
    # Any error left is a skippable one (the others were raised above).
    return [state.error if isinstance(state.error, Exception) else state.result for state in states]  # type: ignore[misc]
