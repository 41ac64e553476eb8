"""A hostile client against the real node: response splitting through decoded segments and queries,
request smuggling with Transfer-Encoding, counters on the public listener, guessing credentials."""
import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, HubAndNodeTest, Node  # noqa: E402

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
            target = f"/{MODEL}/resolve/no%22such%5Cbranch%20x/config.json"
            response = raw_exchange(node, f"GET {target} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n".encode())
            head = head_of(response)
            self.assertRegex(head, r"^HTTP/1.1 (404|504)")
            for line in head.split("\r\n")[1:]:
                self.assertRegex(line, r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\t\x20-\x7e\x80-\xff]*$")


class SmugglingTest(HubAndNodeTest):
    """Request bodies whose end is left to guesswork are refused, and the connection closed."""

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
            "f\r\npaths=README.md\r\n0\r\n\r\n").encode())
        self.assertTrue(response.startswith(b"HTTP/1.1 200"), response[:300])


class MetricsAndCredentialsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.node = Node(self.hub.url, None,
                         "--auth-failure-limit", "requests=5/1m burst=5", admin_key=ADMIN_KEY).start()
        self.addCleanup(self.node.cleanup)
        self.addCleanup(self.node.stop)

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


if __name__ == "__main__":
    unittest.main()
