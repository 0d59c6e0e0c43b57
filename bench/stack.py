"""The real stack for one benchmark run, and what every benchmark measures around it.

A fresh RabbitMQ vhost and PostgreSQL database, receivers in their own processes
(`python -m hookline.receiver`: asyncio, keep-alive), `hookline` processes, and:
- CPU seconds per component (our processes and their children, the broker, the database
  backends of this run's database), read from /proc, so a run can say where the time went;
- the machine's load average, since the box is shared and figures are only comparable
  next to a baseline measured in the same run.
Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db import migrate
from common.db.models import Delivery, EventRow
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.secretbox import SecretBox
from common.settings import Settings
from common.transport import topology as tp
from common.wire import DeliveryMessage, Event, webhook_id_for
from dispatcher.http import Sender
from dispatcher.subscriptions import Endpoint
from tests import builders
from tests.processes import HOOKLINE, free_port
from tests.services import temporary_database, temporary_vhost

SECRET_KEY = "5yN6ZnxUf48i2cY4NAoWswcXnt4IRkW61fRd9BzFpoU"
BOX = SecretBox(SECRET_KEY)
TICK_S = os.sysconf("SC_CLK_TCK")


def by_webhook_id(tenant_id: str, event_ids: Iterable[str]) -> dict[str, str]:
    """webhook-id -> event id for one tenant's events: how a benchmark reads its receiver's
    log (the header names the tenant and the event, not the event alone)."""
    return {webhook_id_for(tenant_id, event_id): event_id for event_id in event_ids}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


# --- CPU accounting from /proc -------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU of a process and its live descendants (e.g. `--processes N` replicas)."""
    return _cpu_s(pid) + sum(tree_cpu_s(child) for child in _children(pid))


