"""CleverTap's read API: event names, and events and profiles streamed page by page.

Two layers. :class:`CleverTapClient` is plain Python (urllib3 keep-alive pool, orjson, tenacity):
it speaks the API, pages through cursors, retries what can succeed on retry and caps concurrent
requests per account. :class:`CleverTapHook` is the Airflow face: it reads a ``clevertap``
connection (login = account id, password = passcode, extras ``region`` and ``timezone``, host =
optional base URL override) and hands the work to a client.

Facts this is built on (CleverTap's API documentation, summed up in docs/clevertap.md): cursor
paging in two steps, both page shapes, "still in progress" answers, 429 inside a 200 body, at most
three concurrent read requests per account, 401 for a wrong region as well as for wrong credentials.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import urllib3
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_before_delay,
    wait_random_exponential,
)
from urllib3.exceptions import (
    DecodeError,
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from ct_airflow_provider.clevertap_api import MAX_BATCH_SIZE, MAX_CONCURRENT_REQUESTS, REGIONS
from ct_airflow_provider.connection_forms import CLEVERTAP_FORM

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_CONCURRENT_REQUESTS",
    "REGIONS",
    "CleverTapAuthError",
    "CleverTapClient",
    "CleverTapConfigError",
    "CleverTapCursorExpiredError",
    "CleverTapCursorStalledError",
    "CleverTapError",
    "CleverTapHook",
    "CleverTapRequestError",
    "CleverTapRetryDeadlineError",
    "EventExportNotAllowedError",
    "base_url_for_region",
]

log = logging.getLogger(__name__)

_EUROPE_BARE_HOST = "https://api.clevertap.com"
_ERROR_SNIPPET_CHARS = 300

T = TypeVar("T")


# -- errors -------------------------------------------------------------------------------------


class CleverTapError(Exception):
    """Base class of every CleverTap failure; the message names the cause and the remedy."""


class CleverTapConfigError(CleverTapError, ValueError):
    """The connection or the hook's arguments cannot work as given (nothing was sent)."""


class CleverTapAuthError(CleverTapError):
    """CleverTap refused the account id and passcode (HTTP 401), or their permissions (403)."""


class EventExportNotAllowedError(CleverTapError):
    """CleverTap refuses to export this event (notification events such as push impressions).

    Callers exporting "all events" catch this, warn, and go on with the other events.

    :param event_name: the event that was refused.
    """

    def __init__(self, event_name: str) -> None:
        self.event_name = event_name
        super().__init__(
            f"CleverTap does not allow exporting the event {event_name!r} (answer: 'Export not allowed for "
            "this event'); notification events such as push impressions cannot be exported. Remove it from "
            "the list of events to export."
        )


class CleverTapCursorStalledError(CleverTapError):
    """CleverTap handed back a cursor it had already given: paging would never end."""


class CleverTapCursorExpiredError(CleverTapError):
    """The export's cursor expired before it was read to the end; the export must start again."""


class CleverTapRequestError(CleverTapError):
    """CleverTap answered with a failure that retrying cannot fix (bad parameter, unknown path...).

    :param message: what failed and what to do.
    :param http_status: the HTTP status of the answer (0 when there was none).
    """

    def __init__(self, message: str, http_status: int = 0) -> None:
        self.http_status = http_status
        super().__init__(message)


class CleverTapRetryDeadlineError(CleverTapError):
    """A retryable failure went on past the retry deadline.

    :param message: what failed, how long it was retried and what to do.
    :param last_failure: the last transient failure seen.
    """

    def __init__(self, message: str, last_failure: str) -> None:
        self.last_failure = last_failure
        super().__init__(message)


class _Retryable(Exception):
    """A failure that may succeed on retry; never escapes this module."""

    def __init__(self, reason: str, remedy: str, *, expected: bool = False, crowded: bool = False) -> None:
        self.reason = reason
        self.remedy = remedy
        #: Waiting is part of the protocol (data being prepared), not a sign of trouble.
        self.expected = expected
        #: CleverTap said 429: the account's requests are in use, some maybe by other clients.
        self.crowded = crowded
        super().__init__(reason)


_CONCURRENCY_REMEDY = (
    f"CleverTap allows {MAX_CONCURRENT_REQUESTS} concurrent export requests per account: another process "
    "or machine is probably using the account's slots. Run fewer exports at once, or raise max_retry_seconds."
)
_NOT_READY_REMEDY = "CleverTap is still preparing the data; raise max_retry_seconds to wait longer."
_SERVER_REMEDY = "CleverTap's API is failing on its side; try again later."


