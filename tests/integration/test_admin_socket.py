"""Administration: no caller is the admin for its address. Over TCP the admin API needs the admin key
(a node without one does not serve it over TCP); on the node's own host it is served on a Unix socket
in the data directory (mode 0600, the node's user only), which the CLI uses beside the node. A mirror
source must be a node's URL: a server that is no node, or that redirects, is asked nothing more."""
from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY  # noqa: E402
from harness import BINARY, FakeHub, HubAndNodeTest, Node, clean_env  # noqa: E402

JSON = {"Content-Type": "application/json"}
PIN = json.dumps({"repo": "acme/tiny-model"}).encode()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=120, env=clean_env(env))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def over_socket(path: str, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    conn = UnixConnection(path)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def start_failure(hub: FakeHub, data_dir: str, *extra: str) -> subprocess.CompletedProcess:
    """Runs a node that is expected to refuse to start; returns how it exited."""
    return subprocess.run([BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--upstream", hub.url,
                           "--bt-listen", "127.0.0.1:0", "--tracker-udp", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                           *extra],
                          capture_output=True, text=True, timeout=60, env=clean_env())


class CountingServer:
    """A plain HTTP server on loopback that counts the requests it gets; `answer` gives status and headers."""

    def __init__(self, answer):
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.paths.append(self.path)
                status, headers = answer(self.path)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            do_HEAD = do_POST = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class LoopbackIsNoIdentityTest(HubAndNodeTest):
    """A node without admin_key, asked from loopback over TCP: a reverse proxy on the host would be that."""

    def test_the_admin_api_is_not_served_over_tcp(self):
        mirror = json.dumps({"repo": "acme/tiny-model", "from": self.node.url}).encode()
        for action, body in (("pin", PIN), ("unpin", PIN), ("gc", b"{}"), ("backup", b"{}"), ("mirror", mirror),
                             ("refresh", PIN), ("prefetch/add", PIN), ("prefetch/remove", PIN)):
            status, _, answer = self.node.request("POST", f"/api/inferllama/{action}", JSON, body)
            self.assertEqual(status, 403, (action, answer))
            self.assertIn(b"admin socket", answer, action)
            self.assertIn(b"admin_key", answer, action)
        for path in ("/api/inferllama/users", "/api/inferllama/keys?user=x", "/api/inferllama/cluster",
                     "/api/inferllama/prefetch"):
            self.assertEqual(self.node.request("GET", path)[0], 403, path)
        self.assertEqual(self.node.request("GET", "/api/usage")[0], 401)

    def test_the_admin_socket_is_the_owners_and_serves_the_admin_api_only(self):
        path = os.path.join(self.node.data_dir, "admin.sock")
        mode = os.lstat(path)
        self.assertTrue(stat.S_ISSOCK(mode.st_mode))
        self.assertEqual(stat.S_IMODE(mode.st_mode), 0o600)
        self.assertEqual(mode.st_uid, os.getuid())
        self.assertEqual(over_socket(path, "GET", "/healthz")[0], 200)
        status, body = over_socket(path, "POST", "/api/inferllama/gc", b"{}", JSON)
        self.assertEqual(status, 200, body)
        self.assertIn("chunks_removed", json.loads(body))
        status, body = over_socket(path, "POST", "/api/inferllama/users", b'{"name": "sam"}', JSON)
        self.assertEqual(status, 201, body)
        status, body = over_socket(path, "GET", "/api/usage")
        self.assertEqual(status, 200, body)
        # The admin API's content rules hold here too.
        self.assertEqual(over_socket(path, "POST", "/api/inferllama/gc", b"{}", {"Content-Type": "text/plain"})[0],
                         415)
        for target in ("/metrics", "/api/models/acme/tiny-model", "/acme/tiny-model/resolve/main/config.json"):
            self.assertEqual(over_socket(path, "GET", target)[0], 404, target)

    def test_the_cli_beside_the_node_uses_the_socket(self):
        beside = ["--data-dir", self.node.data_dir]
        uncached = cli("pin", "acme/tiny-model", *beside)
        self.assertEqual(uncached.returncode, 1)
        self.assertIn("is cached: fetch it first (inferllama pull), then pin it", uncached.stderr)
        pulled = cli("pull", "acme/tiny-model", "--node", self.node.url, "--quiet")
        self.assertEqual(pulled.returncode, 0, pulled.stderr)
        self.assertEqual(pulled.stderr, "", "--quiet is quiet")
        self.assertRegex(pulled.stdout, r"^model/acme/tiny-model@[0-9a-f]{40}: \d+ files, .* cached on http")
        pinned = cli("pin", "acme/tiny-model", *beside)
        self.assertEqual(pinned.returncode, 0, pinned.stderr)
        self.assertRegex(pinned.stdout, r"^pinned model/acme/tiny-model@[0-9a-f]{40}: its cached files are never evicted")
        self.assertIn("was pinned already", cli("pin", "models/acme/tiny-model@main", *beside).stdout)
        listed = subprocess.run([BINARY, "ls", *beside], capture_output=True, text=True, timeout=60, env=clean_env())
        self.assertRegex(listed.stdout, r"@[0-9a-f]{40} .*\[main\]  pinned")
        self.assertIn("unpinned model/acme/tiny-model@", cli("unpin", "acme/tiny-model", *beside).stdout)
        self.assertIn("was not pinned", cli("unpin", "acme/tiny-model", *beside).stdout)
        # A dataset is named as the Hub's URLs and `mirrors` name it; a type that disagrees is refused.
        self.assertEqual(cli("pull", "datasets/acme/tiny-dataset", "--node", self.node.url, "-q").returncode, 0)
        self.assertIn("pinned dataset/acme/tiny-dataset@", cli("pin", "datasets/acme/tiny-dataset", *beside).stdout)
        conflict = cli("pin", "datasets/acme/tiny-dataset", "--repo-type", "model", *beside)
        self.assertEqual(conflict.returncode, 2)
        self.assertIn("names a dataset, --repo-type says model", conflict.stderr)
        collected = cli("gc", "--data-dir", self.node.data_dir)
        self.assertEqual(collected.returncode, 0, collected.stderr)
        self.assertIn("unreferenced chunks", collected.stdout)
        added = cli("user", "add", "tess", "--data-dir", self.node.data_dir)
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertIn("tess", cli("user", "list", "--data-dir", self.node.data_dir).stdout)
        self.assertEqual(cli("usage", "--data-dir", self.node.data_dir).returncode, 0)
        self.assertEqual(cli("gc", "--node", self.node.url, "--data-dir", self.node.data_dir).returncode, 2)
        # Over TCP the node says where to go instead.
        refused = cli("gc", "--node", self.node.url)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("HTTP 403", refused.stderr)

    def test_the_cli_away_from_a_node(self):
        with tempfile.TemporaryDirectory() as elsewhere:
            done = cli("gc", "--data-dir", elsewhere)
            self.assertEqual(done.returncode, 1)
            self.assertIn(f"no node runs on {elsewhere}: run this beside the node with its --data-dir or --config, "
                          "or ask it over HTTP(S) with --node URL and its admin key", done.stderr)


class AdminKeyTest(unittest.TestCase):
    def test_over_tcp_the_admin_key_is_needed(self):
        with FakeHub() as hub, Node(hub.url, None, admin_key=ADMIN_KEY) as node:
            for headers in (JSON, {**JSON, "Authorization": "Bearer not-the-admin-key-0000"}):
                self.assertEqual(node.request("POST", "/api/inferllama/gc", headers, b"{}")[0], 401)
                self.assertEqual(node.request("GET", "/api/inferllama/cluster", headers)[0], 401)
            self.assertEqual(node.request("POST", "/api/inferllama/gc",
                                          {**JSON, "Authorization": f"Bearer {ADMIN_KEY}"}, b"{}")[0], 200)
            self.assertEqual(cli("gc", "--node", node.url).returncode, 1)
            key = {"INFERLLAMA_ADMIN_KEY": ADMIN_KEY}
            for done in (cli("pull", "acme/tiny-model", "--node", node.url, "--quiet"),
                         cli("pin", "acme/tiny-model", "--node", node.url, env=key),
                         cli("gc", env={"INFERLLAMA_NODE": node.url, **key}),
                         cli("user", "list", "--node", node.url, env=key)):
                self.assertEqual(done.returncode, 0, done.stderr)


class SocketLifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def test_a_stale_socket_is_replaced_and_removed_at_stop(self):
        with tempfile.TemporaryDirectory() as data_dir:
            path = os.path.join(data_dir, "admin.sock")
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)
            stale.close()  # left behind, as by a node that was killed
            with Node(self.hub.url, data_dir) as node:
                self.assertEqual(over_socket(path, "GET", "/healthz")[0], 200)
                self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o600)
                node.stop()
                self.assertFalse(os.path.exists(path))

    def test_a_live_nodes_socket_or_another_file_refuses_the_start(self):
        with Node(self.hub.url) as first, tempfile.TemporaryDirectory() as data_dir:
            taken = os.path.join(first.data_dir, "admin.sock")
            done = start_failure(self.hub, data_dir, "--admin-socket", taken)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn(f"another node serves the admin socket {taken}", done.stderr)
            self.assertEqual(over_socket(taken, "GET", "/healthz")[0], 200)  # still the first node's
            a_file = os.path.join(data_dir, "not-a-socket")
            with open(a_file, "w") as f:
                f.write("keep me")
            done = start_failure(self.hub, data_dir, "--admin-socket", a_file)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("exists and is not a socket", done.stderr)
            with open(a_file) as f:
                self.assertEqual(f.read(), "keep me")

    def test_no_socket_when_turned_off(self):
        with Node(self.hub.url, None, "--admin-socket", "") as node:
            self.assertNotIn("admin.sock", os.listdir(node.data_dir))
            self.assertEqual(node.request("POST", "/api/inferllama/gc", JSON, b"{}")[0], 403)


