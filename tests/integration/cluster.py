"""A cluster of nodes on network namespaces (netns.py), for integration tests and benchmarks.

One network; on it, each in a host of its own: the fake Hub, P parent nodes (their upstream: the fake Hub),
E edge nodes (their upstream: the list of parents, comma-separated, each file's parent chosen by the
node), optionally a redis-server (no persistence), and C client hosts that pull files from the edges with
curl. Every process listens on its own host's address at fixed ports (a namespace has ports of its own), so a
node stopped can be started again at the same URL.

    with Cluster(parents=1, edges=4, clients=4, hub_args=("--sized-models", "1")) as cluster:
        cluster.parents[0].host.cap("400mbit")
        pulls = cluster.pull_together([(client, edge, "acme/sized-0", "model.safetensors")
                                       for client, edge in zip(cluster.clients, cluster.edges)])
        cluster.hub_bytes("acme/sized-0", "model.safetensors")   # what the Hub sent of that file

No assertions here (a benchmark imports it too): failures to start raise RuntimeError, and a pull reports
what curl saw (`Pull.ok`). Needs root, like netns.py. With INFERLLAMA_CLUSTER_KEEP=1 in the environment, a
cluster's working directory (every node's data directory and log) is kept after close, and its path printed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import netns
from harness import FakeHub, Node, stop_process

MIB = 1 << 20
KEEP_ENV = "INFERLLAMA_CLUSTER_KEEP"  # =1: a cluster's working directory (nodes' logs) stays after close
ADMIN_KEY = "test-admin-key-0123456789"  # accounts.ADMIN_KEY: accounts.admin() works on every node

# Ports, the same on every host.
HTTP_PORT = 8080
BT_PORT = 6881
TRACKER_PORT = 6969
METRICS_PORT = 9100
HUB_PORT = 8000
CDN_PORT = 8001
REDIS_PORT = 6379

PARENT_ARGS = ("--chunk-size", "4MiB")
EDGE_ARGS = ("--chunk-size", "4MiB", "--swarm-threshold", "16MiB", "--upstream-timeout", "5s")


class ClusterNode:
    """One node process on a host of its own; `role` is "parent" or "edge"."""

    def __init__(self, cluster: "Cluster", host: netns.Host, role: str, upstream: str, args: tuple[str, ...]):
        self.cluster = cluster
        self.host = host
        self.role = role
        self.name = host.name
        self.upstream = upstream
        self.args = tuple(args)
        self.data_dir = os.path.join(cluster.workdir, host.name)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self.node: Node | None = None

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{HTTP_PORT}"

    def start(self) -> "ClusterNode":
        a = self.host.address
        listeners = ("--listen", f"{a}:{HTTP_PORT}", "--bt-listen", f"{a}:{BT_PORT}",
                     "--tracker-udp", f"{a}:{TRACKER_PORT}", "--metrics-listen", f"{a}:{METRICS_PORT}")
        self.node = Node(self.upstream, self.data_dir, *listeners, *self.args, admin_key=self.cluster.admin_key,
                         launcher=self.host.command([]))
        self.node.start()
        return self

    def running(self) -> bool:
        return self.node is not None and self.node.proc is not None and self.node.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stops the process (SIGKILL: at once, as a crash); its data directory stays for a restart."""
        if self.node is None:
            return None
        code = self.node.stop(sig)
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut; returns once the process is gone."""
        self.stop(signal.SIGKILL)

    def restart(self) -> "ClusterNode":
        self.stop()
        return self.start()

    # -- what it says --------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        return self.node.metrics()

    def metric(self, name: str) -> float:
        return self.node.metric(name)

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        return self.node.request(method, path, headers, body)

    def admin(self, method: str, path: str, body: dict | None = None):
        """(status, JSON) of an admin route under /api/inferllama/."""
        headers = {"Authorization": f"Bearer {self.cluster.admin_key}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        status, _, answer = self.node.request(method, "/api/inferllama/" + path, headers, data)
        try:
            return status, json.loads(answer or b"null")
        except ValueError:
            return status, answer.decode(errors="replace")

    def cluster_state(self) -> dict | None:
        """GET /api/inferllama/cluster (its upstreams, their health and bytes), or None if the node has none."""
        status, answer = self.admin("GET", "cluster")
        return answer if status == 200 else None

    def log_text(self) -> str:
        with open(self.node.log_path, errors="replace") as f:
            return f.read()

    def resolve_url(self, repo: str, path: str, rev: str = "main") -> str:
        return self.url + self.node.resolve_path(repo, rev, path)

    def __repr__(self) -> str:
        return f"ClusterNode({self.name!r}, {self.url})"


class RedisServer:
    """redis-server on its host's address, without persistence; stop() and start() again keep the address
    and port (and lose the data, as a restarted Redis without persistence does)."""

    def __init__(self, host: netns.Host, workdir: str, port: int = REDIS_PORT):
        self.host = host
        self.port = port
        self.dir = os.path.join(workdir, f"redis-{host.name}")
        os.makedirs(self.dir, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.port}"

    def start(self) -> "RedisServer":
        self.proc = self.host.popen(["redis-server", "--port", str(self.port), "--bind", self.host.address,
                                     "--protected-mode", "no", "--save", "", "--appendonly", "no",
                                     "--dir", self.dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(30, self.proc.kill)
        watchdog.start()
        try:
            for raw in self.proc.stdout:  # redis logs "Ready to accept connections" once it listens
                if b"Ready to accept connections" in raw:
                    break
            else:
                raise RuntimeError(f"redis-server exited before it was ready (exit code {self.proc.wait()})")
        finally:
            watchdog.cancel()
        # The rest of its log is drained, so redis never blocks on a full pipe.
        self._drain = threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True)
        self._drain.start()
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self._drain.join(timeout=10)  # it ends at the end of the pipe, which the exit closed
            self.proc = None


@dataclass
class Pull:
    """One GET by curl from a client host: what arrived and when (seconds from the request)."""
    client: str
    url: str
    exit_code: int = -1
    status: int = 0
    size: int = 0
    sha256: str = ""
    ttfb: float = 0.0
    total: float = 0.0
    error: str = ""
    started: float = 0.0  # time.monotonic() when curl was started

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.status == 200


@dataclass
class PullJob:
    """A pull running in a thread; `output` grows as bytes arrive."""
    output: str
    thread: threading.Thread
    result: list = field(default_factory=list)

    def received(self) -> int:
        try:
            return os.path.getsize(self.output)
        except OSError:
            return 0

    def wait(self, timeout: float | None = None) -> Pull:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"pull into {self.output} still running after {timeout} s")
        return self.result[0]


class Cluster:
    """The fake Hub, `parents` parents, `edges` edges, `clients` client hosts and (with `redis`) a Redis, each
    on a host of its own. Edges' upstream is every parent (comma-separated), plus `--upstream-fallback HUB`
    when `edge_fallback`; with `isolate_hub`, edges cannot reach the Hub at all (blocked on its ports).
    `hub_data_dir` keeps the fake Hub's blobs across clusters (they are made once per size)."""

    def __init__(self, *, parents: int = 1, edges: int = 1, clients: int = 0, redis: bool = False,
                 hub_args: tuple[str, ...] = (), parent_args: tuple[str, ...] = PARENT_ARGS,
                 edge_args: tuple[str, ...] = EDGE_ARGS, extra_parent_args: tuple[str, ...] = (),
                 extra_edge_args: tuple[str, ...] = (), edge_fallback: bool = False, isolate_hub: bool = False,
                 hub_data_dir: str | None = None, admin_key: str = ADMIN_KEY, workdir: str | None = None):
        self.n_parents, self.n_edges, self.n_clients, self.with_redis = parents, edges, clients, redis
        self.hub_args = tuple(hub_args)
        self.parent_args = tuple(parent_args) + tuple(extra_parent_args)
        self.edge_args = tuple(edge_args) + tuple(extra_edge_args)
        self.edge_fallback = edge_fallback
        self.isolate_hub = isolate_hub
        self.admin_key = admin_key
        self.owns_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="inferllama-cluster-")
        self.hub_data_dir = hub_data_dir or os.path.join(self.workdir, "hub")
        self.net: netns.Network | None = None
        self.hub_host: netns.Host | None = None
        self.hub: FakeHub | None = None
        self.redis: RedisServer | None = None
        self.parents: list[ClusterNode] = []
        self.edges: list[ClusterNode] = []
        self.clients: list[netns.Host] = []
        self._pulls = 0
        self._pulls_lock = threading.Lock()

    # -- life ----------------------------------------------------------------------------------------

    def start(self) -> "Cluster":
        try:
            self.net = netns.Network()
            self.hub_host = self.net.add_host("hub")
            a = self.hub_host.address
            self.hub = FakeHub("--host", a, "--port", str(HUB_PORT), "--cdn-port", str(CDN_PORT),
                               "--data-dir", self.hub_data_dir, *self.hub_args, launcher=self.hub_host.command([]))
            self.hub.start()
            if self.with_redis:
                self.redis = RedisServer(self.net.add_host("redis"), self.workdir).start()
            for _ in range(self.n_parents):
                self.add_parent()
            for _ in range(self.n_edges):
                self.add_edge()
            for _ in range(self.n_clients):
                self.add_client()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def hub_url(self) -> str:
        return self.hub.url

    def add_parent(self, *extra: str, start: bool = True) -> ClusterNode:
        host = self.net.add_host(f"p{len(self.parents) + 1}")
        parent = ClusterNode(self, host, "parent", self.hub.url, self.parent_args + extra)
        self.parents.append(parent)
        return parent.start() if start else parent

    def add_edge(self, *extra: str, parents: list[ClusterNode] | None = None, fallback: bool | None = None,
                 start: bool = True) -> ClusterNode:
        """An edge whose upstream is `parents` (every parent by default), in that order."""
        host = self.net.add_host(f"e{len(self.edges) + 1}")
        upstream = ",".join(p.url for p in (self.parents if parents is None else parents))
        args = self.edge_args
        if self.edge_fallback if fallback is None else fallback:
            args += ("--upstream-fallback", self.hub.url)
        edge = ClusterNode(self, host, "edge", upstream, args + extra)
        if self.isolate_hub:
            host.block(self.hub_host, HUB_PORT)
            host.block(self.hub_host, CDN_PORT)
        self.edges.append(edge)
        return edge.start() if start else edge

    def add_client(self) -> netns.Host:
        host = self.net.add_host(f"c{len(self.clients) + 1}")
        self.clients.append(host)
        return host

    def close(self) -> None:
        errors = []
        for node in [*self.edges, *self.parents]:
            try:
                node.stop()
            except Exception as e:  # a sanitizer report, say: the rest still has to stop
                errors.append(e)
        if self.redis:
            self.redis.stop()
        if self.hub:
            self.hub.stop()
        if self.net:
            self.net.close()
        if self.owns_workdir and os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.owns_workdir:
            print(f"cluster: kept {self.workdir} (the nodes' data and logs)", flush=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the Hub's side ------------------------------------------------------------------------------

    def file(self, repo: str, path: str, rev: str = "main") -> dict:
        """{path, size, sha256, git_sha1, lfs} of a file on the fake Hub."""
        return self.hub.files(repo, rev)[path]

    def hub_bytes(self, repo: str, path: str, rev: str = "main", stats: dict | None = None) -> int:
        """Bytes of that file's content the fake Hub has sent (its CDN and its own resolve route)."""
        f = self.file(repo, path, rev)
        stats = stats or self.hub.stats()
        return stats["cdn_bytes"].get(f["sha256"], 0) + stats["hub_file_bytes"].get(f["git_sha1"], 0)

    # -- clients -------------------------------------------------------------------------------------

    def start_pull(self, client: netns.Host, edge: ClusterNode, repo: str, path: str, rev: str = "main",
                   headers: dict | None = None, barrier: threading.Barrier | None = None, keep: bool = False,
                   max_time: float = 300) -> PullJob:
        """GET of the file's resolve URL from `client` with curl, in a thread (after `barrier`, if given);
        the body goes to a file that is hashed at the end and then deleted (unless `keep`)."""
        with self._pulls_lock:
            self._pulls += 1
            output = os.path.join(self.workdir, f"pull-{self._pulls}-{client.name}")
        url = edge.resolve_url(repo, path, rev)
        job = PullJob(output, threading.Thread(target=lambda: None))
        argv = ["curl", "--silent", "--show-error", "--max-time", str(max_time), "--output", output,
                "--write-out", "%{http_code} %{time_starttransfer} %{time_total}"]
        for name, value in (headers or {}).items():
            argv += ["--header", f"{name}: {value}"]
        argv.append(url)

        def run():
            pull = Pull(client.name, url)
            try:
                if barrier is not None:
                    barrier.wait(timeout=60)
                pull.started = time.monotonic()
                done = client.run(argv, capture_output=True, text=True, timeout=max_time + 30)
                pull.exit_code = done.returncode
                pull.error = done.stderr.strip()
                fields = done.stdout.split()
                if len(fields) == 3:
                    pull.status, pull.ttfb, pull.total = int(fields[0]), float(fields[1]), float(fields[2])
                pull.size, pull.sha256 = _hash_file(output)
            except Exception as e:  # reported in the Pull: the caller decides
                pull.error = f"{type(e).__name__}: {e}"
            finally:
                if not keep and os.path.exists(output):
                    os.unlink(output)
                job.result.append(pull)

        job.thread = threading.Thread(target=run, name=f"pull-{client.name}", daemon=True)
        job.thread.start()
        return job

    def pull(self, client: netns.Host, edge: ClusterNode, repo: str, path: str, **kwargs) -> Pull:
        return self.start_pull(client, edge, repo, path, **kwargs).wait()

    def start_pulls_together(self, pulls: list[tuple], **kwargs) -> list[PullJob]:
        """(client, edge, repo, path) each, started at the same moment (a barrier)."""
        barrier = threading.Barrier(len(pulls))
        return [self.start_pull(*p, barrier=barrier, **kwargs) for p in pulls]

    def pull_together(self, pulls: list[tuple], timeout: float = 330, **kwargs) -> list[Pull]:
        jobs = self.start_pulls_together(pulls, **kwargs)
        return [job.wait(timeout) for job in jobs]


def _drain(pipe) -> None:
    with pipe:
        for _ in pipe:
            pass


def _hash_file(path: str) -> tuple[int, str]:
    if not os.path.exists(path):
        return 0, ""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def poll(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something true (returns that), or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling an observable state, bounded by the deadline
