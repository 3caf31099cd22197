"""Load generation against a real `ledger serve`, on loopback only.

Three pieces, shared by `scripts.dev.bench` and the crash tests:

- `start_server()` launches `ledger serve` on 127.0.0.1 in a process of its own
  and waits until GET /healthz answers; the returned `Server` can be stopped
  (SIGTERM) or killed (SIGKILL) and reports its peak RSS.
- `build_deliveries()` makes realistic Stripe deliveries (customers, their
  subscriptions, updates and invoices) as `(event_id, body)` pairs, and
  `build_requests()` signs them into raw HTTP/1.1 requests just before a run,
  so that the signatures stay inside the endpoint's tolerance.
- `run_load()` drives those requests over N keep-alive connections opened with
  `asyncio.open_connection` (an HTTP client library costs more CPU per request
  than the server under test on a 2-core machine), bounded by the number of
  requests and by a time limit, closed-loop or paced at a target rate
  (open-loop: latency is counted from when a request was due, so a server that
  falls behind is not hidden by the client waiting for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
HOST = "127.0.0.1"  # loopback only: nothing here ever talks to another address
WEBHOOK_PATH = "/webhooks/stripe"
DEFAULT_SECRET = "whsec_test_" + "a" * 32  # the same as tests/conftest.py's WEBHOOK_SECRET


# --- the server -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ledger_command() -> list[str]:
    """The `ledger` console script of the running virtualenv (or the module behind it)."""
    script = Path(sys.executable).parent / "ledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scripts.cli"]


MASTER_KEY = "mk_loadgen_" + "0" * 32  # a throwaway master key for local servers


def server_env(
    database_url: str, env_extra: Mapping[str, str] | None = None, secret: str = DEFAULT_SECRET
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=secret,
        LEDGER_ADMIN_TOKEN="adm_loadgen",  # noqa: S106 - a throwaway token for a local server
        LEDGER_MASTER_KEY=MASTER_KEY,
        LEDGER_PROCESSOR="off",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra or {})
    return env


@dataclass
class Server:
    """A `ledger serve` (or `ledger process`) child process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL when it does not stop in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close_log()
        return self.process.returncode

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the process (peak resident set), while it is alive."""
        return _proc_status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far."""
        return _proc_cpu_seconds(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    database_url: str,
    port: int | None = None,
    env_extra: Mapping[str, str] | None = None,
    *,
    secret: str = DEFAULT_SECRET,
    timeout: float = 30.0,
    log_path: Path | None = None,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    program: Sequence[str] | None = None,
) -> Server:
    """Launch `ledger serve --host 127.0.0.1 --port PORT --no-access-log` and wait
    until GET /healthz answers 200. Its output goes to `log_path` (a temp file
    when not given). LEDGER_PROCESSOR defaults to "off"; `env_extra` overrides."""
    port = port or free_port()
    command = [
        *(program or ledger_command()),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--workers",
        str(workers),
        *extra_args,
    ]
    server = _spawn(command, server_env(database_url, env_extra, secret), log_path, port)
    return wait_until_healthy(server, timeout, "ledger serve")