class MirrorSourceTest(HubAndNodeTest):
    """`mirror --from` is an SSRF vector unless the source must be a node and is asked for nothing else."""

    def mirror(self, source: str) -> subprocess.CompletedProcess:
        done = cli("mirror", "acme/tiny-model", "--from", source, "--data-dir", self.node.data_dir)
        self.assertEqual(done.returncode, 1, done.stdout)
        return done

    def test_a_server_that_is_no_node_is_asked_nothing_more(self):
        other = CountingServer(lambda path: (200, [("X-Repo-Commit", "0" * 40)]))
        try:
            done = self.mirror(other.url)
            self.assertIn("is not an InferLlama node", done.stderr)
            self.assertEqual(other.paths, ["/healthz"])
        finally:
            other.close()

    def test_a_redirect_is_not_followed(self):
        target = CountingServer(lambda path: (200, [("X-InferLlama-Node", "0.1.0")]))
        redirector = CountingServer(lambda path: (302, [("Location", target.url + path)]))
        try:
            done = self.mirror(redirector.url)
            self.assertIn("redirect", done.stderr)
            self.assertEqual(redirector.paths, ["/healthz"])
            self.assertEqual(target.paths, [])
        finally:
            redirector.close()
            target.close()

    def test_a_source_url_is_a_nodes_base_url(self):
        other = CountingServer(lambda path: (200, [("X-InferLlama-Node", "0.1.0")]))
        host = other.url[len("http://"):]
        try:
            for source in (f"http://user:pw@{host}", f"{other.url}/?x=1", f"{other.url}/#x", f"ftp://{host}",
                           f"file:///etc/passwd", "http://:8080"):
                done = self.mirror(source)
                self.assertIn("HTTP 400", done.stderr, source)
            self.assertEqual(other.paths, [])
        finally:
            other.close()


if __name__ == "__main__":
    unittest.main()
