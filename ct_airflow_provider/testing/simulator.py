"""A local CleverTap read-API simulator: a real HTTP server that behaves as the documented API does.

Run it from a shell (it prints the URL and the credentials to use, and runs until Ctrl-C)::

    python -m ct_airflow_provider.testing.simulator --port 0

or in tests, as the ``clevertap_simulator`` pytest fixture or directly::

    with run_simulator(events_per_day=50) as server:
        monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", server.airflow_conn_env())
        server.faults.queue(Fault.TOO_MANY_REQUESTS, Fault.NOT_READY)
        ...
        assert records == list(server.truth.events("Charged", day))

It serves ``GET /getSchema?type=events``, the two-step cursor exports ``/1/events.json`` and
``/1/profiles.json``, and ``/1/counts/events.json``. It checks the account headers, allows at most
three concurrent read requests per account (429 beyond), and hands out percent-encoded cursors
that fail when encoded twice. Data comes from :class:`~ct_airflow_provider.testing.seed_data.SeedData`,
rendered page by page on demand, so millions of events cost no memory. Faults can be switched on
at run time through :attr:`SimulatorServer.faults` (or ``POST /_simulator/faults`` from another
process), and :attr:`SimulatorServer.truth` tells a test which records exist.

This module is for tests and demos; runtime code never imports it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import itertools
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson

from ct_airflow_provider.clevertap_api import MAX_BATCH_SIZE, MAX_CONCURRENT_REQUESTS
from ct_airflow_provider.testing.seed_data import BoundedCache, SeedData, day_range

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "Fault",
    "FaultControl",
    "GroundTruth",
    "SimulatorServer",
    "SimulatorStats",
    "main",
    "run_simulator",
]

DEFAULT_ACCOUNT_ID = "SIM-4W5-Z001"
DEFAULT_BATCH_SIZE = 1000

_READ_PATHS = frozenset({"/1/events.json", "/1/profiles.json", "/1/counts/events.json"})
_CURSOR_PREFIX = "v1|"

_INVALID_CREDENTIALS = b'{"status":"fail","error":"Invalid Credentials"}'
_TOO_MANY = b'{"status":"fail","code":429,"error":"Too many concurrent requests"}'
_IN_PROGRESS = b'{"status":"fail","code":2,"error":"Request still in progress, please retry later"}'
_NOT_ALLOWED = b'{"status":"fail","code":400,"error":"Export not allowed for this event"}'
_EXPIRED = b'{"status":"fail","code":4,"error":"Cursor expired, please make a new request"}'
_SERVICE_UNAVAILABLE = b'{"status":"fail","code":503,"error":"Service temporarily unavailable"}'
_SERVER_ERROR_PAGE = b"<html><body><h1>500 Internal Server Error</h1></body></html>"


class Fault(str, enum.Enum):  # enum.StrEnum from Python 3.11 on
    """A transient failure the simulator can inject into its next answers."""

    def __str__(self) -> str:
        return str(self.value)

    #: HTTP 202: the page is not ready yet; the same cursor must be retried.
    NOT_READY = "not_ready"
    #: HTTP 200 whose body says ``"code": 2, "Request still in progress"``.
    NOT_READY_IN_BODY = "not_ready_in_body"
    #: HTTP 429 "Too many concurrent requests".
    TOO_MANY_REQUESTS = "too_many_requests"
    #: HTTP 200 whose body carries ``"code": 429``.
    TOO_MANY_REQUESTS_IN_BODY = "too_many_requests_in_body"
    #: HTTP 500 with an HTML body (what a load balancer answers).
    SERVER_ERROR = "server_error"
    #: HTTP 503 with a JSON body.
    SERVICE_UNAVAILABLE = "service_unavailable"
    #: Answers correctly, but only after :attr:`FaultControl.slow_seconds`.
    SLOW = "slow"
    #: Sends the headers and half the body, then closes the connection.
    TRUNCATED_BODY = "truncated_body"
    #: Closes the connection without answering.
    CONNECTION_RESET = "connection_reset"


#: Faults a random fault rate draws from: all the transient ones except slow answers.
RANDOM_FAULTS: tuple[Fault, ...] = tuple(fault for fault in Fault if fault is not Fault.SLOW)


class FaultControl:
    """Run-time switches for the simulator's faults; safe to change from any thread.

    Transient faults are queued and each hits the next API request (any endpoint), in order.
    The attributes below are persistent until changed or :meth:`clear` is called.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._random = random.Random(0)
        #: How many times each fault was actually served: lets a test prove a fault happened.
        self.injected: Counter[str] = Counter()
        self.clear()

    def clear(self) -> None:
        """Switch every fault off and empty the queue (``injected`` counts are kept)."""
        with self._lock:
            self._queue.clear()
        #: Every request answers 401 Invalid Credentials (wrong passcode or wrong region).
        self.invalid_credentials = False
        #: Pages repeat the cursor they were fetched with as their next cursor.
        self.stall_cursor = False
        #: Every cursor answers "Cursor expired".
        self.expire_cursors = False
        #: Cursors expire this many seconds after their export request (None: never).
        self.cursor_ttl_seconds: float | None = None
        #: How long a :attr:`Fault.SLOW` answer waits.
        self.slow_seconds = 2.0
        #: A delay added to every API answer (keeps requests in flight, to test concurrency).
        self.response_delay_seconds = 0.0
        #: ``"documented"``: pages say ``success`` with ``next_cursor``; ``"partial"``: intermediate
        #: pages say ``partial`` with ``cursor`` (the other shape some clients have seen).
        self.page_shape = "documented"
        #: Probability that any request gets a random transient fault (demos, soak tests).
        self.random_rate = 0.0
        #: Added to every answer of the counts API (a count that disagrees with the events served).
        self.count_offset = 0
        #: Records of an event and day (``yyyymmdd``) that have not arrived yet, as events an offline
        #: device uploads late: neither the events API nor the counts API has them until removed here.
        self.late_events: dict[tuple[str, str], int] = {}

    def queue(self, *faults: Fault | str) -> None:
        """Queue transient faults; each one hits the next API request, in order.

        :param faults: :class:`Fault` members or their string values.
        """
        parsed = [Fault(fault) for fault in faults]
        with self._lock:
            self._queue.extend(parsed)

    def pending(self) -> list[Fault]:
        """Faults queued and not served yet."""
        with self._lock:
            return list(self._queue)

    def seed_random(self, seed: int) -> None:
        """Make the random fault pattern reproducible."""
        with self._lock:
            self._random = random.Random(seed)

    def take(self) -> Fault | None:
        """The fault for the request being answered now, if any (used by the server)."""
        with self._lock:
            if self._queue:
                fault: Fault | None = self._queue.popleft()
            elif self.random_rate > 0 and self._random.random() < self.random_rate:
                fault = self._random.choice(RANDOM_FAULTS)
            else:
                fault = None
            if fault is not None:
                self.injected[fault.value] += 1
            return fault

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply settings given as JSON (the ``/_simulator/faults`` control endpoint).

        :param settings: ``{"queue": [...], "clear": true, "<attribute>": value, ...}``.
        """
        settings = dict(settings)
        if settings.pop("clear", False):
            self.clear()
        self.queue(*settings.pop("queue", ()))
        allowed = {
            "invalid_credentials", "stall_cursor", "expire_cursors", "cursor_ttl_seconds",
            "slow_seconds", "response_delay_seconds", "page_shape", "random_rate", "count_offset",
        }  # fmt: skip
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(allowed)}")
        if settings.get("page_shape", "documented") not in ("documented", "partial"):
            raise ValueError("page_shape must be 'documented' or 'partial'")
        for name, value in settings.items():
            setattr(self, name, value)


class SimulatorStats:
    """Counters a test can assert on; updated by the server threads."""

    def __init__(self, concurrency_limit: int) -> None:
        self._lock = threading.Lock()
        self.concurrency_limit = concurrency_limit
        #: Read requests being answered right now.
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter (requests in flight are still tracked)."""
        with self._lock:
            #: Every HTTP request answered (or refused), control endpoints excluded.
            self.requests_served = 0
            #: Successful page answers of the events and profiles exports.
            self.pages_served = 0
            #: Records in those pages.
            self.records_served = 0
            #: The most read requests (events, profiles, counts) in flight at one time.
            self.max_concurrent_observed = self.in_flight
            #: Read requests refused with 429 because three were already in flight.
            self.concurrency_rejections = 0
            #: TCP connections accepted (few, when clients keep connections alive).
            self.connections_opened = 0

    def count_connection(self) -> None:
        with self._lock:
            self.connections_opened += 1

    def count_request(self) -> None:
        with self._lock:
            self.requests_served += 1

    def count_page(self, records: int) -> None:
        with self._lock:
            self.pages_served += 1
            self.records_served += records

    def enter_read(self) -> bool:
        """Take a concurrency slot; False (and counted) when the account is at its limit."""
        with self._lock:
            if self.in_flight >= self.concurrency_limit:
                self.concurrency_rejections += 1
                return False
            self.in_flight += 1
            self.max_concurrent_observed = max(self.max_concurrent_observed, self.in_flight)
            return True

    def leave_read(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        with self._lock:
            return {
                "requests_served": self.requests_served,
                "pages_served": self.pages_served,
                "records_served": self.records_served,
                "max_concurrent_observed": self.max_concurrent_observed,
                "concurrency_rejections": self.concurrency_rejections,
                "connections_opened": self.connections_opened,
                "in_flight": self.in_flight,
            }


class GroundTruth:
    """What the simulated account holds, for tests to compare an export against.

    :param data: the seed data the server answers from.
    """

    def __init__(self, data: SeedData) -> None:
        self._data = data

    @property
    def today(self) -> dt.date:
        """The simulator's today in the account time zone (data exists up to ``as_of``)."""
        return self._data.today

    @property
    def as_of(self) -> dt.datetime:
        """The simulator's "now", fixed when it started; today's records stop there."""
        return self._data.as_of

    def days(self) -> list[dt.date]:
        """Days holding data, oldest first (the last 60 whole days, then today)."""
        return self._data.days()

    def event_names(self) -> list[str]:
        """Every name ``getSchema`` lists, including the notification event that refuses export."""
        return self._data.event_names()

    def exportable_event_names(self) -> list[str]:
        """Names the events export accepts ("All user events")."""
        return self._data.exportable_event_names()

    def event_count(self, event_name: str, day: dt.date) -> int:
        """How many records ``event_name`` has on ``day``."""
        return self._data.event_count(event_name, day)

    def events(self, event_name: str, day: dt.date) -> Iterator[dict[str, Any]]:
        """The raw API records of one event and day, in the order the API returns them."""
        return self._data.events(event_name, day)

    def profiles(self, event_name: str, from_day: dt.date, to_day: dt.date) -> Iterator[dict[str, Any]]:
        """The profile records the profiles API returns for an event and date range, in order."""
        return self._data.profiles(event_name, from_day, to_day)


@dataclass(frozen=True)
class _Query:
    """What an export request asked for; carried inside its cursors."""

    kind: str
    event_name: str
    from_day: dt.date
    to_day: dt.date
    batch_size: int
    flags: tuple[bool, bool, bool]
    issued_at: float
    offset: int = 0

    def page_key(self) -> tuple[Any, ...]:
        return (
            self.kind,
            self.event_name,
            self.from_day,
            self.to_day,
            self.batch_size,
            self.flags,
            self.offset,
        )


@dataclass
class _Answer:
    status: int
    body: list[bytes]
    content_type: str = "application/json"
    truncate: bool = False
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _json_answer(status: int, payload: dict[str, Any]) -> _Answer:
    return _Answer(status, [orjson.dumps(payload)])


def _incorrect_usage(reason: str) -> _Answer:
    return _json_answer(400, {"status": "fail", "code": 3, "error": f"Incorrect Usage: {reason}"})


def _yyyymmdd(value: Any, name: str) -> dt.date:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'{name}' must be a yyyymmdd integer, got {value!r}")
    try:
        return dt.date(value // 10000, value // 100 % 100, value % 100)
    except ValueError:
        raise ValueError(f"'{name}' is not a valid yyyymmdd date: {value}") from None


class _Api:
    """The simulated account: routes requests to answers. Knows nothing about sockets."""

    def __init__(
        self,
        data: SeedData,
        *,
        account_id: str,
        passcode: str,
        concurrency_limit: int,
        page_cache_bytes: int,
        counts_pending_polls: int,
    ) -> None:
        self.data = data
        self.account_id = account_id
        self.passcode = passcode
        self.faults = FaultControl()
        self.stats = SimulatorStats(concurrency_limit)
        self.stopping = threading.Event()
        self._secret = secrets.token_bytes(16)
        self._pages: BoundedCache[tuple[Any, ...], bytes] = BoundedCache(page_cache_bytes, len)
        self._profile_lists: BoundedCache[tuple[Any, ...], list[tuple[int, Any]]] = BoundedCache(32)
        self._counts_pending_polls = counts_pending_polls
        self._count_requests: dict[int, list[int]] = {}
        self._count_ids = itertools.count(int(time.time()))
        self._count_lock = threading.Lock()

    # -- cursors -----------------------------------------------------------------------------

    def encode_cursor(self, query: _Query) -> str:
        payload = orjson.dumps(
            [
                query.kind, query.event_name, query.from_day.isoformat(), query.to_day.isoformat(),
                query.batch_size, list(query.flags), query.issued_at, query.offset,
            ]
        )  # fmt: skip
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]
        token = _CURSOR_PREFIX + base64.b64encode(payload + signature).decode()
        # The API hands cursors out percent-encoded; clients must send them back exactly so.
        return quote(token, safe="")

    def decode_cursor(self, received: str) -> _Query | None:
        """The query behind a cursor (already percent-decoded once by the query parser), or None."""
        if not received.startswith(_CURSOR_PREFIX):
            return None
        try:
            raw = base64.b64decode(received[len(_CURSOR_PREFIX) :], validate=True)
        except ValueError:
            return None
        payload, signature = raw[:-12], raw[-12:]
        if not hmac.compare_digest(signature, hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]):
            return None
        kind, event_name, from_day, to_day, batch_size, flags, issued_at, offset = orjson.loads(payload)
        return _Query(
            kind,
            event_name,
            dt.date.fromisoformat(from_day),
            dt.date.fromisoformat(to_day),
            batch_size,
            (flags[0], flags[1], flags[2]),
            issued_at,
            offset,
        )

    # -- routing ------------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> _Answer:
        if method == "GET" and content_type:
            return _incorrect_usage("GET requests carry no Content-Type")
        if path == "/getSchema":
            if method != "GET":
                return _json_answer(405, {"status": "fail", "error": "Method not allowed: use GET"})
            if query.get("type", [""])[0] != "events":
                return _incorrect_usage("getSchema needs type=events")
            return _json_answer(
                200, {"status": "success", "events": [{"name": name} for name in self.data.event_names()]}
            )
        if path in ("/1/events.json", "/1/profiles.json"):
            kind = "events" if path == "/1/events.json" else "profiles"
            if method == "POST":
                return self._start_export(kind, query, body, content_type)
            if method == "GET":
                return self._page(kind, query)
            return _json_answer(405, {"status": "fail", "error": "Method not allowed: use POST or GET"})
        if path == "/1/counts/events.json":
            if method == "POST":
                return self._start_count(body, content_type)
            if method == "GET":
                return self._poll_count(query)
            return _json_answer(405, {"status": "fail", "error": "Method not allowed: use POST or GET"})
        return _json_answer(404, {"status": "fail", "error": f"Not found: {path}"})

    def _parse_body(self, body: bytes, content_type: str) -> tuple[str, dt.date, dt.date] | _Answer:
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _incorrect_usage("POST needs 'Content-Type: application/json'")
        try:
            request = orjson.loads(body)
            event_name = request["event_name"]
            if not isinstance(event_name, str):
                raise ValueError("'event_name' must be a string")
            from_day, to_day = _yyyymmdd(request["from"], "from"), _yyyymmdd(request["to"], "to")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return _incorrect_usage(f"body must be {{'event_name', 'from', 'to'}} ({error})")
        if from_day > to_day:
            return _incorrect_usage("'from' is after 'to'")
        return event_name, from_day, to_day

    def _start_export(
        self, kind: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> _Answer:
        parsed = self._parse_body(body, content_type)
        if isinstance(parsed, _Answer):
            return parsed
        event_name, from_day, to_day = parsed
        try:
            batch_size = int(query.get("batch_size", [str(DEFAULT_BATCH_SIZE)])[0])
        except ValueError:
            return _incorrect_usage("batch_size must be an integer")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            return _incorrect_usage(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")

        def flag(name: str, default: bool) -> bool:
            return query.get(name, ["true" if default else "false"])[0].lower() == "true"

        if not self.data.is_exportable(event_name):
            return _Answer(400, [_NOT_ALLOWED])
        flags = (flag("profile", True), flag("events", True), flag("app", False))
        cursor_query = _Query(kind, event_name, from_day, to_day, batch_size, flags, time.time())
        return _json_answer(200, {"status": "success", "cursor": self.encode_cursor(cursor_query)})

    def _page(self, kind: str, query: dict[str, list[str]]) -> _Answer:
        received = query.get("cursor", [""])[0]
        if not received:
            return _incorrect_usage("GET needs the cursor from the POST answer")
        state = self.decode_cursor(received)
        if state is None or state.kind != kind:
            return _incorrect_usage("invalid cursor (send it back exactly as received, never encoded again)")
        ttl = self.faults.cursor_ttl_seconds
        if self.faults.expire_cursors or (ttl is not None and time.time() - state.issued_at > ttl):
            return _Answer(400, [_EXPIRED])
        if kind == "events":
            total = sum(
                self._arrived(state.event_name, day) for day in day_range(state.from_day, state.to_day)
            )
            records, count = self._events_page(state, total)
        else:
            profiles = self._profile_list(state)
            total = len(profiles)
            records, count = self._profiles_page(state, profiles)
        self.stats.count_page(count)
        next_offset = state.offset + state.batch_size
        if next_offset >= total:
            return _Answer(200, [b'{"status":"success","records":', records, b"}"])
        if self.faults.stall_cursor:
            next_cursor = quote(received, safe="")
        else:
            next_cursor = self.encode_cursor(dataclasses.replace(state, offset=next_offset))
        if self.faults.page_shape == "partial":
            head = b'{"status":"partial","cursor":"'
        else:
            head = b'{"status":"success","next_cursor":"'
        return _Answer(200, [head, next_cursor.encode(), b'","records":', records, b"}"])

    def _events_page(self, state: _Query, total: int) -> tuple[bytes, int]:
        start, stop = state.offset, min(state.offset + state.batch_size, total)

        def render() -> bytes:
            include_profile, include_event_props, app_fields = state.flags
            parts: list[bytes] = []
            day_start = 0
            for day in day_range(state.from_day, state.to_day):
                count = self._arrived(state.event_name, day)
                if day_start + count > start and day_start < stop:
                    parts += self.data.event_record_bytes(
                        state.event_name,
                        day,
                        max(start - day_start, 0),
                        min(stop - day_start, count),
                        include_profile=include_profile,
                        include_event_props=include_event_props,
                        app_fields=app_fields,
                    )
                day_start += count
                if day_start >= stop:
                    break
            return b"[" + b",".join(parts) + b"]"

        late = tuple(sorted(self.faults.late_events.items()))  # pages differ while events are late
        return self._pages.get_or_build((*state.page_key(), late), render), max(stop - start, 0)

    def _profile_list(self, state: _Query) -> list[tuple[int, Any]]:
        key = (state.event_name, state.from_day, state.to_day)
        if not self.data.is_exportable(state.event_name):
            return []
        return self._profile_lists.get_or_build(
            key, lambda: list(self.data.profile_stats(state.event_name, state.from_day, state.to_day).items())
        )

    def _profiles_page(self, state: _Query, profiles: list[tuple[int, Any]]) -> tuple[bytes, int]:
        chosen = profiles[state.offset : state.offset + state.batch_size]

        def render() -> bytes:
            return (
                b"["
                + b",".join(
                    self.data.profile_record_bytes(state.event_name, user, stats) for user, stats in chosen
                )
                + b"]"
            )

        return self._pages.get_or_build(state.page_key(), render), len(chosen)

    def _arrived(self, event_name: str, day: dt.date) -> int:
        """Records of an event and day the account holds now: all but those still late."""
        late = self.faults.late_events.get((event_name, day.strftime("%Y%m%d")), 0)
        return max(0, self.data.event_count(event_name, day) - late)

    def _start_count(self, body: bytes, content_type: str) -> _Answer:
        parsed = self._parse_body(body, content_type)
        if isinstance(parsed, _Answer):
            return parsed
        event_name, from_day, to_day = parsed
        count = sum(self._arrived(event_name, day) for day in day_range(from_day, to_day))
        count += self.faults.count_offset
        with self._count_lock:
            request_id = next(self._count_ids)
            self._count_requests[request_id] = [count, self._counts_pending_polls]
            if len(self._count_requests) > 10_000:
                del self._count_requests[min(self._count_requests)]
        return _json_answer(200, {"status": "partial", "req_id": request_id})

    def _poll_count(self, query: dict[str, list[str]]) -> _Answer:
        try:
            request_id = int(query.get("req_id", [""])[0])
        except ValueError:
            return _incorrect_usage("GET needs the req_id from the POST answer")
        with self._count_lock:
            found = self._count_requests.get(request_id)
            if found is None:
                return _incorrect_usage(f"unknown req_id {request_id}")
            if found[1] > 0:
                found[1] -= 1
                return _json_answer(200, {"status": "partial", "req_id": request_id})
        return _json_answer(200, {"status": "success", "count": found[0]})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CleverTapSimulator/1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK can add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)
        self.server.api.stats.count_connection()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        if split.path.startswith("/_simulator/"):
            self._send(self._control(method, split.path, body))
            return
        api.stats.count_request()
        account = self.headers.get("X-CleverTap-Account-Id", "")
        passcode = self.headers.get("X-CleverTap-Passcode", "")
        credentials_ok = hmac.compare_digest(
            account.encode(), api.account_id.encode()
        ) and hmac.compare_digest(passcode.encode(), api.passcode.encode())
        if api.faults.invalid_credentials or not credentials_ok:
            self._send(_Answer(401, [_INVALID_CREDENTIALS]))
            return
        is_read = split.path in _READ_PATHS
        if is_read and not api.stats.enter_read():
            self._send(_Answer(429, [_TOO_MANY]))
            return
        try:
            delay = api.faults.response_delay_seconds
            fault = api.faults.take()
            if fault is Fault.SLOW:
                delay += api.faults.slow_seconds
            if delay > 0:
                api.stopping.wait(delay)
            answer = self._faulty_answer(fault)
            if answer is None:
                answer = api.answer(method, split.path, query, body, self.headers.get("Content-Type", ""))
                answer.truncate = fault is Fault.TRUNCATED_BODY
        finally:
            # The slot is free once the answer is ready, before its bytes go out: a client that
            # has read its whole answer must never find its slot still taken.
            if is_read:
                api.stats.leave_read()
        self._send(answer)

    @staticmethod
    def _faulty_answer(fault: Fault | None) -> _Answer | None:
        if fault is Fault.NOT_READY:
            return _Answer(202, [_IN_PROGRESS])
        if fault is Fault.NOT_READY_IN_BODY:
            return _Answer(200, [_IN_PROGRESS])
        if fault is Fault.TOO_MANY_REQUESTS:
            return _Answer(429, [_TOO_MANY])
        if fault is Fault.TOO_MANY_REQUESTS_IN_BODY:
            return _Answer(200, [_TOO_MANY])
        if fault is Fault.SERVER_ERROR:
            return _Answer(500, [_SERVER_ERROR_PAGE], content_type="text/html")
        if fault is Fault.SERVICE_UNAVAILABLE:
            return _Answer(503, [_SERVICE_UNAVAILABLE])
        if fault is Fault.CONNECTION_RESET:
            return _Answer(0, [], reset=True)
        return None

    def _control(self, method: str, path: str, body: bytes) -> _Answer:
        api = self.server.api
        if path == "/_simulator/stats" and method == "GET":
            return _json_answer(200, {**api.stats.snapshot(), "faults_injected": dict(api.faults.injected)})
        if path == "/_simulator/stats" and method == "DELETE":
            api.stats.reset()
            return _json_answer(200, {"status": "success"})
        if path == "/_simulator/faults" and method == "POST":
            try:
                api.faults.configure(orjson.loads(body or b"{}"))
            except (ValueError, TypeError) as error:
                return _json_answer(400, {"status": "fail", "error": str(error)})
            return _json_answer(
                200, {"status": "success", "pending": [f.value for f in api.faults.pending()]}
            )
        return _json_answer(
            404,
            {
                "status": "fail",
                "error": "control endpoints: GET and DELETE /_simulator/stats, POST /_simulator/faults",
            },
        )

    def _send(self, answer: _Answer) -> None:
        if answer.reset:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        length = sum(map(len, answer.body))
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(length))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if answer.truncate:
                self.wfile.write(b"".join(answer.body)[: length // 2])
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            for part in answer.body:
                self.wfile.write(part)
        except OSError:
            # The client gave up (timeout) or vanished; nothing left to tell it.
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Benchmarks open a few keep-alive connections; tests open many short-lived ones.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: _Api, *, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_open_connections(self) -> None:
        """End kept-alive connections so no handler thread outlives the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return  # a client hanging up mid-answer is normal (timeouts, truncation tests)
        super().handle_error(request, client_address)


class SimulatorServer:
    """A running CleverTap API simulator on a real socket.

    :param host: interface to listen on.
    :param port: port to listen on; 0 picks a free one (see :attr:`url`).
    :param seed: seed of the generated data; the same seed gives the same records.
    :param timezone: the account's IANA time zone; ``ts`` values are local times in it.
    :param events_per_day: average records per event per day (before each event's weight);
        millions are fine, pages are generated on demand.
    :param days: whole days of history before today (today holds data up to the start time).
    :param population: number of distinct users (profiles) doing the events.
    :param as_of: the simulator's "now" (timezone-aware); defaults to the real current time.
    :param extra_events: synthetic exportable events ("Custom Event 1", ...) listed after the
        account's usual ones, each with weight 0.5 (see
        :func:`~ct_airflow_provider.testing.seed_data.event_specs`); 0 keeps the usual account.
    :param account_id: the account id clients must send.
    :param passcode: the passcode clients must send; random when not given.
    :param concurrency_limit: concurrent read requests allowed per account (CleverTap: 3).
    :param page_cache_bytes: memory for rendered pages, so repeated reads cost no rendering.
    :param counts_pending_polls: how many polls of a counts request answer "partial" first.
    :param verbose: log every request to stderr.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 20240601,
        timezone: str = "Asia/Kolkata",
        events_per_day: int = 300,
        days: int = 60,
        population: int = 2000,
        as_of: dt.datetime | None = None,
        extra_events: int = 0,
        account_id: str = DEFAULT_ACCOUNT_ID,
        passcode: str | None = None,
        concurrency_limit: int = MAX_CONCURRENT_REQUESTS,
        page_cache_bytes: int = 64 << 20,
        counts_pending_polls: int = 1,
        verbose: bool = False,
    ) -> None:
        data = SeedData(
            seed=seed,
            timezone=timezone,
            events_per_day=events_per_day,
            days=days,
            population=population,
            as_of=as_of,
            extra_events=extra_events,
        )
        self.account_id = account_id
        self.passcode = passcode or "SIM-" + secrets.token_hex(6).upper()
        self.timezone = timezone
        self._api = _Api(
            data,
            account_id=account_id,
            passcode=self.passcode,
            concurrency_limit=concurrency_limit,
            page_cache_bytes=page_cache_bytes,
            counts_pending_polls=counts_pending_polls,
        )
        #: Fault switches (see :class:`FaultControl`).
        self.faults: FaultControl = self._api.faults
        #: Counters: requests served, max concurrency observed, ...
        self.stats: SimulatorStats = self._api.stats
        #: What the account holds, for comparing an export against.
        self.truth = GroundTruth(data)
        self._server = _Server((host, port), self._api, verbose=verbose)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return (
            f"SimulatorServer(url={self.url!r}, account_id={self.account_id!r}, timezone={self.timezone!r})"
        )

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:41234``; use it as the connection's host."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimulatorServer:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="clevertap-simulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections and release the port."""
        self._api.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_open_connections()
        self._server.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def connection_uri(self, region: str | None = None) -> str:
        """The Airflow connection URI for this simulator (``clevertap://...``).

        :param region: optional region extra to include (the host override wins over it).
        """
        extras = f"timezone={quote(self.timezone, safe='')}"
        if region:
            extras += f"&region={quote(region, safe='')}"
        return f"clevertap://http://{quote(self.account_id, safe='')}:{quote(self.passcode, safe='')}@{self.url.removeprefix('http://')}/?{extras}"

    def airflow_conn_env(self) -> str:
        """The value for ``AIRFLOW_CONN_<ID>``: a JSON connection of type ``clevertap`` pointing here."""
        return orjson.dumps(
            {
                "conn_type": "clevertap",
                "description": "CleverTap API simulator (ct_airflow_provider.testing.simulator)",
                "host": self.url,
                "login": self.account_id,
                "password": self.passcode,
                "extra": {"timezone": self.timezone},
            }
        ).decode()


@contextlib.contextmanager
def run_simulator(**options: Any) -> Iterator[SimulatorServer]:
    """Run a simulator on a free loopback port for the duration of a ``with`` block.

    :param options: any :class:`SimulatorServer` keyword argument.
    """
    server = SimulatorServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ct_airflow_provider.testing.simulator",
        description="Run the CleverTap API simulator until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    parser.add_argument("--seed", type=int, default=20240601, help="data seed (default 20240601)")
    parser.add_argument(
        "--timezone", default="Asia/Kolkata", help="account IANA time zone (default Asia/Kolkata)"
    )
    parser.add_argument("--events-per-day", type=int, default=300, help="average records per event per day")
    parser.add_argument(
        "--days", type=int, default=60, help="whole days of history before today (default 60)"
    )
    parser.add_argument("--population", type=int, default=2000, help="distinct users (default 2000)")
    parser.add_argument(
        "--extra-events",
        type=int,
        default=0,
        help='synthetic exportable events "Custom Event 1", ... added to the account (default 0)',
    )
    parser.add_argument(
        "--account-id", default=DEFAULT_ACCOUNT_ID, help=f"account id (default {DEFAULT_ACCOUNT_ID})"
    )
    parser.add_argument("--passcode", default=None, help="passcode (default: random, printed at start)")
    parser.add_argument(
        "--page-cache-mb", type=int, default=64, help="memory for rendered pages (default 64)"
    )
    parser.add_argument(
        "--random-fault-rate",
        type=float,
        default=0.0,
        help="probability of a transient fault per request (demos)",
    )
    parser.add_argument(
        "--page-shape",
        choices=("documented", "partial"),
        default="documented",
        help="shape of intermediate pages",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``ct-simulator``): run the simulator in the foreground."""
    args = _parser().parse_args(argv)
    try:
        server = SimulatorServer(
            host=args.host,
            port=args.port,
            seed=args.seed,
            timezone=args.timezone,
            events_per_day=args.events_per_day,
            days=args.days,
            population=args.population,
            extra_events=args.extra_events,
            account_id=args.account_id,
            passcode=args.passcode,
            page_cache_bytes=args.page_cache_mb << 20,
            verbose=args.verbose,
        )
    except OSError as error:
        print(
            f"Cannot listen on {args.host}:{args.port} ({error.strerror or error}): pick another --port, "
            "or --port 0 for any free one.",
            file=sys.stderr,
        )
        return 2
    except ValueError as error:
        print(f"Cannot start the simulator: {error}", file=sys.stderr)
        return 2
    server.faults.random_rate = args.random_fault_rate
    server.faults.page_shape = args.page_shape
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    print(f"CleverTap simulator listening on {server.url}", flush=True)
    print(f"  account id (login):  {server.account_id}")
    print(f"  passcode (password): {server.passcode}")
    print(f"  time zone:           {server.timezone}")
    print(f"  data:                {server.truth.days()[0]} to {server.truth.today} (today up to now)")
    print(f"  connection:          export AIRFLOW_CONN_CLEVERTAP_DEFAULT='{server.airflow_conn_env()}'")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("CleverTap simulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