def tree_rss_mib(pid: int) -> list[float]:
    """Resident memory of a process and of each live descendant, MiB."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return []
    own = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return [own] + [rss for child in _children(pid) for rss in tree_rss_mib(child)]


def _pids_where(predicate: Any) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if predicate(cmdline):
                pids.append(int(entry.name))
    return pids


# --- the stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    database_url: str
    broker_url: str
    sessions: sessionmaker[Session]
    workdir: Path
    tenant_id: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def receiver(self, name: str, *args: str, port: int | None = None) -> str:
        """A receiver process logging each arrival; returns its base URL."""
        port = port or free_port()
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "hookline.receiver", "--port", str(port),
             "--log", str(self.workdir / f"{name}.tsv"), "--every-s", "3600", *args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/")
        return f"http://127.0.0.1:{port}"

    def subscribe(self, url: str, event_types: list[str], **fields: Any) -> tuple[str, str]:
        with self.sessions.begin() as session:
            sub, secret = builders.subscription(
                session, self.tenant_id, url, event_types=event_types, box=BOX, **fields
            )
            return sub.id, secret

    def subscribe_many(self, rows: list[tuple[str, list[str]]]) -> None:
        """Many subscriptions in one transaction: (url, event types) each."""
        with self.sessions.begin() as session:
            for url, event_types in rows:
                builders.subscription(
                    session, self.tenant_id, url, event_types=event_types, box=BOX
                )

    def start(self, name: str, command: str, *args: str, metrics: bool = True) -> None:
        self.start_together({name: (command, *args)}, metrics=metrics)

    def start_together(self, commands: dict[str, tuple[str, ...]], metrics: bool = True) -> None:
        """Launch every `name: (command, *args)` at once, then wait until each serves its
        metrics: replicas started one after the other would each begin their work seconds
        apart on a loaded machine (start-up is mostly imports), and that stagger would
        fall into whatever the benchmark times."""
        ports: dict[str, int] = {}
        for name, (command, *args) in commands.items():
            extra = []
            if metrics:
                ports[name] = free_port()
                extra = ["--metrics-port", str(ports[name])]
            with open(self.workdir / f"{name}.log", "wb") as output:
                self.procs[name] = subprocess.Popen(
                    [*HOOKLINE, command, *args, *extra], env=self.env, stdout=output,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
        self.metrics_ports.update(ports)
        for name, port in ports.items():
            try:
                wait_http(f"http://127.0.0.1:{port}/metrics")
            except RuntimeError:
                raise RuntimeError(f"{name} did not start:\n{self.log(name)}") from None

    def metric(self, name: str, sample: str) -> float:
        """The sum of the samples of the process `name` whose line starts with `sample`
        (a metric's name and, if wanted, the start of its labels)."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(sample))  # fmt: skip

    def stop(self, name: str, timeout_s: float = 60) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-4000:]

    def arrivals(self, name: str, events: Mapping[str, str]) -> dict[str, float]:
        """event id -> first receipt time, once the receiver `name` has stopped, for the
        events of `events` (webhook-id -> event id: `by_webhook_id`)."""
        found: dict[str, float] = {}
        for event_id, at in self.arrival_times(name, events):
            found.setdefault(event_id, at)
        return found

    def arrival_times(self, name: str, events: Mapping[str, str]) -> list[tuple[str, float]]:
        """(event id, time) of every receipt of the events of `events`, duplicates included,
        once the receiver `name` has stopped."""
        self.stop(name)
        lines = (self.workdir / f"{name}.tsv").read_text().splitlines()
        times = [(events.get(a), float(b)) for a, b in (line.split("\t") for line in lines)]
        return [(event_id, at) for event_id, at in times if event_id is not None]

    # -- counts -----------------------------------------------------------------------

    def succeeded(self) -> int:
        with self.sessions() as session:
            query = select(func.count()).select_from(Delivery)
            return int(
                session.scalar(query.where(Delivery.status == DeliveryStatus.SUCCEEDED)) or 0
            )

    def deliveries(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)

    def events(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(EventRow)) or 0)

    def wait_for(self, count: Any, target: int, timeout_s: float, tick_s: float = 0.25) -> int:
        deadline = time.monotonic() + timeout_s
        done = count()
        while done < target and time.monotonic() < deadline:
            time.sleep(tick_s)
            done = count()
        return int(done)

    def queue_names(self) -> dict[str, int]:
        """Each queue of this run's vhost and the messages in it."""
        vhost = self.broker_url.rsplit("/", 1)[1]
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages",
             "--formatter", "json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return {q["name"]: int(q["messages"]) for q in json.loads(out)}

    def queue_depth(self, queue: str) -> int:
        return self.queue_names().get(queue, 0)

    def deliveries_queued(self) -> int:
        """Messages ready in every delivery queue: the tenant shards and the overflow lane."""
        return sum(n for q, n in self.queue_names().items() if q.startswith(tp.DELIVERIES))

    # -- CPU ------------------------------------------------------------------------------

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per component: each named process (with children), the
        broker (all of RabbitMQ: other users of the machine count too) and this run's
        database backends."""
        out = {name: tree_cpu_s(proc.pid) for name, proc in self.procs.items()}
        dbname = self.database_url.rsplit("/", 1)[1]
        out["postgres"] = sum(map(_cpu_s, _pids_where(lambda c: f" {dbname} " in c)))
        out["rabbitmq"] = sum(map(_cpu_s, _pids_where(lambda c: "beam.smp" in c)))
        out["bench"] = _cpu_s(os.getpid())
        return out


def cpu_per_delivery_us(
    before: dict[str, float], after: dict[str, float], deliveries: int
) -> dict[str, float]:
    """Microseconds of CPU each component spent per delivery between two snapshots."""
    return {
        name: round(1e6 * (after[name] - before.get(name, 0.0)) / max(deliveries, 1))
        for name in after
        if after[name] - before.get(name, 0.0) > 0
    }


@contextmanager
def stack(workdir: Path) -> Iterator[Stack]:
    with ExitStack() as exits:
        broker_url = exits.enter_context(temporary_vhost("hookline_bench"))
        database_url = exits.enter_context(temporary_database())
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        exits.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            tenant_id = builders.tenant(session, name="bench").id
        env = {
            **os.environ,
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_LOG_LEVEL": "WARNING",
            # One process per `hookline` command unless a benchmark asks for --processes.
            "HOOKLINE_PROCESSES": "1",
        }
        running = Stack(database_url, broker_url, sessions, workdir, tenant_id, env)
        try:
            yield running
        finally:
            for name in list(running.procs):
                running.stop(name)


# --- the direct-POST baseline -------------------------------------------------------------


def baseline(url: str, secret: str, count: int, concurrency: int) -> float:
    """Direct POSTs through the dispatcher's own `Sender` (SSRF check, signing, pinned
    keep-alive pools, deadline), on as many threads: no broker, no database — the
    ceiling of the HTTP path on this machine right now."""
    settings = Settings(
        allow_private_targets=True, dispatcher_concurrency=concurrency, secret_key=SECRET_KEY
    )
    sender = Sender(settings)
    endpoint = Endpoint(id="baseline", tenant_id="bench", url=url, status="active",
                        secret=secret)  # fmt: skip

    def post(n: int) -> int | None:
        event = Event(tenant="bench", type="order.created", id=f"baseline-{n}",
                      data={"order": n, "total": 12.5})  # fmt: skip
        delivery = DeliveryMessage(
            delivery_id=f"dlv-{n}", event_id=event.id, tenant="bench",
            subscription_id="baseline", attempt=1, event=event,
        )  # fmt: skip
        return sender.send(endpoint, delivery).status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        codes = list(threads.map(post, range(count), chunksize=64))
    elapsed = time.perf_counter() - start
    sender.close()
    assert codes.count(200) == count, "baseline receiver did not answer 200 every time"
    return count / elapsed


def profile(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy on `pid` until interrupted (`--gil`: only samples that hold the interpreter
    lock, i.e. where its CPU goes; with `BENCH_WALL=1` in the environment, `--idle`
    instead: every thread all the time, i.e. where they wait); py-spy must be installed in
    the virtualenv."""
    mode = "--idle" if os.environ.get("BENCH_WALL") else "--gil"
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", "100",
         "-f", "raw", "-o", output, "--nonblocking", mode],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)


class Sampler:
    """Samples a value on a thread every `every_s` until stopped (e.g. RSS during a drain)."""

    def __init__(self, sample: Any, every_s: float = 0.5) -> None:
        self.values: list[Any] = []
        self._sample = sample
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        if exc[0] is None:  # one more, so a span shorter than `every_s` has a sample too
            self.values.append(self._sample())

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.values.append(self._sample())
