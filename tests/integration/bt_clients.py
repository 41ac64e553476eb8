"""Real BitTorrent clients against a node, each on its own host of a namespace network (netns.py): the node
and the fake Hub on one host, every client on another, so addresses are what a LAN gives them, never
loopback.

`NodeOnNetworkTest` starts the network, the fake Hub and the node once per test class; each test makes a
host for its client (`client_host()`), which is removed with everything it ran when the test ends. The
clients: qBittorrent (`QBittorrent`, through its Web API), Transmission (`Transmission`: transmission-daemon
added to with transmission-remote, watched through its RPC), aria2c (`aria2c`) and libtorrent's Python
bindings (`libtorrent_client`, lt_client.py). Every wait polls a client with a deadline; a failure message
carries what the client logged.
"""
from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

import netns
from harness import FakeHub, Node, sha256

REPO = "acme/tiny-model"
NAME = "tiny-model"  # the torrent's name: clients save the snapshot under it
HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-libtorrent is built for it
DOWNLOAD_TIMEOUT = 120  # seconds for 14 MiB between namespaces: 1 to 30 (Transmission) on an idle machine; the
# margin is for a loaded one and costs time only when a download fails
LOG_TAIL = 12000  # characters of a client's log in a failure message


def tail(path: str, limit: int = LOG_TAIL) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError as e:
        return f"({path}: {e})"
    return text[-limit:]


def client_version(argv: list[str]) -> str:
    """The version a client's `--version` prints first ("1.36.0" of "aria2 version 1.36.0", "3.00" of
    "transmission-daemon 3.00 (bb6b5a062e)"), or "" when it prints none."""
    try:
        shown = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    for word in (shown.stdout + shown.stderr).split():
        if word[:1].isdigit():
            return word
    return ""