# -- concurrency --------------------------------------------------------------------------------

#: Successful requests after which a lowered request budget is raised again by one.
RAISE_BUDGET_AFTER = 20


class RequestBudget:
    """The requests one account may have in flight from this process: at most
    :data:`MAX_CONCURRENT_REQUESTS`, fewer while CleverTap answers 429.

    A 429 means the account's requests are in use, maybe by other clients (another deployment, a
    script): the budget then drops by one (down to one request), and rises by one again after
    :data:`RAISE_BUDGET_AFTER` requests in a row succeed, so the export yields to the others and
    takes its share back when they are done. A request holds a place only while it is on the wire.

    :param account_id: the account, for the log.
    :param ceiling: the most requests in flight.
    """

    def __init__(self, account_id: str, ceiling: int = MAX_CONCURRENT_REQUESTS) -> None:
        self.account_id = account_id
        self.ceiling = ceiling
        #: Requests allowed in flight now.
        self.limit = ceiling
        self.in_flight = 0
        self._served_in_a_row = 0
        self._changed = threading.Condition()

    def __enter__(self) -> RequestBudget:
        with self._changed:
            while self.in_flight >= self.limit:
                self._changed.wait()
            self.in_flight += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._changed:
            self.in_flight -= 1
            self._changed.notify()

    def reset(self) -> None:
        """Back to the ceiling, forgetting earlier 429s (for tests that inject them)."""
        with self._changed:
            self.limit = self.ceiling
            self._served_in_a_row = 0
            self._changed.notify_all()

    def crowded(self) -> None:
        """CleverTap answered 429: keep one request fewer in flight."""
        with self._changed:
            self._served_in_a_row = 0
            if self.limit > 1:
                self.limit -= 1
                log.info(
                    "CleverTap answered 429 (the account's %d requests are in use, maybe by other clients): "
                    "this process now keeps at most %d in flight for account %s",
                    MAX_CONCURRENT_REQUESTS, self.limit, self.account_id,
                )  # fmt: skip

    def served(self) -> None:
        """A request succeeded: after enough in a row, take one more place back."""
        with self._changed:
            if self.limit >= self.ceiling:
                return
            self._served_in_a_row += 1
            if self._served_in_a_row >= RAISE_BUDGET_AFTER:
                self._served_in_a_row = 0
                self.limit += 1
                self._changed.notify()
                log.info(
                    "CleverTap: back to %d requests in flight for account %s", self.limit, self.account_id
                )


_account_budgets: dict[str, RequestBudget] = {}
_account_budgets_lock = threading.Lock()


def account_budget(account_id: str) -> RequestBudget:
    """The process-wide request budget of one account, shared by every client of it."""
    with _account_budgets_lock:
        budget = _account_budgets.get(account_id)
        if budget is None:
            budget = _account_budgets[account_id] = RequestBudget(account_id)
        return budget


# -- parsing ------------------------------------------------------------------------------------

#: With ``pause_gc_while_parsing``, bodies at least this large are parsed with the cyclic GC paused.
_GC_PAUSE_MIN_BYTES = 64 * 1024
_gc_pause_lock = threading.Lock()
_gc_pause_depth = 0
_gc_enabled_before_pause = False


def _loads_gc_paused(data: bytes) -> Any:
    """``orjson.loads``, with the cyclic GC paused for big bodies.

    A page of 5,000 records allocates some 150,000 dicts and lists; each 700 allocations trigger a
    collection that walks them all again, which doubles the parse time. Parsed JSON cannot hold
    reference cycles, so there is nothing for the collector to find. The pause is process-wide
    but nested safely across threads, and lasts one parse (milliseconds).
    """
    global _gc_pause_depth, _gc_enabled_before_pause
    if len(data) < _GC_PAUSE_MIN_BYTES:
        return orjson.loads(data)
    with _gc_pause_lock:
        if _gc_pause_depth == 0:
            _gc_enabled_before_pause = gc.isenabled()
            gc.disable()
        _gc_pause_depth += 1
    try:
        return orjson.loads(data)
    finally:
        with _gc_pause_lock:
            _gc_pause_depth -= 1
            if _gc_pause_depth == 0 and _gc_enabled_before_pause:
                gc.enable()


# -- the HTTP client ----------------------------------------------------------------------------


