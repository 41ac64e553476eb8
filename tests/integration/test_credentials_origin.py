"""Credentials follow the origin. The caller's Hub token goes to the upstream's own origin (scheme, host
and port) and nowhere else, decided again for every URL a download uses: the first, a refreshed one,
and each redirect. Only http and https are spoken: a Location with another scheme is a clear error
and nothing is stored. Signed URLs are not written to the log with their query."""
import http.client
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256  # noqa: E402

MODEL = "acme/tiny-model"
FILE = "nested/deep/dir/weights.bin"
TOKEN = {"Authorization": "Bearer hf_approved"}


class ConnectionCounter:
    """A TCP listener that counts who connects (a stand-in for an ftp:// host) and says nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


class CredentialsOriginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub("--url-ttl", "3600").start()
        cls.file = cls.hub.files(MODEL)[FILE]

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.hub.reset()
        # Downloads retry quickly so that a refused URL ends the test soon.
        self.node = Node(self.hub.url, None, "--upstream-retries", "2").start()

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()

    def hostile(self, **switches):
        self.hub.control("POST", "/_fake/hostile", switches)

    def fetch(self, headers=None):
        return self.node.request("GET", self.node.resolve_path(MODEL, "main", FILE), headers)

    def assert_served(self, headers=None):
        status, _, body = self.fetch(headers)
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), self.file["sha256"])

    def assert_not_stored(self):
        self.hostile()
        before = self.node.metric("inferllama_upstream_bytes_total")
        self.assert_served()
        self.assertEqual(self.node.metric("inferllama_upstream_bytes_total") - before, self.file["size"],
                         "the refused download left something stored")

    def test_a_refreshed_url_on_another_origin_gets_no_token(self):
        # The first URL is on the Hub's origin (it gets the token) and has expired; the fresh one is on
        # the CDN, another origin (same host, another port).
        self.hostile(lfs_locations=["hub-expired", "cdn"])
        self.assert_served(TOKEN)
        stats = self.hub.stats()
        self.assertGreaterEqual(self.hub.control("GET", "/_fake/hostile")["hub_authorization"], 1)
        self.assertGreaterEqual(stats["requests"]["cdn_get"], 1)
        self.assertEqual(stats["cdn_authorization_headers"], 0, "the Hub token reached the CDN")

    def test_a_redirect_to_another_origin_drops_the_token(self):
        self.hostile(lfs_locations=["hub-redirect"], redirect_to="cdn")
        self.assert_served(TOKEN)
        self.assertGreaterEqual(self.hub.control("GET", "/_fake/hostile")["hub_authorization"], 1)
        self.assertEqual(self.hub.stats()["cdn_authorization_headers"], 0, "the Hub token followed the redirect")

    def test_locations_that_are_not_http_are_refused(self):
        for location in ("file:///etc/passwd", "ftp://127.0.0.1:9/weights.bin"):
            with self.subTest(location=location):
                self.hostile(lfs_locations=[location])
                status, headers, _ = self.fetch(TOKEN)
                self.assertEqual(status, 502)
                self.assertIn("not http(s)", headers.get("x-error-message", ""))
                self.assertEqual(self.node.metric('inferllama_downloads_total{result="started"}'), 0)
        self.assert_not_stored()

    def test_redirects_and_refreshes_to_other_schemes_are_not_followed(self):
        ftp = ConnectionCounter()
        try:
            for switches in ({"lfs_locations": ["hub-redirect"], "redirect_to": f"ftp://127.0.0.1:{ftp.port}/x"},
                             {"lfs_locations": ["hub-expired", f"ftp://127.0.0.1:{ftp.port}/x"]},
                             {"lfs_locations": ["hub-redirect"], "redirect_to": "file:///etc/passwd"}):
                with self.subTest(switches=switches):
                    self.hostile(**switches)
                    # The download fails after the answer started (its last byte is held back until
                    # the whole file verified): the client sees the connection end short.
                    try:
                        status, _, body = self.fetch(TOKEN)
                        self.assertFalse(status == 200 and len(body) == self.file["size"])
                    except http.client.IncompleteRead:
                        pass
            self.assertEqual(ftp.connections, 0, "the node followed a Location to ftp://")
        finally:
            ftp.close()
        self.assert_not_stored()

    def test_signed_urls_are_logged_without_their_query(self):
        self.assert_served()
        with open(self.node.log_path, errors="replace") as f:
            log = f.read()
        self.assertIn("/blobs/", log)  # the download's source is logged...
        self.assertNotIn("sig=", log)  # ...without the signature


if __name__ == "__main__":
    unittest.main()
