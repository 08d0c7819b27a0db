"""Deterministic CleverTap-shaped data for the simulator, generated on demand from a seed.

Nothing here holds an account's events in memory. Every event record is a pure function of
``(seed, event name, day, index)``: a 64-bit hash of those picks the user, the property variant,
the session and the second of the day. Property variants, sessions and users are small pools
built once from the seed and kept as pre-serialised JSON fragments, so a page of 5,000 records is
a few byte joins rather than 5,000 ``json.dumps`` calls. The ground truth a test compares against
is those same bytes parsed back, so the simulator and the truth cannot disagree.

The pools carry the awkwardness of real data: unicode (accents, CJK, right-to-left, emoji),
quotes, commas, newlines and tabs inside strings, numbers, booleans, lists, nested objects, keys
present in some records and not others, and keys whose value type changes between records.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

_MASK64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

#: How many property variants each event draws from; prime so it shares no factor with the pools.
_PROPERTY_VARIANTS = 1021
_SESSION_VARIANTS = 257


@dataclass(frozen=True)
class EventSpec:
    """One event name of the simulated account.

    :param name: the event name exactly as CleverTap lists it (may hold spaces, tabs, '/').
    :param weight: share of ``events_per_day`` this event gets on an average day.
    :param exportable: False for events CleverTap refuses to export (notification events).
    """

    name: str
    weight: float
    exportable: bool = True


#: The simulated account's events, in the order ``getSchema`` lists them.
EVENT_SPECS: tuple[EventSpec, ...] = (
    EventSpec("App Launched", 1.0),
    EventSpec("Product Viewed", 0.8),
    EventSpec("Added To Cart/Wishlist", 0.4),
    EventSpec("Charged", 0.3),
    EventSpec("Search  Performed", 0.5),
    EventSpec("Reward\tClaimed", 0.1),
    EventSpec("Réservation Confirmée", 0.15),
    EventSpec("Notification Viewed", 0.6, exportable=False),
)

#: Share of ``events_per_day`` each synthetic extra event gets (see :func:`event_specs`).
EXTRA_EVENT_WEIGHT = 0.5


def extra_event_name(number: int) -> str:
    """The name of synthetic extra event ``number`` (from 1): ``"Custom Event 1"``, ..."""
    return f"Custom Event {number}"


def event_specs(extra_events: int = 0) -> tuple[EventSpec, ...]:
    """The account's events: :data:`EVENT_SPECS`, then ``extra_events`` synthetic exportable ones.

    Extra event ``n`` is named :func:`extra_event_name` ``(n)``, has weight
    :data:`EXTRA_EVENT_WEIGHT`, and draws its properties from the pool of the ``EVENT_SPECS``
    entry at its index modulo ``len(EVENT_SPECS)`` ("Custom Event 1" like "App Launched", "Custom
    Event 2" like "Product Viewed", ...); its records still differ, as their hashes include the name.
    """
    if extra_events < 0:
        raise ValueError(f"extra_events must be 0 or more, got {extra_events}")
    extras = tuple(EventSpec(extra_event_name(n), EXTRA_EVENT_WEIGHT) for n in range(1, extra_events + 1))
    return EVENT_SPECS + extras


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A thread-safe least-recently-used cache bounded by a total cost (entries or bytes).

    :param max_cost: the most total cost kept; 0 disables caching.
    :param cost: the cost of one value (1 by default, ``len`` for byte strings).
    """

    def __init__(self, max_cost: int, cost: Callable[[V], int] | None = None) -> None:
        self._max_cost = max_cost
        self._cost = cost or (lambda _value: 1)
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """Return the cached value for ``key``, building (outside the lock) and keeping it if absent."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found[0]
        value = build()
        cost = self._cost(value)
        if cost > self._max_cost:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (value, cost)
                self._total += cost
                while self._total > self._max_cost:
                    _, (_, evicted_cost) = self._entries.popitem(last=False)
                    self._total -= evicted_cost
        return value


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of an integer."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _stable_key(*parts: object) -> int:
    """A 64-bit key from any printable parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class _DayClock:
    """Maps epoch seconds of one local day to CleverTap's 14-digit local ``ts``, DST included."""

    ymd: int
    utc_start: int
    seconds_in_day: int
    offset_before: int
    offset_after: int
    transition: int

    def local_ts(self, epoch: int) -> int:
        offset = self.offset_before if epoch < self.transition else self.offset_after
        # Seconds since local midnight on the wall clock; stays in [0, 86400) on DST days too.
        wall = epoch + offset - self.utc_start - self.offset_before
        hours, rest = divmod(wall, 3600)
        minutes, seconds = divmod(rest, 60)
        return self.ymd * 1_000_000 + hours * 10_000 + minutes * 100 + seconds


def _day_clock(day: dt.date, zone: ZoneInfo) -> _DayClock:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + dt.timedelta(days=1)
    end = dt.datetime(following.year, following.month, following.day, tzinfo=zone)
    utc_start, utc_end = int(start.timestamp()), int(end.timestamp())

    def offset_at(epoch: int) -> int:
        delta = dt.datetime.fromtimestamp(epoch, zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    before, after = offset_at(utc_start), offset_at(utc_end - 1)
    transition = utc_end
    if before != after:
        low, high = utc_start, utc_end - 1
        while low < high:
            middle = (low + high) // 2
            if offset_at(middle) == before:
                low = middle + 1
            else:
                high = middle
        transition = low
    return _DayClock(
        ymd=day.year * 10_000 + day.month * 100 + day.day,
        utc_start=utc_start,
        seconds_in_day=utc_end - utc_start,
        offset_before=before,
        offset_after=after,
        transition=transition,
    )


@dataclass(frozen=True)
class _EventDay:
    """Everything needed to render any record of one event on one day."""

    event_index: int
    day: dt.date
    #: Records available (today: only those up to "now").
    count: int
    #: Records the whole day holds; the day's seconds are spread over these, so a record's second
    #: does not depend on how much of today has passed.
    slots: int
    key: int
    clock: _DayClock

    def record_epoch_and_hash(self, index: int) -> tuple[int, int]:
        """Epoch second and 64-bit hash of record ``index``; epochs never decrease with the index."""
        mixed = _mix64(self.key + (index + 1) * _GOLDEN64)
        span = self.clock.seconds_in_day
        slot = index * span // self.slots
        width = max(1, (index + 1) * span // self.slots - slot)
        return self.clock.utc_start + slot + (mixed >> 40) % width, mixed


@dataclass(frozen=True)
class _User:
    profile_fragment: bytes
    profile_fragment_with_app: bytes
    identity: str | None
    object_id: str
    profile_record_head: bytes
    platform_info: bytes


@dataclass(frozen=True)
class ProfileStats:
    """How often one user did one event in a date range, as CleverTap's profile export reports it."""

    count: int
    first_seen: int
    last_seen: int


# Strings that break naive CSV, XML and JSON-lines writers; each one is realistic on its own.
_AWKWARD_TEXTS: tuple[str, ...] = (
    "plain text",
    "comma, separated, value",
    'she said "hello"',
    "it's O'Brien's",
    "line one\nline two",
    "tab\tseparated",
    "carriage\r\nreturn",
    "Zoë Saldaña café",
    "北京市朝阳区",
    "مرحبا بالعالم",
    "emoji 🎉🛒 party",
    "<b>bold</b> & <i>amp</i>",
    "back\\slash",
    "  leading and trailing spaces  ",
    "semi;colon|pipe",
    "",
    "0012345",
    "=SUM(A1:A2)",
    "Ünïcödé \u201ccurly\u201d \u2018quotes\u2019 \u2014 dash",
    "null",
)

_FIRST_NAMES = (
    "Zoë", "Ana", "李", "Måns", "José", "Ngọc", "محمد", "Aoife", "Renée", "Søren", "Priya", "Jean-Luc",
)  # fmt: skip
_LAST_NAMES = (
    "O'Brien", 'Pérez "Anita"', "雷", "Ødegård", "García, Jr.", "Ánh", "علي", "Ní Bhriain", "Smith",
    "Müller", "Iyer\tRao", "van der Berg",
)  # fmt: skip
_CITIES = ("São Paulo", "Zürich", "Bengaluru", "東京", "Reykjavík", "New York, NY", "Kraków", "Dubai")
_CATEGORIES = ("Mens Watch", "Women's Shoes", "Kids, Toys & Games", "Électronique", 'TV 55"', "家居")
_PRODUCTS = (
    "Casio Chronograph Watch", 'Samsung 55" QLED', "Levi's 501®", "Nike Air Max 90",
    "Café Crème, 1kg", "LEGO® Star Wars™", "Kindle\tPaperwhite", "iPhone 15 Pro",
)  # fmt: skip
_PLATFORMS = ("Android", "iOS", "Web")
_MAKES = (("Samsung", "SM-G991B"), ("Apple", "iPhone14,2"), ("Google", "Pixel 8"), ("Xiaomi", "M2101K6G"))
_UTM_SOURCES = ("google", "facebook", "newsletter", "direct", "partner, inc", 'camp "A"')


class SeedData:
    """The simulated account's data: event names, events per day and profiles, all from one seed.

    :param seed: any integer; the same seed always gives the same records.
    :param timezone: the account's IANA time zone; ``ts`` values are local wall-clock times in it.
    :param events_per_day: average records per event per day, before each event's weight.
    :param days: how many whole days before today hold data; today holds data up to ``as_of``.
    :param population: how many distinct users do the events (profiles repeat across days).
    :param as_of: the simulator's "now"; defaults to the real current time. Fixed at creation so
        that the data does not change while a test or an export reads it.
    :param extra_events: synthetic exportable events listed after :data:`EVENT_SPECS`
        (``"Custom Event 1"``, ...; see :func:`event_specs`), for accounts with many events.
    """

    def __init__(
        self,
        *,
        seed: int = 20240601,
        timezone: str = "Asia/Kolkata",
        events_per_day: int = 300,
        days: int = 60,
        population: int = 2000,
        as_of: dt.datetime | None = None,
        extra_events: int = 0,
    ) -> None:
        if events_per_day < 0:
            raise ValueError(f"events_per_day must be 0 or more, got {events_per_day}")
        if population < 1:
            raise ValueError(f"population must be at least 1, got {population}")
        if days < 0:
            raise ValueError(f"days must be 0 or more, got {days}")
        self.seed = seed
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r}: use an IANA name such as Asia/Kolkata or America/New_York"
            ) from None
        self.timezone = timezone
        self.events_per_day = events_per_day
        self.population = population
        now = as_of if as_of is not None else dt.datetime.now(dt.timezone.utc)
        if now.tzinfo is None:
            raise ValueError("as_of must be timezone-aware, e.g. datetime.now(timezone.utc)")
        self.as_of = now.astimezone(self.zone)
        self.today = self.as_of.date()
        self.first_day = self.today - dt.timedelta(days=days)
        self._as_of_epoch = int(self.as_of.timestamp())
        self._specs = event_specs(extra_events)
        self._event_index = {spec.name: index for index, spec in enumerate(self._specs)}
        self._users, self._properties, self._sessions = _pools(seed, population)
        self._event_days: BoundedCache[tuple[int, dt.date], _EventDay] = BoundedCache(4096)
        self._profile_stats: BoundedCache[tuple[int, dt.date], dict[int, ProfileStats]] = BoundedCache(512)

    # -- what exists ---------------------------------------------------------------------------

    def event_names(self) -> list[str]:
        """Every event name ``getSchema`` lists, including those that refuse export."""
        return [spec.name for spec in self._specs]

    def exportable_event_names(self) -> list[str]:
        """Event names that can be exported ("All user events")."""
        return [spec.name for spec in self._specs if spec.exportable]

    def is_exportable(self, event_name: str) -> bool:
        """False for events CleverTap refuses to export; unknown names export (as nothing)."""
        index = self._event_index.get(event_name)
        return index is None or self._specs[index].exportable

    def days(self) -> list[dt.date]:
        """The days holding data, oldest first; the last one is today (partial, up to ``as_of``)."""
        return [self.first_day + dt.timedelta(days=n) for n in range((self.today - self.first_day).days + 1)]

    def event_count(self, event_name: str, day: dt.date) -> int:
        """How many records ``event_name`` has on ``day`` (0 outside the data's days)."""
        event_day = self._event_day(event_name, day)
        return event_day.count if event_day is not None else 0

    # -- event records -------------------------------------------------------------------------

    def event_record_bytes(
        self,
        event_name: str,
        day: dt.date,
        start: int,
        stop: int,
        *,
        include_profile: bool = True,
        include_event_props: bool = True,
        app_fields: bool = False,
    ) -> list[bytes]:
        """Records ``start``..``stop`` (exclusive) of one event and day, each a serialised JSON object.

        :param include_profile: the API's ``profile`` flag.
        :param include_event_props: the API's ``events`` flag.
        :param app_fields: the API's ``app`` flag: device fields inside the profile.
        """
        event_day = self._event_day(event_name, day)
        if event_day is None:
            return []
        stop = min(stop, event_day.count)
        users, population = self._users, self.population
        # Extra events (past EVENT_SPECS) reuse the property pools of EVENT_SPECS by index.
        properties = self._properties[event_day.event_index % len(EVENT_SPECS)]
        sessions = self._sessions
        clock_ts = event_day.clock.local_ts
        locate = event_day.record_epoch_and_hash
        out: list[bytes] = []
        append = out.append
        for index in range(start, stop):
            epoch, mixed = locate(index)
            parts = [b"{"]
            if include_profile:
                user = users[mixed % population]
                parts += (
                    b'"profile":',
                    user.profile_fragment_with_app if app_fields else user.profile_fragment,
                    b",",
                )
            parts += (b'"ts":', b"%d" % clock_ts(epoch))
            if include_event_props:
                parts += (b',"event_props":', properties[(mixed >> 12) % _PROPERTY_VARIANTS])
            parts += (
                b',"session_props":{"session_id":',
                b"%d" % (mixed >> 11),
                b",",
                sessions[(mixed >> 24) % _SESSION_VARIANTS],
                b"}}",
            )
            append(b"".join(parts))
        return out

    def events(self, event_name: str, day: dt.date) -> Iterator[dict[str, Any]]:
        """The records the events API returns for one event and day, parsed, in the API's order."""
        count = self.event_count(event_name, day)
        for start in range(0, count, 5000):
            for raw in self.event_record_bytes(event_name, day, start, start + 5000):
                yield orjson.loads(raw)

    # -- profiles -------------------------------------------------------------------------------

    def profile_stats(self, event_name: str, from_day: dt.date, to_day: dt.date) -> dict[int, ProfileStats]:
        """Per user number: how often, first and last time (epoch seconds) they did the event."""
        merged: dict[int, ProfileStats] = {}
        day = from_day
        while day <= to_day:
            for user, stats in self._day_profile_stats(event_name, day).items():
                seen = merged.get(user)
                if seen is None:
                    merged[user] = stats
                else:
                    merged[user] = ProfileStats(
                        seen.count + stats.count,
                        min(seen.first_seen, stats.first_seen),
                        max(seen.last_seen, stats.last_seen),
                    )
            day += dt.timedelta(days=1)
        return dict(sorted(merged.items()))

    def profile_record_bytes(self, event_name: str, user_number: int, stats: ProfileStats) -> bytes:
        """One profile record as the profiles API returns it, for a user who did ``event_name``."""
        user = self._users[user_number]
        events = orjson.dumps(
            {event_name: {"count": stats.count, "first_seen": stats.first_seen, "last_seen": stats.last_seen}}
        )
        return b"".join(
            (user.profile_record_head, b',"events":', events, b',"platformInfo":', user.platform_info, b"}")
        )

    def profiles(self, event_name: str, from_day: dt.date, to_day: dt.date) -> Iterator[dict[str, Any]]:
        """The records the profiles API returns for an event and date range, parsed, in the API's order."""
        if not self.is_exportable(event_name):
            return
        for user, stats in self.profile_stats(event_name, from_day, to_day).items():
            yield orjson.loads(self.profile_record_bytes(event_name, user, stats))

    # -- internals ------------------------------------------------------------------------------

    def _event_day(self, event_name: str, day: dt.date) -> _EventDay | None:
        event_index = self._event_index.get(event_name)
        if event_index is None or not (self.first_day <= day <= self.today):
            return None
        event_day = self._event_days.get_or_build(
            (event_index, day), lambda: self._build_event_day(event_index, day)
        )
        return event_day if event_day.count else None

    def _build_event_day(self, event_index: int, day: dt.date) -> _EventDay:
        spec = self._specs[event_index]
        key = _stable_key(self.seed, spec.name, day.isoformat())
        variation = 0.75 + 0.5 * ((_mix64(key) >> 11) / (1 << 53))
        count = round(self.events_per_day * spec.weight * variation)
        clock = _day_clock(day, self.zone)
        event_day = _EventDay(event_index, day, count, count, key, clock)
        if day == self.today and count:
            # Today only holds what has happened so far: the records whose second is not after now.
            available = bisect.bisect_right(
                range(count), self._as_of_epoch, key=lambda index: event_day.record_epoch_and_hash(index)[0]
            )
            event_day = _EventDay(event_index, day, available, count, key, clock)
        return event_day

    def _day_profile_stats(self, event_name: str, day: dt.date) -> dict[int, ProfileStats]:
        event_day = self._event_day(event_name, day)
        if event_day is None:
            return {}
        found = event_day

        def build() -> dict[int, ProfileStats]:
            counts: dict[int, list[int]] = {}
            for index in range(found.count):
                epoch, mixed = found.record_epoch_and_hash(index)
                user = mixed % self.population
                seen = counts.get(user)
                if seen is None:
                    counts[user] = [1, epoch, epoch]
                else:
                    seen[0] += 1
                    seen[2] = epoch  # epochs never decrease with the index
            return {user: ProfileStats(*values) for user, values in counts.items()}

        return self._profile_stats.get_or_build((found.event_index, day), build)

    @staticmethod
    def _make_user(rng: random.Random, number: int) -> _User:
        object_id = f"__g{rng.getrandbits(96):024x}"
        has_identity = rng.random() > 0.15
        # Identities look like what apps send: numeric ids with leading zeros, e-mails, UUID-ish.
        identity = (
            rng.choice((f"{number:07d}", f"user{number}@example.com", f"{rng.getrandbits(64):016x}"))
            if has_identity
            else None
        )
        name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
        email = f"user.{number}+ct@example.com" if rng.random() > 0.2 else None
        phone = f"+91{rng.randrange(7_000_000_000, 9_999_999_999)}" if rng.random() > 0.3 else None
        platform = rng.choice(_PLATFORMS)
        profile_data: dict[str, Any] = {"Customer Type": rng.choice(("Silver", "Gold", "Platinum, VIP"))}
        if rng.random() < 0.7:
            # Same key, different types between profiles, as apps send whatever they have.
            profile_data["Age"] = rng.randrange(18, 80) if rng.random() < 0.8 else str(rng.randrange(18, 80))
        if rng.random() < 0.5:
            profile_data["Marketing opt-in"] = rng.random() < 0.5
        if rng.random() < 0.4:
            profile_data["Favourite colours"] = rng.sample(["red", "blue", "vert", "紅", "teal, dark"], 2)
        if rng.random() < 0.5:
            profile_data["Address"] = {"city": rng.choice(_CITIES), "geo": {"lat": rng.uniform(-60, 60)}}
        if rng.random() < 0.2:
            profile_data["Notes"] = rng.choice(_AWKWARD_TEXTS)

        fragment: dict[str, Any] = {"objectId": object_id}
        if identity is not None:
            fragment["identity"] = identity
        if email is not None:
            fragment["email"] = email
        if phone is not None:
            fragment["phone"] = phone
        fragment["name"] = name
        fragment["platform"] = platform
        fragment["all_identities"] = [value for value in (identity, email) if value is not None]
        fragment["profileData"] = profile_data
        make, model = rng.choice(_MAKES)
        os_version = f"{rng.randrange(10, 18)}.{rng.randrange(0, 5)}"
        app_version = f"{rng.randrange(1, 5)}.{rng.randrange(0, 30)}.{rng.randrange(0, 9)}"
        with_app = dict(fragment, make=make, model=model, os_version=os_version, app_version=app_version)

        devices = [{"platform": platform, "os_version": os_version, "app_version": app_version,
                    "make": make, "model": model, "objectId": object_id}]  # fmt: skip
        if rng.random() < 0.25:
            other_make, other_model = rng.choice(_MAKES)
            devices.append({"platform": rng.choice(_PLATFORMS), "os_version": "17.1", "app_version": app_version,
                            "make": other_make, "model": other_model,
                            "objectId": f"__h{rng.getrandbits(96):024x}"})  # fmt: skip
        head: dict[str, Any] = {}
        if identity is not None:
            head["identity"] = identity
        if email is not None:
            head["email"] = email
        head["name"] = name
        if phone is not None:
            head["phone"] = phone
        head["profileData"] = profile_data
        return _User(
            profile_fragment=orjson.dumps(fragment),
            profile_fragment_with_app=orjson.dumps(with_app),
            identity=identity,
            object_id=object_id,
            profile_record_head=orjson.dumps(head)[:-1],
            platform_info=orjson.dumps(devices),
        )

    @staticmethod
    def _event_properties(rng: random.Random, event_name: str) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if event_name == "App Launched":
            props["CT App Version"] = f"{rng.randrange(1, 5)}.{rng.randrange(0, 30)}.{rng.randrange(0, 9)}"
            props["CT Source"] = rng.choice(("Mobile", "Web", "API"))
            props["ct_sdk_version"] = rng.choice((30107, 40200, 50001))
            # The same key arrives as a boolean from one SDK and as a string from another.
            props["ct_connected_to_wifi"] = rng.choice((True, False, "true", "false"))
            if rng.random() < 0.7:
                props["ct_latitude"] = round(rng.uniform(-60, 60), 7)
                props["ct_longitude"] = round(rng.uniform(-180, 180), 7)
            if rng.random() < 0.5:
                props["ct_network_type"] = rng.choice(("4G", "5G", "WiFi"))
            props["First Launch"] = rng.random() < 0.1
        elif event_name == "Product Viewed":
            props["Product name"] = rng.choice(_PRODUCTS)
            props["Category"] = rng.choice(_CATEGORIES)
            price = round(rng.uniform(1, 999), 2)
            props["Price"] = price if rng.random() < 0.8 else str(price)
            if rng.random() < 0.5:
                props["Rating"] = rng.randrange(1, 6)
            if rng.random() < 0.3:
                props["Tags"] = rng.sample(["sale", "new", "été", "best, seller", "限定"], 2)
        elif event_name == "Added To Cart/Wishlist":
            props["Product name"] = rng.choice(_PRODUCTS)
            props["Quantity"] = rng.randrange(1, 5)
            props["Destination"] = rng.choice(("Cart", "Wishlist"))
            if rng.random() < 0.4:
                props["Variant"] = {"size": rng.choice(("S", "M", "XL")), "colour": rng.choice(_CATEGORIES)}
        elif event_name == "Charged":
            lines = [
                (rng.choice(_PRODUCTS), rng.randrange(1, 4), round(rng.uniform(1, 300), 2))
                for _ in range(rng.randrange(1, 4))
            ]
            props["Amount"] = round(sum(quantity * price for _, quantity, price in lines), 2)
            props["Currency"] = rng.choice(("USD", "INR", "EUR", "BRL"))
            props["Payment mode"] = rng.choice(
                ("Credit card", "UPI", "Cash on delivery", "Gift card, partial")
            )
            props["Charged ID"] = rng.getrandbits(62)
            props["Items"] = [
                {"Product name": product, "Quantity": quantity, "Price": price}
                for product, quantity, price in lines
            ]
            if rng.random() < 0.2:
                props["Coupon"] = rng.choice(("SAVE10", "été-20", 'QUOTE"D'))
        elif event_name == "Search  Performed":
            props["Query"] = rng.choice(_AWKWARD_TEXTS)
            props["Results"] = rng.randrange(0, 500)
            if rng.random() < 0.5:
                props["Filters"] = {
                    "brand": rng.sample(["Casio", "Levi's", "Nike"], 2),
                    "price": {"min": rng.randrange(0, 50), "max": rng.randrange(50, 500)},
                }
        elif event_name == "Reward\tClaimed":
            props["Points"] = rng.randrange(10, 5000)
            props["Tier"] = rng.choice(("Gold", "Silver", "Bronze\tplus"))
        elif event_name == "Réservation Confirmée":
            props["Hôtel"] = rng.choice(("Château Frontenac", "Hôtel de l'Europe", "Ryokan 旅館"))
            props["Nuits"] = rng.randrange(1, 8)
            props["Prix €"] = round(rng.uniform(50, 900), 2)
        else:
            props["Campaign id"] = rng.getrandbits(40)
            props["wzrk_id"] = f"{rng.getrandbits(32):08x}_{rng.randrange(10**9)}"
        if rng.random() < 0.15:
            props["Note"] = rng.choice(_AWKWARD_TEXTS)
        return props

    @staticmethod
    def _session_properties(rng: random.Random) -> dict[str, Any]:
        session: dict[str, Any] = {"session_source": rng.choice(("Direct", "Organic", "Referral", "Push"))}
        if rng.random() < 0.6:
            session["utm_source"] = rng.choice(_UTM_SOURCES)
            session["utm_medium"] = rng.choice(("cpc", "email", "social"))
        if rng.random() < 0.3:
            session["utm_campaign"] = rng.choice(_AWKWARD_TEXTS)
        return session


@functools.lru_cache(maxsize=4)
def _pools(seed: int, population: int) -> tuple[list[_User], list[list[bytes]], list[bytes]]:
    """Users, property variants and sessions for a seed; shared by simulators in one process."""
    rng = random.Random(seed)
    users = [SeedData._make_user(rng, number) for number in range(population)]
    properties = [
        [orjson.dumps(SeedData._event_properties(rng, spec.name)) for _ in range(_PROPERTY_VARIANTS)]
        for spec in EVENT_SPECS
    ]
    sessions = [orjson.dumps(SeedData._session_properties(rng))[1:-1] for _ in range(_SESSION_VARIANTS)]
    return users, properties, sessions


def day_range(from_day: dt.date, to_day: dt.date) -> Sequence[dt.date]:
    """Every day from ``from_day`` to ``to_day`` inclusive (empty when reversed)."""
    return [from_day + dt.timedelta(days=n) for n in range((to_day - from_day).days + 1)]
