"""A SIGKILL in the middle of a burst of deliveries loses nothing that was answered 200.

The real server (`ledger serve`, stage two inline) takes signed deliveries from a
few keep-alive connections; after a few hundred answers it is killed with
SIGKILL, with requests in flight and more still to send. Restarted on the same
store, the log holds every delivery that was answered 200, byte for byte, and
stage two settles every receipt in the log (answered or not) within a bounded
wait, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.application import ReceiptNotFound
from ledger.domain.receipt import Receipt
from ledger.opening import open_ledger
from scripts.dev import loadgen
from tests.conftest import WEBHOOK_SECRET, make_settings

pytestmark = pytest.mark.slow

BURST = 3000  # deliveries offered; far more than get sent before the kill
CONNECTIONS = 4
KILL_AFTER = 300  # answered 200s before the SIGKILL
STAGE_TWO_WAIT = 20.0  # seconds for stage two to settle everything after the restart
INLINE = {"LEDGER_PROCESSOR": "inline", "LEDGER_PROCESSOR_INTERVAL": "0.1"}


def test_a_sigkill_mid_burst_loses_no_answered_delivery(database_url: str, tmp_path: Path) -> None:
    deliveries = loadgen.build_deliveries(BURST, prefix="crash")
    server = loadgen.start_server(
        database_url, env_extra=INLINE, secret=WEBHOOK_SECRET, log_path=tmp_path / "serve-1.log"
    )
    answers = {"ok": 0, "killed_after": 0}

    def kill_mid_burst(record: loadgen.Record) -> None:
        if record.status != 200 or answers["killed_after"]:
            return
        answers["ok"] += 1
        if answers["ok"] >= KILL_AFTER:
            os.kill(server.pid, signal.SIGKILL)
            answers["killed_after"] = answers["ok"]

    try:
        result = asyncio.run(
            loadgen.run_load(
                loadgen.build_requests(deliveries, server.port, WEBHOOK_SECRET),
                server.port,
                concurrency=CONNECTIONS,
                time_limit=30.0,
                keep_bodies=True,
                on_record=kill_mid_burst,
                grace=5.0,
            )
        )
    finally:
        server.kill()  # waits for it; a no-op signal when it is already dead

    # The kill happened, by SIGKILL, in the middle of the burst.
    assert answers["killed_after"] == KILL_AFTER, f"never killed: {result.summary()}"
    assert server.returncode == -signal.SIGKILL, server.log_tail()
    answered = {
        deliveries[r.index][0]: deliveries[r.index][1] for r in result.records if r.status == 200
    }
    unanswered = [r for r in result.records if r.status != 200]
    assert len(answered) >= KILL_AFTER
    assert result.not_sent > 0, "the burst had ended before the kill"
    assert len(answered) < BURST
    assert all(r.status == 0 for r in unanswered), result.summary()  # no 4xx/5xx before the kill
    for record in result.records:
        if record.status == 200:
            assert json.loads(record.body) == {"received": True, "duplicate": False}

    # Restarted on the same store: everything answered 200 is in the log, byte for byte.
    server = loadgen.start_server(
        database_url, env_extra=INLINE, secret=WEBHOOK_SECRET, log_path=tmp_path / "serve-2.log"
    )
    ledger = open_ledger(make_settings(database_url), pool_size=2)  # the server's master key
    try:
        missing = []
        for event_id, body in answered.items():
            try:
                receipt = ledger.receipt(event_id)
            except ReceiptNotFound:
                missing.append(event_id)
                continue
            assert ledger.personal.reveal(receipt.payload).encode() == body, event_id
        assert not missing, f"{len(missing)} answered 200 but not in the log: {missing[:5]}"

        # Stage two settles every receipt in the log (some were committed but never answered).
        received = ledger.recorder.select_notifications(
            start=1, limit=BURST + 1, topics=[get_topic(Receipt.Received)]
        )
        assert len(received) >= len(answered)
        assert len(received) < BURST
        last = received[-1].id
        deadline = time.monotonic() + STAGE_TWO_WAIT
        while (ledger.recorder.max_tracking_id("Ledger") or 0) < last:
            assert time.monotonic() < deadline, (
                f"stage two reached {ledger.recorder.max_tracking_id('Ledger')} of {last} "
                f"in {STAGE_TWO_WAIT} s:\n{server.log_tail()}"
            )
            assert server.alive(), server.log_tail()
            time.sleep(0.1)
        ids = {n.originator_id for n in received}
        assert len(ids) == len(received)  # one receipt per delivery
        for originator_id in ids:
            receipt = ledger.repository.get(originator_id)
            assert receipt.is_settled, (
                receipt.stripe_event_id,
                receipt.outcome,
                receipt.last_error,
            )
            assert receipt.version == 2  # received, then processed: exactly once
    finally:
        ledger.close()
        server.stop()