def wait_until_healthy(server: Server, timeout: float, what: str) -> Server:
    """The server once GET /healthz answers 200; killed, and an error with its log's
    tail, when it exits first or does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{what} exited with {server.returncode}:\n{server.log_tail()}")
        if _healthz(server.port):
            return server
        time.sleep(0.05)
    server.kill()
    raise TimeoutError(f"{what} did not answer /healthz in {timeout} s:\n{server.log_tail()}")


def start_processor(
    database_url: str,
    env_extra: Mapping[str, str] | None = None,
    *,
    log_path: Path | None = None,
) -> Server:
    """Launch `ledger process` (stage two on its own) on the same store."""
    env = server_env(database_url, {"LEDGER_PROCESSOR_INTERVAL": "0.05", **(env_extra or {})})
    return _spawn([*ledger_command(), "process"], env, log_path, port=0)


def start_projections(
    database_url: str,
    env_extra: Mapping[str, str] | None = None,
    *,
    log_path: Path | None = None,
) -> Server:
    """Launch `ledger projections run` (the read models on their own) on the same store."""
    env = server_env(database_url, {"LEDGER_PROCESSOR_INTERVAL": "0.05", **(env_extra or {})})
    return _spawn([*ledger_command(), "projections", "run"], env, log_path, port=0)


def _spawn(command: list[str], env: dict[str, str], log_path: Path | None, port: int) -> Server:
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="ledger-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    log = log_path.open("wb")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of the driver does not reach it first
    )
    return Server(process, port, log_path, log)


def _healthz(port: int) -> bool:
    # http.client, not urllib: urllib would honour proxy variables from the environment.
    conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --- deliveries -------------------------------------------------------------------

EVENT_MIX = (
    "customer.created",
    "customer.subscription.created",
    "customer.subscription.updated",
    "invoice.paid",
    "customer.subscription.updated",
    "invoice.payment_failed",
)


def build_deliveries(
    count: int, *, prefix: str = "bench", start_created: int = 1_767_225_600
) -> list[tuple[str, bytes]]:
    """`count` realistic deliveries as (event_id, body): each customer goes through
    EVENT_MIX (created, subscribed, updated, invoice paid, updated again, a failed
    payment); customers are interleaved, so consecutive deliveries touch different
    customers as a live stream does. Event ids are unique per `prefix`."""
    so = _stripe_objects()

    customers = max(1, -(-count // len(EVENT_MIX)))
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        step, c = divmod(i, customers)
        kind = EVENT_MIX[step % len(EVENT_MIX)]
        cus, sub, user = f"cus_{prefix}{c}", f"sub_{prefix}{c}", f"user_1767225600_{c:010d}"
        created = start_created + step * 60 + c % 60
        evt_id = f"evt_{prefix}_{i:07d}"
        if kind == "customer.created":
            obj = so.customer(cus, email=f"{c}@example.com", user_id=user, name=f"Customer {c}")
        elif kind.startswith("customer.subscription."):
            obj = so.subscription(
                sub,
                cus,
                user_id=user,
                status="active" if kind.endswith("created") or step < 4 else "past_due",
                amount=999 if step < 4 else 1999,
                cancel_at_period_end=step >= 4 and c % 7 == 0,
            )
        else:
            paid = kind == "invoice.paid"
            obj = so.invoice(f"in_{prefix}{c}_{step}", cus, sub, status="paid" if paid else "open")
        out.append((evt_id, so.body_of(so.event(evt_id, kind, obj, created=created))))
    return out


def _stripe_objects() -> Any:
    """tests/stripe_objects.py: payloads built from Stripe's own example objects."""
    try:
        from tests import stripe_objects
    except ModuleNotFoundError:  # run from outside the repository: `tests` is not installed
        sys.path.insert(0, str(ROOT))
        from tests import stripe_objects
    return stripe_objects


