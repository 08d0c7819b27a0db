"""One attempt at a time writes a run: a claim object in the bucket, created only where none exists.

Two exports of the same request and run timestamp (a hand-triggered run of a window the scheduler is
exporting, two hand-triggered runs of one window) write the same object names; interleaved, one
attempt's clean-up would delete the other's files. So an attempt first creates
``<request id>-<run timestamp>.claim`` with a generation precondition (create only if absent), renews
it while it works, and deletes it when done. Another attempt waits for it. A claim whose holder died
(a killed worker) is taken over once it has not been renewed for ``lease_seconds`` of the waiter's own
clock, or at once by a later try of the same task.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import orjson

CLAIM_CONTENT_TYPE = "application/json"
#: A claim not renewed for this long belongs to a dead attempt.
LEASE_SECONDS = 120.0
#: Seconds between two looks at somebody else's claim.
POLL_SECONDS = 5.0
#: Seconds between two "still waiting" lines in the task log.
_WAIT_LOG_SECONDS = 60.0


class ClaimLostError(RuntimeError):
    """Another attempt took this attempt's claim over (it was not renewed in time): nothing is final."""


class ClaimStore(Protocol):
    """Conditional writes of small objects (the bucket hook)."""

    def read_object_generation(self, object_name: str) -> tuple[bytes, int] | None: ...

    def write_object_if_generation(
        self, data: bytes, object_name: str, content_type: str, generation: int
    ) -> int | None: ...

    def delete_object_if_generation(self, object_name: str, generation: int) -> None: ...


class ExportClaim:
    """Hold the claim on one export run while an attempt writes it (a context manager).

    :param store: the bucket.
    :param object_name: the claim's object name.
    :param holder: who holds it: the same text for every try of one task, distinct between tasks and runs.
    :param log: the task's logger.
    :param lease_seconds: a claim not renewed for this long is taken over; renewed every quarter of it.
    :param poll_seconds: seconds between two looks at somebody else's claim.
    """

    def __init__(
        self,
        store: ClaimStore,
        object_name: str,
        holder: str,
        log: logging.Logger,
        *,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.object_name = object_name
        self.holder = holder
        self.log = log
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._generation = 0
        self._lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> ExportClaim:
        self._acquire()
        self._renewer = threading.Thread(target=self._renew, name="ct-export-claim", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self._lost:
            self.store.delete_object_if_generation(self.object_name, self._generation)

    def check(self) -> None:
        """Raise :class:`ClaimLostError` if another attempt has taken the claim over."""
        if self._lost:
            raise ClaimLostError(
                f"Another attempt took over gs://…/{self.object_name} after this one did not renew it for "
                f"{self.lease_seconds:.0f} s; it writes this export now, so this attempt stops without a manifest."
            )

    # -- acquiring -----------------------------------------------------------------------------
    def _body(self) -> bytes:
        return orjson.dumps({"holder": self.holder, "renewed_at": time.time()})

    def _acquire(self) -> None:
        seen_generation, seen_since, logged_at = 0, 0.0, -_WAIT_LOG_SECONDS
        while True:
            generation = self.store.write_object_if_generation(
                self._body(), self.object_name, CLAIM_CONTENT_TYPE, 0
            )
            if generation is not None:
                self._generation = generation
                return
            current = self.store.read_object_generation(self.object_name)
            if current is None:
                continue  # released in between: try again at once
            content, generation = current
            other = _holder_of(content)
            now = time.monotonic()
            if generation != seen_generation:
                seen_generation, seen_since = generation, now
            if other == self.holder:
                reason = "an earlier try of this task left it"
            elif now - seen_since >= self.lease_seconds:
                reason = f"its holder ({other}) has not renewed it for {self.lease_seconds:.0f} s"
            else:
                if now - logged_at >= _WAIT_LOG_SECONDS:
                    logged_at = now
                    self.log.info(
                        "%s is writing this export (claim %s); waiting for it to finish, so that the two "
                        "never write the same objects at once.",
                        other, self.object_name,
                    )  # fmt: skip
                time.sleep(self.poll_seconds)
                continue
            taken = self.store.write_object_if_generation(
                self._body(), self.object_name, CLAIM_CONTENT_TYPE, generation
            )
            if taken is not None:
                self.log.info("Took over the claim %s: %s.", self.object_name, reason)
                self._generation = taken
                return

    # -- holding -------------------------------------------------------------------------------
    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4) and self._renew_once():
            pass

    def _renew_once(self) -> bool:
        """Renew the claim; ``False`` once another attempt has taken it over."""
        try:
            generation = self.store.write_object_if_generation(
                self._body(), self.object_name, CLAIM_CONTENT_TYPE, self._generation
            )
        except Exception as error:  # a storage hiccup: the lease leaves time to try again
            self.log.warning("Could not renew the claim %s (will try again): %s", self.object_name, error)
            return True
        if generation is None:
            self._lost = True
            return False
        self._generation = generation
        return True


def _holder_of(content: bytes) -> str:
    try:
        return str(orjson.loads(content)["holder"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "an unknown export"
