"""Two attempts never write one export run at once: the claim object, against the real GCS stack."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ct_airflow_provider.export.claim import ClaimLostError, ExportClaim
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from tests.export.conftest import empty_bucket_hook

BUCKET = "ct-claims"
CLAIM = "1234567890-1796472000.claim"
LOG = logging.getLogger("test_claim")


@pytest.fixture
def bucket(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch) -> CleverTapGCSHook:
    return empty_bucket_hook(gcs_stack, monkeypatch, BUCKET)


def _claim(bucket: CleverTapGCSHook, holder: str, lease: float = 30.0) -> ExportClaim:
    return ExportClaim(bucket, CLAIM, holder, LOG, lease_seconds=lease, poll_seconds=0.1)


def test_a_second_attempt_waits_until_the_first_is_done(
    bucket: CleverTapGCSHook, gcs_stack: GCSTestStack
) -> None:
    order: list[str] = []
    first = _claim(bucket, "run A")
    first.__enter__()
    assert set(gcs_stack.list_objects(BUCKET)) == {CLAIM}

    def second() -> None:
        with _claim(bucket, "run B"):
            order.append("B writes")

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(1.0)
    assert order == [] and waiter.is_alive()  # B waits while A holds the claim
    order.append("A done")
    first.__exit__(None, None, None)
    waiter.join(timeout=10)
    assert order == ["A done", "B writes"]
    assert gcs_stack.list_objects(BUCKET) == {}  # each released its claim


def test_a_later_try_of_the_same_task_takes_its_claim_over_at_once(
    bucket: CleverTapGCSHook, gcs_stack: GCSTestStack
) -> None:
    killed = _claim(bucket, "task T of run R")
    killed.__enter__()
    killed._stop.set()  # the worker died: nobody renews or releases the claim
    started = time.monotonic()
    with _claim(bucket, "task T of run R"):
        assert time.monotonic() - started < 2
    assert gcs_stack.list_objects(BUCKET) == {}


def test_a_claim_nobody_renews_is_taken_over_after_its_lease_and_its_holder_learns_it(
    bucket: CleverTapGCSHook, caplog: pytest.LogCaptureFixture
) -> None:
    stale = _claim(bucket, "run A", lease=1.0)
    stale.__enter__()
    stale._stop.set()
    assert stale._renewer is not None
    stale._renewer.join()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOG.name), _claim(bucket, "run B", lease=1.0) as taker:
        assert 1.0 <= time.monotonic() - started < 5
        taker.check()
    assert "has not renewed it for 1 s" in caplog.text
    # The first holder, had it only been slow, must not write its manifest now.
    assert stale._renew_once() is False
    with pytest.raises(ClaimLostError, match="Another attempt took over"):
        stale.check()


def test_a_holder_renews_its_claim_so_a_long_export_keeps_it(bucket: CleverTapGCSHook) -> None:
    with _claim(bucket, "run A", lease=0.8) as holder:
        acquired = holder._generation
        time.sleep(2.0)  # several leases long
        holder.check()
        assert holder._generation != acquired  # renewed
        assert bucket.read_object_generation(CLAIM) is not None
