"""The node behind a real nginx, configured with the README's reverse-proxy block as written (only the
ports changed): the client's address from X-Forwarded-For drives anonymous limits, usage records, the
access log and the tracker's peer lists; X-Forwarded-Proto makes links https; the same headers from a
peer that is not a trusted proxy are ignored."""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, ROOT, free_port, stop_process, wait_until  # noqa: E402
from test_tracker import announce_query, bdecode, compact_peers  # noqa: E402

MODEL = "acme/tiny-model"
ADMIN_KEY = "admin-key-for-proxy-tests-0123456789"


def readme_nginx_block() -> str:
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    section = readme[readme.index("### Behind a reverse proxy"):]
    return re.search(r"```nginx\n(.*?)```", section, re.S).group(1)


class ReverseProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise unittest.SkipTest("nginx is not installed")
        cls.hub = FakeHub().start()
        cls.access_log = tempfile.mktemp(prefix="inferllama-access-")
        cls.node = Node(cls.hub.url, None, "--trusted-proxies", "127.0.0.1/32",
                        "--limit-anonymous", "requests=3/1h", "--tracker-open", "--access-log", cls.access_log, admin_key=ADMIN_KEY)
        cls.node.start()
        cls.dir = tempfile.mkdtemp(prefix="inferllama-nginx-")
        cls.proxy_port = free_port()
        block = readme_nginx_block()
        block = block.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{cls.node.port};")
        block = block.replace("listen 80;", f"listen 127.0.0.1:{cls.proxy_port};")
        temp = "".join(f"    {name}_temp_path {cls.dir}/{name};\n"
                       for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = os.path.join(cls.dir, "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(f"daemon off;\npid {cls.dir}/nginx.pid;\nerror_log {cls.dir}/error.log;\nevents {{}}\n"
                     f"http {{\n    access_log off;\n{temp}{block}}}\n")
        cls.nginx = subprocess.Popen([nginx, "-c", conf, "-p", cls.dir], stderr=subprocess.PIPE)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", cls.proxy_port), timeout=1).close()
                return True
            except OSError:
                assert cls.nginx.poll() is None, cls.nginx.stderr.read().decode()
                return False
        wait_until(listening, 20, "nginx listening")

    @classmethod
    def tearDownClass(cls):
        stop_process(cls.nginx)
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        if os.path.exists(cls.access_log):
            os.unlink(cls.access_log)

    def via(self, source: str, method: str, path: str, headers=None, direct=False):
        port = self.node.port if direct else self.proxy_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def access_lines(self, marker: str) -> list[dict]:
        with open(self.access_log) as fh:
            return [line for line in map(json.loads, fh) if marker in line["target"]]

    def test_anonymous_limits_usage_and_log_follow_the_forwarded_client(self):
        target = self.node.resolve_path(MODEL, "main", "config.json")
        # A client's own X-Forwarded-For is left of what nginx appends: it changes nothing.
        spoof = {"X-Forwarded-For": "192.0.2.99"}
        first = [self.via("127.0.0.2", "GET", target + "?a", spoof)[0] for _ in range(4)]
        self.assertEqual(first, [200, 200, 200, 429])
        # Another client behind the same proxy has its own limit: the proxy's address is not the identity.
        self.assertEqual(self.via("127.0.0.3", "GET", target + "?a")[0], 200)
        # Usage is recorded per forwarded client.
        def rows():
            status, _, body = self.node.request("GET", "/api/usage", {"Authorization": "Bearer " + ADMIN_KEY})
            return {row["user"]: row for row in json.loads(body)["usage"]}
        wait_until(lambda: "anon:127.0.0.3" in rows(), 10, "usage of 127.0.0.3")
        users = rows()
        self.assertIn("anon:127.0.0.2", users)
        self.assertNotIn("anon:127.0.0.1", users)
        self.assertNotIn("anon:192.0.2.99", users)
        wait_until(lambda: len(self.access_lines("?a")) == 5, 10, "access log lines")
        remotes = [line["remote"] for line in self.access_lines("?a")]
        self.assertEqual(sorted(remotes), ["127.0.0.2"] * 4 + ["127.0.0.3"])

    def test_headers_from_an_untrusted_peer_are_ignored(self):
        target = self.node.resolve_path(MODEL, "main", "README.md") + "?direct"
        status, _, _ = self.via("127.0.0.4", "GET", target, {"X-Forwarded-For": "127.0.0.5",
                                                             "Forwarded": "for=127.0.0.5;proto=https"}, direct=True)
        self.assertEqual(status, 200)
        wait_until(lambda: self.access_lines("?direct"), 10, "access log line")
        self.assertEqual(self.access_lines("?direct")[0]["remote"], "127.0.0.4")

    def test_forwarded_proto_makes_links_https(self):
        tree = f"/api/models/{MODEL}/tree/main?recursive=true"
        # nginx here listens on plain http and says so ($scheme), whatever the client claims.
        status, headers, _ = self.via("127.0.0.6", "GET", tree, {"X-Forwarded-Proto": "https"})
        self.assertEqual(status, 200)
        self.assertTrue(headers["link"].startswith("<http://"), headers["link"])
        # A trusted proxy that terminated TLS says https.
        status, headers, _ = self.via("127.0.0.1", "GET", tree, {"X-Forwarded-Proto": "https"}, direct=True)
        self.assertTrue(headers["link"].startswith("<https://"), headers["link"])
        # Anyone else saying so is ignored.
        status, headers, _ = self.via("127.0.0.6", "GET", tree, {"X-Forwarded-Proto": "https"}, direct=True)
        self.assertTrue(headers["link"].startswith("<http://"), headers["link"])

    def test_tracker_peers_are_the_forwarded_clients(self):
        info_hash = os.urandom(20)
        status, _, body = self.via("127.0.0.7", "GET", announce_query(info_hash, 7101))
        self.assertEqual(status, 200, body)
        status, _, body = self.via("127.0.0.8", "GET", announce_query(info_hash, 7102))
        self.assertEqual(status, 200, body)
        peers = compact_peers(bdecode(body)[b"peers"])
        self.assertIn(("127.0.0.7", 7101), peers)
        self.assertNotIn(("127.0.0.1", 7101), peers)


if __name__ == "__main__":
    unittest.main()
