"""`make run`'s mode, as processes: `ledger serve` with LEDGER_PROCESSOR=process and
LEDGER_PROJECTIONS=process starts `ledger process` and `ledger projections run`
beside itself. Deliveries are settled and projected by them (found by the log's
head, nobody wakes them), a failed one is started again, and they stop with the
API, or by themselves when the API process is killed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.domain.receipt import Receipt
from ledger.opening import open_ledger
from scripts.background import NICENESS, Background
from scripts.dev import loadgen
from scripts.dev.common import MODES
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.integration.test_scale import lag

pytestmark = pytest.mark.slow

MAKE_RUN = MODES["make run"]


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = command
    return found


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def wait_for(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def make_run(database_url: str, tmp_path: Path) -> loadgen.Server:
    """`ledger serve` in make run's mode, once its two processes are up."""
    server = loadgen.start_server(
        database_url, env_extra=MAKE_RUN, secret=WEBHOOK_SECRET, log_path=tmp_path / "api"
    )
    try:
        wait_for(lambda: len(children(server.pid)) == 2, 15, "two background processes")
    except BaseException:
        server.kill()
        raise
    return server


def test_make_runs_processes_settle_and_project_deliveries_and_stop_with_the_api(
    database_url: str, tmp_path: Path
) -> None:
    server = make_run(database_url, tmp_path)
    try:
        first = children(server.pid)
        assert sorted(c.split("scripts.cli")[1].strip() for c in first.values()) == [
            "process",
            "projections run",
        ]
        lower = min(19, niceness(server.pid) + NICENESS)  # the API first in a burst
        wait_for(lambda: [niceness(p) for p in first] == [lower, lower], 15, "a lower priority")
        deliveries = loadgen.build_deliveries(120, prefix="bg")
        run = loadgen.run_load_sync(
            loadgen.build_requests(deliveries, server.port, WEBHOOK_SECRET),
            server.port,
            concurrency=4,
        )
        assert run.summary()["by_status"] == {"200": 120}
        ledger = open_ledger(make_settings(database_url), pool_size=1)
        try:
            last = max(n.id for n in ledger._select(get_topic(Receipt.Received), start=1))

            def settled_and_projected() -> bool:
                return (ledger.recorder.max_tracking_id("Ledger") or 0) >= last and lag(
                    server.port
                ) == 0

            wait_for(settled_and_projected, 30, "stage two and the projections caught up")
            assert not ledger.dead_receipts()
        finally:
            ledger.close()

        # A process that fails is started again.
        victim = next(pid for pid, c in first.items() if c.rstrip().endswith("process"))
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(children(server.pid)) == 2 and victim not in children(server.pid),
            15,
            "the killed process started again",
        )
        now = children(server.pid)
    finally:
        server.stop()
    assert server.returncode == 0
    wait_for(lambda: not any(alive(pid) for pid in now), 15, "the processes stopped with the API")


def test_the_background_processes_stop_when_the_api_process_is_killed(
    database_url: str, tmp_path: Path
) -> None:
    server = make_run(database_url, tmp_path)
    try:
        orphans = list(children(server.pid))
    finally:
        server.kill()  # SIGKILL: it cannot stop them itself
    wait_for(lambda: not any(alive(pid) for pid in orphans), 15, "orphans stop by themselves")


def test_ctrl_c_stops_the_api_and_its_processes_and_none_is_started_again(
    database_url: str, tmp_path: Path
) -> None:
    """Ctrl-C in `make run`'s terminal reaches the whole process group: the two
    stop as asked (exit 0), so the API does not start them again, and it exits 0."""
    server = make_run(database_url, tmp_path)
    try:
        started = list(children(server.pid))
        os.killpg(server.pid, signal.SIGINT)  # loadgen starts it in a session of its own
        assert server.process.wait(timeout=20) == 0
    finally:
        server.stop()
    wait_for(lambda: not any(alive(pid) for pid in started), 15, "the processes stopped")
    log = (tmp_path / "api").read_text()
    assert "starting it again" not in log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_process_stopped_by_a_signal_while_it_starts_is_not_started_again(
    cli_env: pytest.MonkeyPatch, signum: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C may reach the group while a process is still starting (before its
    loop handles signals): it ends by the signal itself, and was asked to stop all
    the same. A process killed otherwise is started again (above)."""
    caplog.set_level("INFO", logger="ledger.background")
    background = Background.of("process", "off")
    background.start()
    try:
        (child,) = background._children.values()
        # once Python is up and importing the command (psycopg's binary is loaded
        # by it): a signal during the interpreter's own start is a fatal error,
        # exit 1, which the supervisor cannot tell from a crash (noted in README)
        maps = Path(f"/proc/{child.pid}/maps")
        wait_for(lambda: "psycopg" in maps.read_text(), 10, "the command importing")
        child.send_signal(signum)
        assert child.wait(timeout=10) in (0, -signum)
        time.sleep(2.5)  # two turns of the watch
        assert background._children == {}
    finally:
        background.stop()
    assert "starting it again" not in caplog.text
    assert "`ledger process` stopped" in caplog.text