def sign(body: bytes, secret: str, timestamp: int) -> str:
    import hashlib
    import hmac

    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def build_requests(
    deliveries: Sequence[tuple[str, bytes]],
    port: int,
    secret: str = DEFAULT_SECRET,
    *,
    path: str = WEBHOOK_PATH,
    timestamp: int | None = None,
) -> list[bytes]:
    """Raw HTTP/1.1 keep-alive requests, signed now (call it right before the run)."""
    t = int(time.time()) if timestamp is None else timestamp
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
    return [
        (
            f"{head}Stripe-Signature: {sign(body, secret, t)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for _, body in deliveries
    ]


# --- the load generator -----------------------------------------------------------


@dataclass(slots=True)
class Record:
    index: int  # position in the request list
    status: int  # HTTP status; 0 when no answer came (connection error, timeout)
    latency: float  # seconds: from sending (or from when it was due, when paced) to answer
    error: str = ""
    body: bytes = b""


@dataclass
class LoadResult:
    records: list[Record]
    elapsed: float  # seconds from start to the last answer
    requested: int  # how many requests were offered
    target_rate: float | None
    late: int = 0  # paced runs: requests sent more than 1 ms after they were due
    connect_errors: list[str] = field(default_factory=list)  # failed (re)connections

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def not_sent(self) -> int:
        return self.requested - self.sent

    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.records)

    def ok_indices(self) -> set[int]:
        return {r.index for r in self.records if r.status == 200}

    def summary(self) -> dict[str, Any]:
        """Counts by status, answered rate, latency percentiles (ms)."""
        answered = sorted(r.latency for r in self.records if r.status)
        ok = sum(1 for r in self.records if r.status == 200)
        return {
            "requested": self.requested,
            "sent": self.sent,
            "not_sent": self.not_sent,
            "by_status": {str(k): v for k, v in sorted(self.statuses().items())},
            "ok": ok,
            "errors": sorted({r.error for r in self.records if r.error})[:5],
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(ok / self.elapsed, 1) if self.elapsed else 0.0,
            "target_rate_per_s": self.target_rate,
            "late_sends": self.late,
            "p50_ms": _ms(percentile(answered, 50)),
            "p90_ms": _ms(percentile(answered, 90)),
            "p99_ms": _ms(percentile(answered, 99)),
            "max_ms": _ms(answered[-1] if answered else None),
        }


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class _ConnectionClosed(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open. The head is
    read in one call (a readline per header line made this process, not the
    server, the limit of closed-loop runs)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _ConnectionClosed("connection closed before an answer") from exc
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    keep_alive = True
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif name == b"transfer-encoding" and value.strip().lower() == b"chunked":
            chunked = True  # Node's answers (the peer in bench_peer)
    if chunked:
        return status, await _read_chunks(reader), keep_alive
    if length is None:
        raise ValueError("answer without Content-Length")
    body = await reader.readexactly(length) if length else b""
    return status, body, keep_alive


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # CRLF


async def run_load(
    requests: Sequence[bytes],
    port: int,
    *,
    concurrency: int = 32,
    time_limit: float = 60.0,
    rate: float | None = None,
    keep_bodies: bool = False,
    on_record: Callable[[Record], None] | None = None,
    grace: float = 10.0,
    pause_gc: bool = True,
) -> LoadResult:
    """Send `requests` over `concurrency` keep-alive connections to 127.0.0.1:port.

    Stops taking new requests when all are sent or `time_limit` seconds have
    passed; requests still in flight `grace` seconds after that count as
    timeouts. With `rate`, request i is due at start + i / rate and its latency
    is counted from then (open loop); without, each connection sends its next
    request as soon as it has the previous answer (closed loop). A connection
    that fails records the error for its request and reconnects; when it cannot
    reconnect (the server is gone), it stops. `on_record` sees every record as
    it is made (the crash tests kill the server from there). With `pause_gc`, this
    process's cyclic garbage collector is off during the run (after a collection
    and a freeze), so that its pauses do not show up as the server's latency."""
    if not pause_gc:
        return await _run_load(
            requests, port, concurrency, time_limit, rate, keep_bodies, on_record, grace
        )
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _run_load(
            requests, port, concurrency, time_limit, rate, keep_bodies, on_record, grace
        )
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


async def _run_load(
    requests: Sequence[bytes],
    port: int,
    concurrency: int,
    time_limit: float,
    rate: float | None,
    keep_bodies: bool,
    on_record: Callable[[Record], None] | None,
    grace: float,
) -> LoadResult:
    records: list[Record] = []
    connect_errors: list[str] = []
    total = len(requests)
    next_index = 0
    late = 0
    clock = time.perf_counter
    start = last_answer = clock()
    deadline = start + time_limit
    in_flight: dict[int, float] = {}

    def record(rec: Record) -> None:
        nonlocal last_answer
        last_answer = clock()
        records.append(rec)
        if on_record is not None:
            on_record(rec)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def worker() -> None:
        nonlocal next_index, late
        try:
            reader, writer = await connect()
        except OSError as exc:
            connect_errors.append(type(exc).__name__)
            return
        try:
            while next_index < total and clock() < deadline:
                i = next_index
                next_index += 1
                if rate:
                    due = start + i / rate
                    wait = due - clock()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif wait < -0.001:
                        late += 1
                    t0 = due
                else:
                    t0 = clock()
                in_flight[i] = t0
                try:
                    writer.write(requests[i])
                    status, body, keep_alive = await _read_response(reader)
                except (OSError, _ConnectionClosed, asyncio.IncompleteReadError, ValueError) as exc:
                    del in_flight[i]
                    record(Record(i, 0, clock() - t0, type(exc).__name__))
                    writer.close()
                    try:
                        reader, writer = await connect()
                    except OSError as exc2:
                        connect_errors.append(type(exc2).__name__)
                        return
                    continue
                del in_flight[i]
                record(Record(i, status, clock() - t0, "", body if keep_bodies else b""))
                if not keep_alive:
                    writer.close()
                    reader, writer = await connect()
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=time_limit + grace)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    now = clock()
    for i, t0 in list(in_flight.items()):
        record(Record(i, 0, now - t0, "timeout"))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if not records and connect_errors:
        raise ConnectionError(f"could not connect to {HOST}:{port}: {connect_errors[0]}")
    return LoadResult(records, last_answer - start, total, rate, late, connect_errors)


def run_load_sync(requests: Sequence[bytes], port: int, **kwargs: Any) -> LoadResult:
    """`run_load` on an event loop of its own (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_load(requests, port, **kwargs))
    with contextlib.closing(uvloop.new_event_loop()) as loop:
        return loop.run_until_complete(run_load(requests, port, **kwargs))