def base_url_for_region(region: str | None) -> str:
    """The API base URL of a region: ``https://{region}.api.clevertap.com``, or Europe's bare host.

    :param region: one of :data:`REGIONS`, or None/empty for ``https://api.clevertap.com``.
    """
    if not region:
        return _EUROPE_BARE_HOST
    if region not in REGIONS:
        raise CleverTapConfigError(
            f"Unknown CleverTap region {region!r}. Use one of {', '.join(REGIONS)} (the prefix of your "
            "dashboard's URL, e.g. in1 for in1.dashboard.clevertap.com), or leave it empty for Europe."
        )
    return f"https://{region}.api.clevertap.com"


def _check_batch_size(batch_size: object) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not 1 <= batch_size <= MAX_BATCH_SIZE
    ):
        raise CleverTapConfigError(
            f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE} (CleverTap's largest page), got {batch_size!r}."
        )


def _yyyymmdd(day: dt.date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _check_range(from_date: dt.date, to_date: dt.date) -> None:
    for name, value in (("from_date", from_date), ("to_date", to_date)):
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise CleverTapConfigError(
                f"{name} must be a datetime.date (a day in the account's time zone), got {value!r}."
            )
    if from_date > to_date:
        raise CleverTapConfigError(f"from_date {from_date} is after to_date {to_date}: swap them.")


@dataclass(frozen=True)
class _Page:
    records: list[dict[str, Any]]
    next_cursor: str | None


class _CursorPages:
    """The pages of one export query, following its cursor: one request per ``next()``.

    An iterator class rather than a generator: a generator suspended after yielding a page keeps it
    referenced until asked for the next one, which an export does only once its writer has room, so
    every stream waiting its turn would hold a page already written (docs/performance.md).
    """

    def __init__(self, client: CleverTapClient, kind: str, what: str, cursor: str) -> None:
        self._client = client
        self._kind = kind
        self._what = what
        self._next_cursor: str | None = cursor
        # Cursors already read: a cursor coming back (at once or in a cycle) means no progress.
        self._seen: set[str] = set()
        self._page_number = 0

    def __iter__(self) -> _CursorPages:
        return self

    def __next__(self) -> list[dict[str, Any]]:
        while self._next_cursor is not None:
            cursor = self._next_cursor
            if cursor in self._seen:
                raise CleverTapCursorStalledError(
                    f"CleverTap returned a cursor it had already given while reading {self._what} (page "
                    f"{self._page_number + 1}): paging does not advance, so the export stops rather than "
                    "loop or duplicate records. Run the export again; if it recurs, report it to CleverTap "
                    "support."
                )
            self._seen.add(cursor)
            self._page_number += 1
            # Sent back exactly as received: cursors arrive percent-encoded already.
            page = self._client._call(
                "GET", f"/1/{self._kind}.json?cursor={cursor}", None, self._what, self._client._page
            )
            self._next_cursor = page.next_cursor
            if page.records:
                return page.records
        raise StopIteration


class CleverTapClient:
    """A small client of CleverTap's read API; thread-safe, no Airflow needed.

    Every request holds a place of the account's process-wide :class:`RequestBudget` while it is on
    the wire (not while it waits to retry): at most :data:`MAX_CONCURRENT_REQUESTS`, fewer while
    CleverTap answers 429. Failures that can succeed on retry
    (429, also inside a 200 body; 5xx; 202 and "still in progress"; connection errors; timeouts;
    bodies cut short) are retried with exponential backoff and full jitter until
    ``max_retry_seconds`` have passed since the request's first attempt.

    :param account_id: the CleverTap account id.
    :param passcode: the account's passcode; sent as a header, never logged or shown.
    :param base_url: the API base URL, e.g. ``https://in1.api.clevertap.com``.
    :param batch_size: records per page, 1 to 5000.
    :param max_retry_seconds: how long one request may keep being retried.
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for an answer (CleverTap prepares pages slowly at times).
    :param backoff_initial_seconds: the first retry waits up to this long; each retry doubles it.
    :param backoff_max_seconds: no single wait is longer than this.
    :param pause_gc_while_parsing: pause Python's cyclic garbage collector while a page of 64 KiB
        or more is parsed (for the parse only; about twice as fast to parse, see docs/performance.md).
    """

    def __init__(
        self,
        account_id: str,
        passcode: str,
        base_url: str,
        *,
        batch_size: int = MAX_BATCH_SIZE,
        max_retry_seconds: float = 600.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        pause_gc_while_parsing: bool = False,
    ) -> None:
        _check_batch_size(batch_size)
        if max_retry_seconds < 0 or backoff_initial_seconds < 0 or backoff_max_seconds < 0:
            raise CleverTapConfigError("max_retry_seconds and the backoff times must be 0 or more.")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise CleverTapConfigError("connect_timeout and read_timeout must be more than 0 seconds.")
        if not account_id:
            raise CleverTapConfigError("The CleverTap account id is empty: copy it from Settings > Project.")
        if not passcode:
            raise CleverTapConfigError("The CleverTap passcode is empty: copy it from Settings > Project.")
        self.account_id = account_id
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.max_retry_seconds = max_retry_seconds
        self._backoff = wait_random_exponential(multiplier=backoff_initial_seconds, max=backoff_max_seconds)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._get_headers = {
            "X-CleverTap-Account-Id": account_id,
            "X-CleverTap-Passcode": passcode,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        self._post_headers = {**self._get_headers, "Content-Type": "application/json"}
        self._budget = account_budget(account_id)
        self._loads: Callable[[bytes], Any] = _loads_gc_paused if pause_gc_while_parsing else orjson.loads
        # Keep-alive pool, one connection per concurrent slot; urllib3's own retries are off so that
        # only the retry policy below decides (and counts against the deadline).
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=MAX_CONCURRENT_REQUESTS, block=False, retries=False, timeout=self._timeout
        )

    def __repr__(self) -> str:
        return f"CleverTapClient(account_id={self.account_id!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()

    def __enter__(self) -> CleverTapClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- API calls -------------------------------------------------------------------------------

    def list_event_names(self) -> list[str]:
        """Every event name of the account (``getSchema``), including events that refuse export."""
        payload = self._call("GET", "/getSchema?type=events", None, "the event list (getSchema)", self._json)
        events = payload.get("events")
        if not isinstance(events, list):
            raise CleverTapRequestError(
                f"CleverTap's getSchema answer has no 'events' list: {_snippet(payload)}"
            )
        names: list[str] = []
        for event in events:
            name = event.get("name") if isinstance(event, dict) else event
            if isinstance(name, str) and name not in names:
                names.append(name)
        return names

    def iter_event_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date, *, app_fields: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of event records for one event over a range of days, as the API returns them.

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day (account time zone), inclusive.
        :param to_date: last day, inclusive.
        :param app_fields: ask for device fields in each record's profile (the API's ``app=true``).
        :raises EventExportNotAllowedError: CleverTap refuses to export this event.
        """
        flags = "&app=true" if app_fields else ""
        return self._iter_pages("events", event_name, from_date, to_date, flags)

    def iter_profile_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of profile records of the users who did ``event_name`` in the range of days.

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day (account time zone), inclusive.
        :param to_date: last day, inclusive.
        :raises EventExportNotAllowedError: CleverTap refuses to export by this event.
        """
        return self._iter_pages("profiles", event_name, from_date, to_date, "")

    def count_events(self, event_name: str, from_date: dt.date, to_date: dt.date) -> int:
        """How many records CleverTap holds for the event over the range (to check an export is complete).

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day (account time zone), inclusive.
        :param to_date: last day, inclusive.
        """
        _check_range(from_date, to_date)
        what = f"the count of {event_name!r} from {from_date} to {to_date}"
        body = orjson.dumps(
            {"event_name": event_name, "from": _yyyymmdd(from_date), "to": _yyyymmdd(to_date)}
        )
        started = self._call("POST", "/1/counts/events.json", body, what, self._json)
        if started.get("status") == "success" and "count" in started:
            return int(started["count"])
        request_id = started.get("req_id")
        if request_id is None:
            raise CleverTapRequestError(f"CleverTap's counts answer has no req_id: {_snippet(started)}")

        def finished_count(status: int, data: bytes) -> int:
            payload = self._json(status, data)
            if payload.get("status") == "success" and "count" in payload:
                return int(payload["count"])
            raise _Retryable("the count is still being computed", _NOT_READY_REMEDY, expected=True)

        return self._call("GET", f"/1/counts/events.json?req_id={request_id}", None, what, finished_count)

    # -- paging ----------------------------------------------------------------------------------

    def _iter_pages(
        self, kind: str, event_name: str, from_date: dt.date, to_date: dt.date, flags: str
    ) -> Iterator[list[dict[str, Any]]]:
        _check_range(from_date, to_date)
        what = f"the {kind} export of {event_name!r} from {from_date} to {to_date}"
        body = orjson.dumps(
            {"event_name": event_name, "from": _yyyymmdd(from_date), "to": _yyyymmdd(to_date)}
        )

        def started_cursor(status: int, data: bytes) -> str:
            payload = self._json(status, data, event_name)
            cursor = payload.get("cursor")
            if not isinstance(cursor, str) or not cursor:
                raise CleverTapRequestError(f"CleverTap started {what} without a cursor: {_snippet(payload)}")
            return cursor

        cursor = self._call(
            "POST", f"/1/{kind}.json?batch_size={self.batch_size}{flags}", body, what, started_cursor
        )
        return _CursorPages(self, kind, what, cursor)

    def _page(self, status: int, data: bytes) -> _Page:
        payload = self._json(status, data)
        records = payload.get("records", [])
        if not isinstance(records, list):
            raise CleverTapRequestError(
                f"CleverTap answered a page whose 'records' is not a list: {_snippet(payload)}"
            )
        # Documented shape: "success" + "next_cursor" (absent on the last page). Seen too:
        # intermediate pages as "partial" + "cursor".
        next_cursor = payload.get("next_cursor")
        if not next_cursor and payload.get("status") == "partial":
            next_cursor = payload.get("cursor")
        return _Page(records, next_cursor if isinstance(next_cursor, str) and next_cursor else None)

    # -- one request, retried --------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: bytes | None, what: str, interpret: Callable[[int, bytes], T]
    ) -> T:
        url = self.base_url + path

        def announce_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if not isinstance(error, _Retryable):
                return
            log.log(
                logging.INFO if error.expected else logging.WARNING,
                "CleverTap: %s while requesting %s; retry %d in %.1f s",
                error.reason,
                what,
                state.attempt_number,
                state.upcoming_sleep,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            wait=self._backoff,
            stop=stop_before_delay(self.max_retry_seconds),
            before_sleep=announce_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    status, data = self._send(method, url, body)
                    try:
                        result = interpret(status, data)
                    except _Retryable as failure:
                        if failure.crowded:
                            self._budget.crowded()
                        raise
                    self._budget.served()
                    return result
        except _Retryable as failure:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise CleverTapRetryDeadlineError(
                f"CleverTap did not answer {what} within the retry deadline of {self.max_retry_seconds:g} s "
                f"({attempts} attempts); last failure: {failure.reason}. {failure.remedy}",
                failure.reason,
            ) from None
        raise AssertionError("unreachable: tenacity either returns, retries or raises")  # pragma: no cover

    def _send(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers = self._post_headers if body is not None else self._get_headers
        with self._budget:
            try:
                response = self._http.request(
                    method, url, body=body, headers=headers, redirect=False, preload_content=True
                )
            except NameResolutionError:
                raise CleverTapConfigError(
                    f"Cannot resolve the host of {self.base_url}: check the connection's region, or its host "
                    "override (e.g. https://in1.api.clevertap.com)."
                ) from None
            except SSLError as error:
                raise CleverTapRequestError(
                    f"TLS failed with {self.base_url} ({error.__class__.__name__}): check the host override "
                    "and the machine's CA certificates, or the proxy in between."
                ) from None
            except LocationParseError:
                raise CleverTapConfigError(
                    f"{self.base_url} is not a valid URL: fix the connection's host override."
                ) from None
            except NewConnectionError as error:
                # Before the timeout clause: urllib3 files refused connections under TimeoutError.
                raise _Retryable(
                    f"cannot connect ({error.__class__.__name__}: refused or unreachable)",
                    f"Check that {self.base_url} is reachable from this machine (proxy, firewall, region).",
                ) from None
            except Urllib3TimeoutError as error:
                raise _Retryable(
                    f"no answer in time ({error.__class__.__name__})",
                    f"Check network access to {self.base_url}, or raise read_timeout.",
                ) from None
            except (ProtocolError, DecodeError) as error:
                raise _Retryable(
                    f"connection broken or answer cut short ({error.__class__.__name__})",
                    f"Check network access to {self.base_url}.",
                ) from None
            except HTTPError as error:
                raise _Retryable(
                    f"connection failed ({error.__class__.__name__})",
                    f"Check network access to {self.base_url}.",
                ) from None
            except OSError as error:
                raise _Retryable(
                    f"connection failed ({error.__class__.__name__})",
                    f"Check network access to {self.base_url}.",
                ) from None
        return response.status, response.data

    # -- answers ---------------------------------------------------------------------------------

    def _json(self, status: int, data: bytes, event_name: str | None = None) -> dict[str, Any]:
        """The JSON object of a successful answer; raises the right error for any other answer."""
        if status == 202:
            raise _Retryable("HTTP 202: the data is not ready yet", _NOT_READY_REMEDY, expected=True)
        if status == 429:
            raise _Retryable("HTTP 429: too many concurrent requests", _CONCURRENCY_REMEDY, crowded=True)
        if status in (500, 502, 503, 504):
            raise _Retryable(f"HTTP {status}: server error", _SERVER_REMEDY)
        if status == 401:
            raise self._auth_error()
        try:
            payload = self._loads(data)
        except orjson.JSONDecodeError:
            if status == 200:
                raise _Retryable("HTTP 200 whose body is not JSON (cut short?)", _SERVER_REMEDY) from None
            payload = None
        if not isinstance(payload, dict):
            if status == 200:
                raise _Retryable("HTTP 200 whose body is not a JSON object", _SERVER_REMEDY)
            raise self._request_error(status, data)
        if payload.get("status") == "fail" or status != 200:
            self._raise_failure(status, payload, event_name)
        return payload

    def _raise_failure(self, status: int, payload: dict[str, Any], event_name: str | None) -> None:
        code = payload.get("code")
        error = str(payload.get("error", ""))
        lowered = error.lower()
        if code == 429 or "too many" in lowered:
            raise _Retryable(f"HTTP {status} carrying code 429 ({error})", _CONCURRENCY_REMEDY, crowded=True)
        if code == 2 or "in progress" in lowered:
            raise _Retryable(
                f"HTTP {status}: {error or 'request still in progress'}", _NOT_READY_REMEDY, expected=True
            )
        if "not allowed" in lowered and event_name is not None:
            raise EventExportNotAllowedError(event_name)
        if "invalid credentials" in lowered:
            raise self._auth_error()
        if "expired" in lowered:
            raise CleverTapCursorExpiredError(
                f"CleverTap says the export's cursor expired ({error}) before all pages were read. Run the "
                "export again; its records so far were not written as complete."
            )
        raise self._request_error(status, payload)

    def _auth_error(self) -> CleverTapAuthError:
        return CleverTapAuthError(
            f"CleverTap rejected the credentials of account {self.account_id!r} at {self.base_url} "
            "(HTTP 401 Invalid Credentials). Either the Account ID or the Passcode is wrong (copy both from "
            "Settings > Project in the CleverTap dashboard), or the region is not the account's: a wrong "
            "region answers 401 too, so set the region your dashboard's URL starts with "
            f"({', '.join(REGIONS)}; empty for Europe's api.clevertap.com)."
        )

    def _request_error(self, status: int, payload: object) -> CleverTapError:
        detail = _snippet(payload)
        if status == 403:
            return CleverTapAuthError(
                f"CleverTap refused account {self.account_id!r} access (HTTP 403: {detail}). The passcode's "
                "role may lack the export APIs, or the caller's IP is not allow-listed in Settings > Passcode."
            )
        if status in (404, 405):
            return CleverTapRequestError(
                f"{self.base_url} does not serve this CleverTap API call (HTTP {status}: {detail}). Check the "
                "connection's host override: it must be the bare API base URL, e.g. https://in1.api.clevertap.com.",
                status,
            )
        return CleverTapRequestError(
            f"CleverTap refused the request (HTTP {status}: {detail}). Check the event name and the dates "
            "(yyyymmdd, from <= to); this failure is not retried.",
            status,
        )


def _snippet(payload: object) -> str:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    return text if len(text) <= _ERROR_SNIPPET_CHARS else text[:_ERROR_SNIPPET_CHARS] + "..."


# -- the Airflow hook ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConnectionSettings:
    account_id: str
    passcode: str
    region: str | None
    timezone: ZoneInfo
    base_url: str


class CleverTapHook(BaseHook):
    """Reads a CleverTap account through its API (connection type ``clevertap``).

    The connection holds the Account ID as login and the Passcode as password, the account's
    ``region`` (one of :data:`~ct_airflow_provider.clevertap_api.REGIONS`; Europe's bare host when
    empty) and ``timezone`` (the account's IANA time zone, UTC when empty) as extras, and optionally
    a host that replaces the API base URL (a proxy, or the local simulator).

    :param clevertap_conn_id: the ``clevertap`` connection to use.
    :param batch_size: records per page, 1 to 5000.
    :param max_retry_seconds: how long one request keeps being retried on transient failures.
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for an answer.
    :param backoff_initial_seconds: the first retry waits up to this long; each retry doubles it.
    :param backoff_max_seconds: no single wait is longer than this.
    :param pause_gc_while_parsing: pause Python's cyclic garbage collector while a big page is
        parsed (the export operators turn it on: ``[clevertap] pause_gc_while_parsing``).
    """

    conn_name_attr = "clevertap_conn_id"
    default_conn_name = "clevertap_default"
    conn_type = "clevertap"
    hook_name = "CleverTap"

    def __init__(
        self,
        clevertap_conn_id: str = default_conn_name,
        *,
        batch_size: int = MAX_BATCH_SIZE,
        max_retry_seconds: float = 600.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        pause_gc_while_parsing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_batch_size(batch_size)
        self.clevertap_conn_id = clevertap_conn_id
        self.batch_size = batch_size
        self.max_retry_seconds = max_retry_seconds
        self.pause_gc_while_parsing = pause_gc_while_parsing
        self._client_options: dict[str, float] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "backoff_initial_seconds": backoff_initial_seconds,
            "backoff_max_seconds": backoff_max_seconds,
        }
        self._settings: _ConnectionSettings | None = None
        self._client: CleverTapClient | None = None
        self._client_lock = threading.Lock()

    # -- connection form (Airflow < 3.2 reads these; later versions read the provider info) ----------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The ``region`` and ``timezone`` extras of the connection form."""
        return CLEVERTAP_FORM.widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the standard fields as CleverTap names them and hide the unused ones."""
        return CLEVERTAP_FORM.field_behaviour()

    # -- what the connection says ------------------------------------------------------------------

    @property
    def account_id(self) -> str:
        """The CleverTap account id (the connection's login)."""
        return self._connection_settings().account_id

    @property
    def timezone(self) -> ZoneInfo:
        """The account's time zone: CleverTap's ``ts`` values and day boundaries are in it."""
        return self._connection_settings().timezone

    @property
    def base_url(self) -> str:
        """The API base URL in use: the host override, else the region's host."""
        return self._connection_settings().base_url

    @property
    def region(self) -> str | None:
        """The connection's region, None for Europe's bare host."""
        return self._connection_settings().region

    def _connection_settings(self) -> _ConnectionSettings:
        if self._settings is None:
            self._settings = self._read_connection()
        return self._settings

    def _read_connection(self) -> _ConnectionSettings:
        conn = self.get_connection(self.clevertap_conn_id)
        name = self.clevertap_conn_id
        account_id = (conn.login or "").strip()
        passcode = (conn.password or "").strip()
        if not account_id:
            raise CleverTapConfigError(
                f"Connection {name!r} has no Account ID: put it in the login field (Settings > Project in "
                "the CleverTap dashboard)."
            )
        if not passcode:
            raise CleverTapConfigError(
                f"Connection {name!r} has no Passcode: put it in the password field (Settings > Project in "
                "the CleverTap dashboard). Airflow's UI never sends a saved Passcode back to the browser: to "
                "test a saved connection from its Edit form, type the Passcode again."
            )
        extras = conn.extra_dejson
        region_value = extras.get("region", extras.get("extra__clevertap__region"))
        region = str(region_value).strip().lower() if region_value else None
        if region and region not in REGIONS:
            raise CleverTapConfigError(
                f"Connection {name!r} has region {region_value!r}; use one of {', '.join(REGIONS)} (the prefix "
                "of your dashboard's URL), or leave it empty for Europe (api.clevertap.com)."
            )
        timezone_value = extras.get("timezone", extras.get("extra__clevertap__timezone")) or "UTC"
        try:
            timezone = ZoneInfo(str(timezone_value).strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise CleverTapConfigError(
                f"Connection {name!r} has timezone {timezone_value!r}, which is not an IANA time zone name. "
                "Use the account's time zone from Settings > Project, e.g. Asia/Kolkata or America/New_York."
            ) from None
        base_url = self._host_override(conn.host, conn.port, conn.schema) or base_url_for_region(region)
        return _ConnectionSettings(account_id, passcode, region, timezone, base_url)

    def _host_override(self, host: str | None, port: int | None, schema: str | None) -> str | None:
        host = (host or "").strip()
        if not host:
            return None
        if "://" not in host:
            scheme = schema if schema in ("http", "https") else "https"
            host = f"{scheme}://{host}"
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CleverTapConfigError(
                f"Connection {self.clevertap_conn_id!r} has host {host!r}, which is not an http(s) base URL. "
                "Leave the host empty to use the region's API, or give a full URL like http://127.0.0.1:8765."
            )
        url = host.rstrip("/")
        if port and parts.port is None:
            url = f"{parts.scheme}://{parts.netloc}:{port}{parts.path.rstrip('/')}"
        return url

    # -- the client --------------------------------------------------------------------------------

    def get_conn(self) -> CleverTapClient:
        """The API client for this connection (created once, reused: it keeps connections alive)."""
        with self._client_lock:
            if self._client is None:
                settings = self._connection_settings()
                self._client = CleverTapClient(
                    settings.account_id,
                    settings.passcode,
                    settings.base_url,
                    batch_size=self.batch_size,
                    max_retry_seconds=self.max_retry_seconds,
                    pause_gc_while_parsing=self.pause_gc_while_parsing,
                    **self._client_options,
                )
            return self._client

    def close(self) -> None:
        """Close the client's pooled connections."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def list_event_names(self) -> list[str]:
        """Every event name of the account (``getSchema``), including events that refuse export."""
        return self.get_conn().list_event_names()

    def iter_event_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date, *, app_fields: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Event records one page at a time (at most ``batch_size`` records held at once).

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day in the account's time zone, inclusive.
        :param to_date: last day, inclusive.
        :param app_fields: ask for device fields in each record's profile (the API's ``app=true``).
        :raises EventExportNotAllowedError: CleverTap refuses to export this event.
        """
        return self.get_conn().iter_event_pages(event_name, from_date, to_date, app_fields=app_fields)

    def iter_events(
        self, event_name: str, from_date: dt.date, to_date: dt.date, *, app_fields: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Event records one at a time, streamed page by page.

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day in the account's time zone, inclusive.
        :param to_date: last day, inclusive.
        :param app_fields: ask for device fields in each record's profile (the API's ``app=true``).
        :raises EventExportNotAllowedError: CleverTap refuses to export this event.
        """
        for page in self.iter_event_pages(event_name, from_date, to_date, app_fields=app_fields):
            yield from page

    def iter_profile_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date
    ) -> Iterator[list[dict[str, Any]]]:
        """Profiles of the users who did ``event_name`` in the range, one page at a time.

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day in the account's time zone, inclusive.
        :param to_date: last day, inclusive.
        :raises EventExportNotAllowedError: CleverTap refuses to export by this event.
        """
        return self.get_conn().iter_profile_pages(event_name, from_date, to_date)

    def iter_profiles(
        self, event_name: str, from_date: dt.date, to_date: dt.date
    ) -> Iterator[dict[str, Any]]:
        """Profiles of the users who did ``event_name`` in the range, one at a time.

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day in the account's time zone, inclusive.
        :param to_date: last day, inclusive.
        :raises EventExportNotAllowedError: CleverTap refuses to export by this event.
        """
        for page in self.iter_profile_pages(event_name, from_date, to_date):
            yield from page

    def count_events(self, event_name: str, from_date: dt.date, to_date: dt.date) -> int:
        """How many records CleverTap holds for the event over the range (the counts API).

        :param event_name: the event, exactly as CleverTap names it.
        :param from_date: first day in the account's time zone, inclusive.
        :param to_date: last day, inclusive.
        """
        return self.get_conn().count_events(event_name, from_date, to_date)

    def test_connection(self) -> tuple[bool, str]:
        """Check the credentials with one cheap call (the event list); never shows the passcode."""
        try:
            settings = self._connection_settings()
            with CleverTapClient(
                settings.account_id,
                settings.passcode,
                settings.base_url,
                # The Test button must answer within seconds, not after ten minutes of retries.
                max_retry_seconds=min(self.max_retry_seconds, 20.0),
                connect_timeout=min(self._client_options["connect_timeout"], 10.0),
                read_timeout=min(self._client_options["read_timeout"], 30.0),
                backoff_initial_seconds=self._client_options["backoff_initial_seconds"],
                backoff_max_seconds=self._client_options["backoff_max_seconds"],
            ) as client:
                names = client.list_event_names()
        except CleverTapError as error:
            return False, str(error)
        return True, (
            f"Connected to CleverTap account {settings.account_id} at {settings.base_url}: "
            f"{len(names)} event names; account time zone {settings.timezone.key}."
        )
