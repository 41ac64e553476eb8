"""Shared plumbing for integration tests and benchmarks: start the fake Hub and the real node binary
on loopback ports, learn their URLs from the line each prints when ready (no sleeps), talk HTTP.

Environment:
  TEST_INFERLLAMA_BINARY  path of the node binary (default: build/inferllama under the repo root)
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("TEST_INFERLLAMA_BINARY") or os.environ.get("INFERLLAMA_BINARY") or \
    os.path.join(ROOT, "build", "inferllama")


def clean_env(extra: dict | None = None) -> dict:
    """The environment for running the binary: no INFERLLAMA_* or HF_TOKEN leaking in from outside
    (the node rejects unknown INFERLLAMA_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERLLAMA_") and k != "HF_TOKEN"}
    env.update(extra or {})
    return env
def stop_process(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


FAKE_HUB = os.path.join(ROOT, "tests", "fakes", "fake_hub.py")
READY_TIMEOUT = 60


def _read_line_with_prefix(proc: subprocess.Popen, prefix: str, what: str) -> str:
    """Blocks on the process's stdout until a line starting with `prefix` (bounded by a watchdog)."""
    watchdog = threading.Timer(READY_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"{what} exited before it was ready (exit code {proc.wait()})")
    finally:
        watchdog.cancel()


class FakeHub:
    """The project's fake Hub (tests/fakes/fake_hub.py) with a hub origin and a CDN origin; `launcher` is a
    command prefix to run it with (e.g. a network namespace's `ip netns exec NAME`)."""

    def __init__(self, *args: str, launcher: list[str] | None = None):
        self.args = list(args)
        self.launcher = list(launcher or [])
        self.proc: subprocess.Popen | None = None
        self.url = self.cdn = ""

    def start(self) -> "FakeHub":
        self.proc = subprocess.Popen([*self.launcher, sys.executable, FAKE_HUB, *self.args], stdout=subprocess.PIPE)
        line = _read_line_with_prefix(self.proc, "READY", "fake hub")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.url, self.cdn = fields["hub"], fields["cdn"]
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # Control API
    def control(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stats(self) -> dict:
        return self.control("GET", "/_fake/stats")

    def reset(self) -> None:
        self.control("POST", "/_fake/reset", {})

    def faults(self, faults: list[dict]) -> None:
        self.control("POST", "/_fake/faults", faults)

    def lies(self, lies: list[dict]) -> None:
        """Hostile mode (see fake_hub.py): wrong sizes, other files' hashes, endless bodies."""
        self.control("POST", "/_fake/lies", lies)

    def manifest(self) -> dict:
        return self.control("GET", "/_fake/manifest")

    def throttle(self, seconds: float, status: int = 429, auth: list[str] | None = None,
                 headers: list[str] | None = None) -> dict:
        """Throttle mode (see fake_hub.py): for `seconds` from now, the credentials in `auth` ("anonymous" for
        none; default every one) get `status` with the time left in `headers` ("retry-after", "ratelimit")."""
        body: dict = {"seconds": seconds, "status": status}
        if auth is not None:
            body["auth"] = auth
        if headers is not None:
            body["headers"] = headers
        return self.control("POST", "/_fake/throttle", body)

    def push(self, repo_id: str, files: dict, repo_type: str = "model", branch: str = "main") -> str:
        """A new commit on `branch` with `files` changed (path -> text, {"size": N} for LFS, None to
        delete); returns its sha."""
        body = {"repo": repo_id, "type": repo_type, "branch": branch, "files": files}
        return self.control("POST", "/_fake/push", body)["commit"]

    def files(self, repo_id: str, rev: str = "main") -> dict[str, dict]:
        """path -> {path, size, sha256, git_sha1, lfs} of `repo_id` at `rev`."""
        for repo in self.manifest()["repos"]:
            if repo["id"] == repo_id:
                commit = repo["revisions"].get(rev, rev)
                return {f["path"]: f for f in repo["files"][commit]}
        raise KeyError(repo_id)

    def commit(self, repo_id: str, rev: str = "main") -> str:
        for repo in self.manifest()["repos"]:
            if repo["id"] == repo_id:
                return repo["revisions"][rev]
        raise KeyError(repo_id)


class Node:
    """The real `inferllama serve` process on a free loopback port (or where `extra` says), run with the
    command prefix `launcher` if given (e.g. a network namespace's `ip netns exec NAME`)."""

    def __init__(self, upstream: str, data_dir: str | None = None, *extra: str, env: dict | None = None,
                 admin_key: str | None = None, launcher: list[str] | None = None):
        self.upstream = upstream
        self.launcher = list(launcher or [])
        self.owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="inferllama-test-")
        self.extra = list(extra)
        # The admin key goes in the environment: the node refuses secrets on its command line.
        self.env = {**(env or {}), **({"INFERLLAMA_ADMIN_KEY": admin_key} if admin_key else {})} or None
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log_path = os.path.join(self.data_dir, "node.log")  # stderr: the node's log
        self.stdout_path = ""  # every line of stdout: node.stdout beside the log, from start()
        self._stdout_copier: threading.Thread | None = None

    def start(self) -> "Node":
        env = clean_env(self.env)
        # BitTorrent and the UDP tracker on free loopback ports unless a test says otherwise.
        defaults = []
        if not any(a.startswith("--bt-listen") for a in self.extra):
            defaults += ["--bt-listen", "127.0.0.1:0"]
        if not any(a.startswith("--tracker-udp") for a in self.extra):
            defaults += ["--tracker-udp", "127.0.0.1:0"]
        if not any(a.startswith("--metrics-listen") for a in self.extra):
            defaults += ["--metrics-listen", "127.0.0.1:0"]
        if not any(a.startswith("--listen") for a in self.extra):
            defaults += ["--listen", "127.0.0.1:0"]
        cmd = [*self.launcher, BINARY, "serve", "--data-dir", self.data_dir, "--upstream", self.upstream, *defaults, *self.extra]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        # "inferllama bittorrent on tcp://H:P" and "inferllama tracker on udp://H:P" come first; with
        # --tls-listen, "inferllama listening on https://H:P" follows the http line.
        self.bt_port = self.udp_tracker_port = self.metrics_port = self.tls_port = None
        want_tls = any(a.startswith("--tls-listen") for a in self.extra)
        line = http_line = ""
        self.stdout_path = os.path.join(os.path.dirname(self.log_path), "node.stdout")
        stdout_copy = open(self.stdout_path, "ab")
        watchdog = threading.Timer(READY_TIMEOUT, self.proc.kill)
        watchdog.start()
        try:
            for raw in self.proc.stdout:
                stdout_copy.write(raw)
                line = raw.decode(errors="replace").strip()
                if line.startswith("inferllama bittorrent on "):
                    self.bt_port = urllib.parse.urlsplit(line.split()[-1]).port
                elif line.startswith("inferllama tracker on "):
                    self.udp_tracker_port = urllib.parse.urlsplit(line.split()[-1]).port
                elif line.startswith("inferllama metrics on "):
                    self.metrics_port = urllib.parse.urlsplit(line.split()[-1]).port
                elif line.startswith("inferllama listening on https://"):
                    self.tls_port = urllib.parse.urlsplit(line.split()[-1]).port
                    break
                elif line.startswith("inferllama listening on"):
                    http_line = line
                    if not want_tls:
                        break
            else:
                stdout_copy.close()
                raise RuntimeError(f"node exited before it was ready (exit code {self.proc.wait()})")
        finally:
            watchdog.cancel()
        # The rest of stdout (an access log on "-") goes on into node.stdout: the node never blocks on a
        # full pipe, and a test can read what it wrote.
        stdout_copy.flush()
        self._stdout_copier = threading.Thread(target=self._copy_stdout, args=(self.proc.stdout, stdout_copy),
                                               daemon=True)
        self._stdout_copier.start()
        self.url = http_line.split()[-1]
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port
        return self

    @staticmethod
    def _copy_stdout(source, sink) -> None:
        try:
            for raw in iter(lambda: source.read1(65536), b""):
                sink.write(raw)
                sink.flush()
        except (OSError, ValueError):
            pass  # the pipe was closed under the copier
        finally:
            sink.close()

    def stdout_text(self) -> str:
        """Everything the node wrote on stdout so far."""
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM) -> int:
        code = 0
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc:
            code = self.proc.returncode
        if self._stdout_copier:
            self._stdout_copier.join(timeout=30)  # it ends at the end of the pipe, which the exit closed
            self._stdout_copier = None
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "log", None):
            self.log.close()
            self._check_sanitizer_reports()
        return code

    def _check_sanitizer_reports(self) -> None:
        """A node built with sanitizers reports to its log; any report fails the test that ran it."""
        with open(self.log_path, errors="replace") as f:
            log = f.read()
        for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "WARNING: ThreadSanitizer"):
            at = log.find(marker)
            if at >= 0:
                raise AssertionError(f"sanitizer report in {self.log_path}:\n{log[at:at + 4000]}")

    def cleanup(self) -> None:
        if self.owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                port: int | None = None):
        """One request on a fresh connection: (status, headers as lower-case dict, body bytes); to the
        main listener, or to `port`."""
        conn = http.client.HTTPConnection(self.host, port or self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """The node's /metrics samples: 'name{labels}' -> value."""
        _, _, body = self.metrics_request()
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metrics_request(self):
        """GET /metrics on the node's metrics listener: (status, headers, body)."""
        return self.request("GET", "/metrics", port=self.metrics_port)

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def resolve_path(self, repo: str, rev: str, path: str, prefix: str = "") -> str:
        return f"/{prefix}{repo}/resolve/{urllib.parse.quote(rev, safe='')}/{urllib.parse.quote(path)}"


class HubAndNodeTest(unittest.TestCase):
    """A fake Hub and a node in front of it, started once for the whole test class; `hub_args` are the
    fake Hub's options, `node_args` the node's, `admin_key` the node's admin key (none by default)."""

    hub_args: tuple[str, ...] = ()
    node_args: tuple[str, ...] = ()
    admin_key: str | None = None

    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub(*cls.hub_args).start()
        try:
            cls.node = Node(cls.hub.url, None, *cls.node_args, admin_key=cls.admin_key).start()
        except BaseException:
            cls.hub.stop()  # a fake Hub left running would hold the test's output open
            raise

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released) for a server that must be told its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Polls `predicate` until it returns something true (and returns that), or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling an observable state, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


def access_lines(text: str) -> list[dict]:
    """The access log's entries in `text` (stdout or the log file as read so far): whole lines only, since the
    node may be halfway through writing the last one; the node's start lines are not JSON."""
    whole = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.startswith("{")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Redis:
    """redis-server on a free loopback port, without persistence."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="inferllama-redis-")
        self.proc = None

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        for raw in self.proc.stdout:  # redis logs "Ready to accept connections" once it listens
            if b"Ready to accept connections" in raw:
                break
        else:
            raise RuntimeError("redis-server exited before it was ready")
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self.proc.stdout.close()
            self.proc = None

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """What redis-cli answers to one command, as it prints it."""
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