def poll(check, timeout: float, interval: float = 0.25):
    """Calls `check` until it returns something true (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # polling a client's reported state, bounded by the deadline


class QBittorrent:
    """qbittorrent-nox (4.5, libtorrent 2.0) with a profile of its own in `workdir`: the legal notice
    accepted, a WebUI password set and DHT, local discovery, peer exchange and UPnP off, so the node's
    tracker, seed and web seed are its only sources. Otherwise as installed: TCP and uTP, encryption
    allowed."""

    WEBUI_PORT = 8080
    PEER_PORT = 6881
    USER = "admin"

    def __init__(self, host: netns.Host, workdir: str):
        self.host = host
        self.profile = os.path.join(workdir, "profile")
        self.downloads = os.path.join(workdir, "downloads")
        self.log_path = os.path.join(self.profile, "qBittorrent", "data", "logs", "qbittorrent.log")
        self.stdout_path = os.path.join(workdir, "qbittorrent.out")
        self.base = f"http://{host.address}:{self.WEBUI_PORT}"
        self.password = secrets.token_urlsafe(16)
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def start(self) -> "QBittorrent":
        config_dir = os.path.join(self.profile, "qBittorrent", "config")
        os.makedirs(config_dir)
        os.makedirs(self.downloads)
        salt = os.urandom(16)
        key = hashlib.pbkdf2_hmac("sha512", self.password.encode(), salt, 100000, 64)  # qBittorrent's PBKDF2
        with open(os.path.join(config_dir, "qBittorrent.conf"), "w") as f:
            f.write(f"""[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\Port={self.PEER_PORT}
Session\\DefaultSavePath={self.downloads}
Session\\QueueingSystemEnabled=false

[Preferences]
Connection\\UPnP=false
WebUI\\Port={self.WEBUI_PORT}
WebUI\\Username={self.USER}
WebUI\\Password_PBKDF2="@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"
""")
        with open(self.stdout_path, "wb") as out:
            self.proc = self.host.popen(["qbittorrent-nox", f"--profile={self.profile}"], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not poll(self._login, 30):
            raise AssertionError(f"qBittorrent's WebUI did not let us log in{self.logs()}")
        return self

    def _login(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"qbittorrent-nox exited with {self.proc.returncode}{self.logs()}")
        try:
            body = urllib.parse.urlencode({"username": self.USER, "password": self.password}).encode()
            with self.opener.open(f"{self.base}/api/v2/auth/login", data=body, timeout=5) as r:
                return r.read() == b"Ok."
        except (urllib.error.URLError, ConnectionError):
            return False  # not listening yet

    def api(self, path: str, fields: dict | None = None, files: dict | None = None):
        """One Web API call: GET without `fields`/`files`, else a multipart POST; JSON answers decoded."""
        data, headers = None, {}
        if fields is not None or files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for name, value in (fields or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                             + str(value).encode() + b"\r\n")
            for name, (filename, content) in (files or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                             f'filename="{filename}"\r\nContent-Type: application/x-bittorrent\r\n\r\n'.encode()
                             + content + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with self.opener.open(request, timeout=30) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body.decode()

    def add_torrent(self, torrent: bytes) -> None:
        answer = self.api("/api/v2/torrents/add", {"savepath": self.downloads},
                          {"torrents": (f"{NAME}.torrent", torrent)})
        if answer != "Ok.":
            raise AssertionError(f"qBittorrent refused the torrent: {answer}{self.logs()}")

    def add_magnet(self, uri: str) -> None:
        answer = self.api("/api/v2/torrents/add", {"urls": uri, "savepath": self.downloads})
        if answer != "Ok.":
            raise AssertionError(f"qBittorrent refused the magnet link: {answer}{self.logs()}")

    def torrent(self, info_hash: str) -> dict | None:
        """The torrent's entry in /api/v2/torrents/info by its v1 or v2 info-hash."""
        for entry in self.api("/api/v2/torrents/info"):
            if info_hash in (entry.get("infohash_v1"), entry.get("infohash_v2"), entry.get("hash")):
                return entry
        return None

    def wait_complete(self, info_hash: str, timeout: float = DOWNLOAD_TIMEOUT) -> dict:
        """Polls the torrent until every byte is in (its entry), or fails with qBittorrent's log."""
        last: dict = {}

        def done():
            nonlocal last
            last = self.torrent(info_hash) or {}
            if last.get("state") in ("error", "missingFiles"):
                raise AssertionError(f"qBittorrent's torrent failed: {last}{self.logs()}")
            return last if last.get("progress") == 1 and last.get("amount_left") == 0 else None

        if not poll(done, timeout):
            raise AssertionError(f"qBittorrent did not complete the download in {timeout} s: {last}{self.logs()}")
        return last

    def logs(self) -> str:
        return (f"\n--- qBittorrent log ({self.log_path}) ---\n{tail(self.log_path)}"
                f"\n--- qbittorrent-nox output ---\n{tail(self.stdout_path, 2000)}")


class Transmission:
    """transmission-daemon 3.00 with a config dir of its own in `workdir`, RPC without authentication on
    its host's address; DHT, local discovery, peer exchange and port mapping off. Otherwise as installed:
    TCP and uTP, encryption preferred. Torrents are added with transmission-remote, as a user does."""

    RPC_PORT = 9091
    PEER_PORT = 51413

    def __init__(self, host: netns.Host, workdir: str):
        self.host = host
        self.config_dir = os.path.join(workdir, "config")
        self.downloads = os.path.join(workdir, "downloads")
        self.log_path = os.path.join(workdir, "transmission.log")
        self.rpc = f"{host.address}:{self.RPC_PORT}"
        self.session_id = ""

    def start(self) -> "Transmission":
        os.makedirs(self.config_dir)
        os.makedirs(self.downloads)
        settings = {
            "download-dir": self.downloads, "incomplete-dir-enabled": False, "watch-dir-enabled": False,
            "rpc-enabled": True, "rpc-bind-address": self.host.address, "rpc-port": self.RPC_PORT,
            "rpc-authentication-required": False, "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False, "peer-port": self.PEER_PORT, "port-forwarding-enabled": False,
            "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "message-level": 3,
        }
        with open(os.path.join(self.config_dir, "settings.json"), "w") as f:
            json.dump(settings, f)
        self.proc = self.host.popen(["transmission-daemon", "--foreground", "--config-dir", self.config_dir,
                                     "--logfile", self.log_path], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not poll(self._rpc_ready, 30):
            raise AssertionError(f"transmission-daemon's RPC did not answer{self.logs()}")
        return self

    def _rpc_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"transmission-daemon exited with {self.proc.returncode}{self.logs()}")
        try:
            self.call("session-get")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def call(self, method: str, arguments: dict | None = None) -> dict:
        """One RPC call (with the X-Transmission-Session-Id handshake); its `arguments`."""
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        for _ in range(2):
            request = urllib.request.Request(f"http://{self.rpc}/transmission/rpc", data=body,
                                             headers={"X-Transmission-Session-Id": self.session_id})
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    answer = json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code != 409:
                    raise
                self.session_id = e.headers["X-Transmission-Session-Id"]  # the handshake: ask again with it
                continue
            if answer.get("result") != "success":
                raise AssertionError(f"transmission RPC {method}: {answer}{self.logs()}")
            return answer["arguments"]
        raise AssertionError(f"transmission RPC {method}: no session id accepted")

    def add(self, source: str) -> subprocess.CompletedProcess:
        """transmission-remote --add with a .torrent path or a magnet URI; the completed process."""
        return self.host.run(["transmission-remote", self.rpc, "--add", source], capture_output=True, text=True,
                             timeout=60)

    def torrent(self, info_hash: str) -> dict | None:
        fields = ["hashString", "name", "percentDone", "leftUntilDone", "status", "error", "errorString",
                  "metadataPercentComplete", "peersConnected", "webseedsSendingToUs"]
        torrents = self.call("torrent-get", {"ids": [info_hash], "fields": fields})["torrents"]
        return torrents[0] if torrents else None

    def wait_complete(self, info_hash: str, timeout: float = DOWNLOAD_TIMEOUT) -> dict:
        last: dict = {}

        def done():
            nonlocal last
            last = self.torrent(info_hash) or {}
            if last.get("error") == 3:  # a local error (1 and 2 are tracker warnings and errors)
                raise AssertionError(f"Transmission's torrent failed: {last}{self.logs()}")
            complete = last.get("percentDone") == 1 and last.get("leftUntilDone") == 0
            return last if complete and last.get("metadataPercentComplete") == 1 else None

        if not poll(done, timeout):
            raise AssertionError(f"Transmission did not complete the download in {timeout} s: {last}{self.logs()}")
        return last

    def logs(self) -> str:
        return f"\n--- transmission-daemon log ({self.log_path}) ---\n{tail(self.log_path)}"


def aria2c(host: netns.Host, source: str, directory: str, *extra: str,
           timeout: int = DOWNLOAD_TIMEOUT) -> subprocess.CompletedProcess:
    """aria2c (1.36) in `host` on a .torrent file or a magnet URI, as a user runs it but with DHT, local
    discovery and peer exchange off (extra options go last and win)."""
    return host.run(
        ["aria2c", f"--dir={directory}", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
         "--enable-peer-exchange=false", "--seed-time=0", "--summary-interval=0", "--show-console-readout=false",
         "--console-log-level=notice", "--file-allocation=none", f"--bt-stop-timeout={timeout}",
         "--bt-tracker-connect-timeout=10", *extra, source], capture_output=True, text=True, timeout=timeout + 30)


def libtorrent_client(host: netns.Host, source: str, directory: str,
                      timeout: int = DOWNLOAD_TIMEOUT) -> subprocess.CompletedProcess:
    """lt_client.py (libtorrent 2.0's Python bindings) in `host` on a .torrent file or a magnet URI."""
    if not os.path.exists(SYSTEM_PYTHON):
        raise AssertionError("python3-libtorrent needs /usr/bin/python3 (scripts/install-deps.sh --test)")
    return host.run([SYSTEM_PYTHON, os.path.join(HERE, "lt_client.py"), source, directory, "--timeout",
                     str(timeout), "--listen", f"{host.address}:6881"],
                    capture_output=True, text=True, timeout=timeout + 30)


class EveryKindWorks:
    """The test of every cell of a client that takes v1, hybrid and v2 torrents over the peer wire alone, the
    web seed alone and magnet links (each named in the README's table); the client's test class says how
    with `peer_wire`, `web_seed` and `magnet`."""

    def test_v1_peer_wire(self):
        self.peer_wire("v1")

    def test_v1_web_seed(self):
        self.web_seed("v1")

    def test_v1_magnet(self):
        self.magnet("v1")

    def test_hybrid_peer_wire(self):
        self.peer_wire("hybrid")

    def test_hybrid_web_seed(self):
        self.web_seed("hybrid")

    def test_hybrid_magnet(self):
        self.magnet("hybrid")

    def test_v2_peer_wire(self):
        self.peer_wire("v2")

    def test_v2_web_seed(self):
        self.web_seed("v2")

    def test_v2_magnet(self):
        self.magnet("v2")


class NodeOnNetworkTest(unittest.TestCase):
    """The fake Hub and the node on host .1 of a fresh network, once per class. The node listens (HTTP,
    peer wire, UDP tracker, metrics) on that address only, so its tracker names its seed there."""

    net: netns.Network
    node: Node
    hub: FakeHub

    @classmethod
    def setUpClass(cls):
        cls.net = netns.Network()
        try:
            cls.node_host = cls.net.add_host("node")
            address = cls.node_host.address
            cls.hub = FakeHub("--host", address, launcher=cls.node_host.command([])).start()
            cls.files = cls.hub.files(REPO)
            cls.commit = cls.hub.commit(REPO)
            cls.node = Node(cls.hub.url, None, "--listen", f"{address}:0", "--bt-listen", f"{address}:0",
                            "--tracker-udp", f"{address}:0", "--metrics-listen", f"{address}:0",
                            launcher=cls.node_host.command([]))
            cls.node.start()
            cls.tmp = tempfile.mkdtemp(prefix="inferllama-clients-")
            cls._torrents: dict[str, tuple[bytes, dict]] = {}
        except BaseException:
            cls._stop_all()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._stop_all()

    @classmethod
    def _stop_all(cls):
        if getattr(cls, "node", None):
            cls.node.stop()
            cls.node.cleanup()
        if getattr(cls, "hub", None):
            cls.hub.stop()
        cls.net.close()
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- the node's torrents ------------------------------------------------------------------------

    def torrent(self, kind: str) -> tuple[bytes, dict]:
        """The node's .torrent of the snapshot ("v1", "hybrid" or "v2") and its headers, fetched once per
        class."""
        if kind not in self._torrents:
            query = "" if kind == "v1" else f"?format={kind}"
            status, headers, body = self.node.request("GET", f"/api/models/{REPO}/torrent/main{query}")
            self.assertEqual(status, 200, body[:300])
            self._torrents[kind] = (body, headers)
        return self._torrents[kind]

    def info_hash(self, kind: str) -> str:
        """The hash a client files the torrent under: v1 where there is one, else the v2 hash (a v2 torrent
        has only that header)."""
        headers = self.torrent(kind)[1]
        return headers["x-inferllama-info-hash"] if kind != "v2" else headers["x-inferllama-info-hash-v2"]

    def torrent_file(self, kind: str) -> str:
        data = self.torrent(kind)[0]
        path = os.path.join(self.tmp, f"{kind}.torrent")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def magnet_link(self, kind: str) -> str:
        query = "" if kind == "v1" else f"?format={kind}"
        status, _, body = self.node.request("GET", f"/api/models/{REPO}/magnet/main{query}")
        self.assertEqual(status, 200, body[:300])
        return body.decode()

    # -- hosts and what reaches them ----------------------------------------------------------------

    def client_host(self, name: str) -> netns.Host:
        """A new host for this test's client, removed with its processes when the test ends."""
        host = self.net.add_host(name)
        self.addCleanup(host.close)
        return host

    def block_seed(self, host: netns.Host) -> None:
        """What `host` sends to the node's peer wire (TCP and uTP) is dropped: only its web seed can serve."""
        host.block(self.node_host, self.node.bt_port, "tcp")
        host.block(self.node_host, self.node.bt_port, "udp")

    def block_http(self, host: netns.Host) -> None:
        """What `host` sends to the node's HTTP port (web seed and HTTP tracker) is dropped: peers come from
        the UDP tracker, bytes from the node's seed."""
        host.block(self.node_host, self.node.port, "tcp")

    def workdir(self, name: str) -> str:
        path = os.path.join(self.tmp, f"{self.id().rsplit('.', 1)[-1]}-{name}")
        os.makedirs(path)
        return path

    # -- what the node saw --------------------------------------------------------------------------

    def sources(self) -> tuple[float, float]:
        """(payload bytes the node's seed uploaded, web seed requests answered) once no peer is connected to
        the seed: the seed's counters are sampled together every second, so the first sample without a
        peer counts every byte sent to the peers that left."""
        def settled():
            metrics = self.node.metrics()
            return metrics if metrics.get("inferllama_bt_peers", 0) == 0 else None

        metrics = poll(settled, 30)
        self.assertIsNotNone(metrics, "the node's seed kept a peer connection open")
        webseed = sum(v for k, v in metrics.items() if k.startswith('inferllama_http_requests_total{route="webseed"'))
        return metrics.get("inferllama_bt_uploaded_bytes_total", 0.0), webseed

    def assert_came_from(self, before: tuple[float, float], source: str) -> None:
        """Every byte came from `source` ("seed" or "web seed") and none from the other."""
        total = sum(entry["size"] for entry in self.files.values())
        if source == "seed":
            uploaded = poll(lambda: self.node.metric("inferllama_bt_uploaded_bytes_total") - before[0] >= total, 15)
            self.assertTrue(uploaded, "the node's seed sent less than the snapshot")
            self.assertEqual(self.sources()[1], before[1], "the web seed was asked")
        else:
            uploaded, webseed = self.sources()
            self.assertGreater(webseed, before[1], "the web seed was never asked")
            self.assertEqual(uploaded, before[0], "the node's seed sent bytes")

    def assert_snapshot(self, root: str, *, writes_pad_files: bool = False, creates_empty_files: bool = True) -> None:
        """Every file of the snapshot under `root`, byte for byte as the Hub has it. Clients that write the
        BEP 47 pad files to disk (aria2, Transmission) must have written zeros of each pad's size under
        `.pad/`; the others none. A client that creates no empty file (Transmission 3.00) must not have."""
        for path, entry in self.files.items():
            full = os.path.join(root, path)
            if entry["size"] == 0 and not creates_empty_files:
                self.assertFalse(os.path.exists(full), f"{path} was created")
                continue
            self.assertTrue(os.path.isfile(full), f"{path} missing under {root}: {os.listdir(root)}")
            with open(full, "rb") as f:
                self.assertEqual(sha256(f.read()), entry["sha256"], path)
        pads = os.path.join(root, ".pad")
        if not writes_pad_files:
            self.assertFalse(os.path.exists(pads), "pad files on disk")
            return
        self.assertTrue(os.listdir(pads), "no pad file on disk")
        for name in os.listdir(pads):
            with open(os.path.join(pads, name), "rb") as f:
                self.assertEqual(f.read(), bytes(int(name)), f".pad/{name}")
