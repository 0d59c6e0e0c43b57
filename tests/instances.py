"""Private RabbitMQ and PostgreSQL instances for tests that restart them: their own node or
cluster, ports and temporary directory, so the shared services are never touched.

Both run as root-started children here: RabbitMQ straight from its own bin directory with
HOME in the temporary directory (its Erlang cookie lives there, not in a shared home), and
PostgreSQL as the `postgres` user through runuser, in a cluster made with initdb.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.processes import free_port
from tests.services import port_open

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_port(port: int, *, open_: bool, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, 0.2) == open_:
            return True
        time.sleep(0.1)
    return False


class PrivateRabbit:
    """A RabbitMQ node of its own; `restart` stops it (its queues survive) and starts it."""

    def __init__(self, base: Path, cookie: str | None = None) -> None:
        self.base = base
        self.node = f"hl-fault-{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "management_agent.disable_metrics_collector = true\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        if cookie is not None:  # nodes of one cluster share it (rabbitmqctl reads it too)
            (base / ".erlang.cookie").write_text(cookie)
            (base / ".erlang.cookie").chmod(0o400)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _ctl(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> str:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env, check=True, capture_output=True, text=True, timeout=timeout_s,
        ).stdout  # fmt: skip

    def start(self) -> None:
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self.env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self._ctl("wait", str(self.base / "node.pid"), "--timeout", str(int(START_TIMEOUT_S)))
        if not _wait_port(self.port, open_=True, timeout_s=START_TIMEOUT_S):
            raise RuntimeError(f"private RabbitMQ did not listen on {self.port}")

    def stop(self) -> None:
        pid = self._os_pid()
        with contextlib.suppress(subprocess.SubprocessError):
            self._ctl("stop", str(self.base / "node.pid"))
        _wait_port(self.port, open_=False, timeout_s=30)
        # The port closes before the Erlang VM is gone; a start meanwhile can find the old
        # node still registered and fail (`rabbitmqctl wait` exits 69).
        deadline = time.monotonic() + 30
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> None:
        self.stop()
        try:
            self.start()
        except subprocess.CalledProcessError:  # once more, on a loaded machine
            time.sleep(2.0)
            self.start()

    def _os_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.base / "node.pid").read_text().strip())
        return None


class PrivateCluster:
    """`size` private RabbitMQ nodes joined into one cluster (a shared Erlang cookie, each
    node its own name, ports and directory), all on 127.0.0.1."""

    def __init__(self, base: Path, size: int = 3) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [PrivateRabbit(base / f"node{i}", cookie) for i in range(size)]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: `HOOKLINE_BROKER_URL` for a cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node._ctl("stop_app")
            node._ctl("join_cluster", first.node)
            node._ctl("start_app")
        for node in self.nodes:
            if not _wait_port(node.port, open_=True, timeout_s=START_TIMEOUT_S):
                raise RuntimeError(f"cluster node {node.node} did not listen")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def ctl(self, *args: str) -> str:
        """`rabbitmqctl` against the first running node."""
        for node in self.nodes:
            if port_open("127.0.0.1", node.port, 0.2):
                return node._ctl(*args)
        raise RuntimeError("no cluster node is running")

    def leader(self, vhost: str, queue: str) -> PrivateRabbit:
        """The node that holds the leader of quorum queue `queue`."""
        for line in self.ctl("list_queues", "-p", vhost, "--quiet", "--no-table-headers",
                             "name", "leader").splitlines():  # fmt: skip
            name, _, leader = line.partition("\t")
            if name == queue:
                return next(node for node in self.nodes if node.node == leader.strip())
        raise RuntimeError(f"no queue {queue!r} in vhost {vhost!r}")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust auth, user `postgres`), on a free port."""

    def __init__(self) -> None:
        # Its own directory under /tmp: the postgres user cannot enter root's pytest dirs.
        self.base = Path(tempfile.mkdtemp(prefix="hl-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._bin = _pg_bin()
        shutil.chown(self.base, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True, capture_output=True, timeout=timeout_s, cwd=self.base,
        )  # fmt: skip

    def init(self) -> None:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.base / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def private_rabbit(base: Path) -> Iterator[PrivateRabbit]:
    rabbit = PrivateRabbit(base)
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.stop()


@contextlib.contextmanager
def private_cluster(base: Path, size: int = 3) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(base, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    postgres = PrivatePostgres()
    try:
        postgres.init()
        postgres.start()
        yield postgres
    finally:
        postgres.stop("immediate")
        shutil.rmtree(postgres.base, ignore_errors=True)
