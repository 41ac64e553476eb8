"""A hostile client against the real node: response splitting through decoded segments and queries,
request smuggling with Transfer-Encoding, counters on the public listener, guessing credentials, and a
failing index on the request path."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node  # noqa: E402

MODEL = "acme/tiny-model"
ADMIN_KEY = "admin-key-for-trust-tests-0123456789"


def raw_exchange(node: Node, request: bytes) -> bytes:
    """Sends bytes as they are and reads until the node closes the connection or 5 s pass."""
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except socket.timeout:
            pass
        return data


def head_of(response: bytes) -> str:
    return response.split(b"\r\n\r\n", 1)[0].decode("latin-1")


class ResponseSplittingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.online = Node(cls.hub.url).start()
        cls.offline = Node(cls.hub.url, None, "--offline").start()

    @classmethod
    def tearDownClass(cls):
        for node in (cls.online, cls.offline):
            node.stop()
            node.cleanup()
        cls.hub.stop()

    TARGETS = (
        f"/{MODEL}/resolve/main%0d%0aSet-Cookie:x=1/config.json",
        f"/{MODEL}/resolve/main%0aSet-Cookie:x=1/config.json",
        f"/api/models/{MODEL}/revision/main%0d%0aSet-Cookie:x=1",
        f"/api/models/{MODEL}/tree/main%0d%0aSet-Cookie:x=1",
        f"/api/models/{MODEL}/torrent/main%0d%0aSet-Cookie:x=1",
        f"/api/models/{MODEL}/tree/main?cursor=x%0d%0aSet-Cookie:x=1",
        f"/api/models/{MODEL}?expand=sha%0d%0aSet-Cookie:x=1",
    )

    def test_control_characters_in_segments_and_queries_are_refused(self):
        for node in (self.online, self.offline):
            for target in self.TARGETS:
                response = raw_exchange(node, f"GET {target} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n".encode())
                head = head_of(response)
                self.assertTrue(head.startswith("HTTP/1.1 400"), f"{target}: {head}")
                self.assertNotIn("\r\nSet-Cookie", head, target)
                self.assertIn("\r\nContent-Security-Policy:", head)
                self.assertEqual(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"].split()[0], "invalid")

    def test_upstream_error_messages_cannot_split_a_response(self):
        # A revision the Hub does not know, with characters that are legal but end up in X-Error-Message.
        for node in (self.online, self.offline):
            target = f"/{MODEL}/resolve/no%22such%5Cbranch%09x/config.json"
            response = raw_exchange(node, f"GET {target} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n".encode())
            head = head_of(response)
            self.assertRegex(head, r"^HTTP/1.1 (404|504)")
            for line in head.split("\r\n")[1:]:
                self.assertRegex(line, r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\t\x20-\x7e\x80-\xff]*$")


class SmugglingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def exchange(self, transfer_encoding: str) -> bytes:
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
        return raw_exchange(self.node, (
            f"POST /api/models/{MODEL}/paths-info/main HTTP/1.1\r\nHost: n\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: {transfer_encoding}\r\n\r\n"
        ).encode() + body)

    def test_a_non_final_chunked_is_a_400_and_nothing_else_is_read(self):
        for coding in ("chunked, identity", "gzip", "identity"):
            response = self.exchange(coding)
            self.assertTrue(response.startswith(b"HTTP/1.1 400"), (coding, response[:200]))
            self.assertEqual(response.count(b"HTTP/1.1 "), 1, (coding, response))
            self.assertIn(b"Connection: close", response)

    def test_codings_before_chunked_are_not_implemented(self):
        response = self.exchange("gzip, chunked")
        self.assertTrue(response.startswith(b"HTTP/1.1 501"), response[:200])
        self.assertEqual(response.count(b"HTTP/1.1 "), 1)

    def test_plain_chunked_still_works(self):
        response = raw_exchange(self.node, (
            f"POST /api/models/{MODEL}/paths-info/main HTTP/1.1\r\nHost: n\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            "e\r\npaths=README.md\r\n0\r\n\r\n").encode())
        self.assertTrue(response.startswith(b"HTTP/1.1 200"), response[:300])


class MetricsAndCredentialsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url, None, "--admin-key", ADMIN_KEY,
                        "--auth-failure-limit", "requests=5/1m burst=5").start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def test_metrics_are_on_their_own_listener_or_need_the_admin_key(self):
        status, _, body = self.node.request("GET", "/metrics")
        self.assertEqual(status, 404)
        self.assertNotIn(b"inferllama_", body)
        status, _, body = self.node.request("GET", "/metrics", {"Authorization": "Bearer " + ADMIN_KEY})
        self.assertEqual(status, 200)
        self.assertIn(b"inferllama_http_requests_total", body)
        status, _, body = self.node.metrics_request()
        self.assertEqual(status, 200)
        # The metrics listener answers nothing else.
        status, _, _ = self.node.request("GET", self.node.resolve_path(MODEL, "main", "config.json"),
                                         port=self.node.metrics_port)
        self.assertEqual(status, 404)
        status, _, _ = self.node.request("GET", "/healthz", port=self.node.metrics_port)
        self.assertEqual(status, 200)

    def test_guessing_keys_is_limited_per_address(self):
        before = self.node.metrics()
        target = self.node.resolve_path(MODEL, "main", "config.json")
        statuses = [self.node.request("GET", target, {"Authorization": f"Bearer il_{'x' * 40}{i:03d}"})[0]
                    for i in range(5)]
        self.assertEqual(statuses, [401] * 5)
        status, headers, body = self.node.request("GET", target, {"Authorization": f"Bearer il_{'y' * 43}"})
        self.assertEqual(status, 429, body)
        self.assertGreater(int(headers["retry-after"]), 0)
        self.assertIn(b"too many refused credentials", body)
        # The admin key is guessed under the same guard.
        status, _, _ = self.node.request("POST", "/api/inferllama/gc", {"Authorization": "Bearer wrong" * 4,
                                                                         "Content-Type": "application/json"}, b"{}")
        self.assertEqual(status, 429)
        # Requests without credentials from the same address are served as before.
        self.assertEqual(self.node.request("GET", target)[0], 200)
        after = self.node.metrics()
        self.assertEqual(after["inferllama_auth_failures_total"] - before.get("inferllama_auth_failures_total", 0), 5)
        self.assertGreaterEqual(after["inferllama_auth_blocked_total"], 2)


class IndexFailureTest(unittest.TestCase):
    """The index failing on the request path (here: no space left for RocksDB's log) is a 500 that is
    counted and logged, never a connection dropped without an answer."""

    def setUp(self):
        self.mount = tempfile.mkdtemp(prefix="inferllama-index-")
        mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", self.mount], capture_output=True).returncode == 0
        if not mounted:
            os.rmdir(self.mount)
            self.skipTest("needs root to mount a small tmpfs")
        self.addCleanup(self.unmount)
        self.hub = FakeHub().start()
        self.addCleanup(self.hub.stop)
        data = os.path.join(self.mount, "data")
        os.makedirs(data)
        self.node = Node(self.hub.url, data).start()
        self.addCleanup(self.node.stop)

    def unmount(self):
        subprocess.run(["umount", self.mount], capture_output=True)
        os.rmdir(self.mount)

    def test_an_index_write_error_is_a_500(self):
        st = os.statvfs(self.mount)
        with open(os.path.join(self.mount, "filler"), "wb") as fh:
            try:
                fh.write(b"\0" * (st.f_bavail * st.f_frsize))
            except OSError:
                pass
        # Never asked before: the node records the repo's visibility and its answer in the index.
        responses = [self.node.request("GET", f"/api/datasets/acme/tiny-dataset/revision/main?i={i}")
                     for i in range(3)]
        statuses = [status for status, _, _ in responses]
        self.assertIn(500, statuses, statuses)
        for status, _, body in responses:
            if status == 500:
                self.assertIn(b"failed to answer", body)
        self.assertGreaterEqual(self.node.metric("inferllama_http_internal_errors_total"), 1)
        with open(self.node.log_path) as fh:
            self.assertRegex(fh.read(), r"\[error\].*GET /api/datasets/acme/tiny-dataset/revision/main.*(index|space)")


if __name__ == "__main__":
    unittest.main()
