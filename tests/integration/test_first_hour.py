"""What a new operator meets in the first hour: settings checked before anything binds, errors that name
the setting and say what to do, one node per data directory, loops of upstreams refused, a stop that says
what it waits for, and a node that seeds what it has cached without being asked."""
from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, FakeHub, Node, clean_env, free_port, wait_until  # noqa: E402

MODEL = "acme/tiny-model"


def serve(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`serve` that is expected to stop by itself (a start that fails)."""
    bt = [] if "--bt-listen" in args else ["--bt-listen", "127.0.0.1:0"]
    return subprocess.run([BINARY, "serve", "--metrics-listen", "", "--tracker-udp", "127.0.0.1:0", *bt, *args],
                          capture_output=True, text=True, timeout=timeout, env=clean_env(env))


def log_of(node: Node) -> str:
    with open(node.log_path, errors="replace") as f:
        return f.read()


class StartChecksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-first-hour-")
        cls.data = os.path.join(cls.tmp, "data")

        def pair(name: str) -> tuple[str, str]:
            cert, key = os.path.join(cls.tmp, f"{name}.crt"), os.path.join(cls.tmp, f"{name}.key")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}"],
                           check=True, capture_output=True)
            return cert, key
        cls.cert, cls.key = pair("one")
        cls.other_cert, cls.other_key = pair("two")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def refused(self, *args: str, says: list[str], env: dict | None = None, code: int = 2):
        listen = [] if "--listen" in args else ["--listen", "127.0.0.1:0"]
        data_dir = [] if "--data-dir" in args else ["--data-dir", self.data]
        done = serve(*listen, *data_dir, *args, env=env)
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        self.assertEqual(done.stdout, "", "nothing is listening, so no line says so")
        for part in says:
            self.assertIn(part, done.stderr)

    def test_tls_settings_are_checked_before_anything_binds(self):
        tls = ["--tls-listen", "127.0.0.1:0"]
        self.refused(*tls, "--tls-cert", "/nonexistent.pem", "--tls-key", self.key,
                     says=["invalid tls_cert /nonexistent.pem: cannot read it (No such file or directory)",
                           "PEM certificate chain"])
        self.refused(*tls, "--tls-cert", self.key, "--tls-key", self.cert,
                     says=[f"invalid tls_cert {self.key}: not a PEM certificate chain"])
        self.refused(*tls, "--tls-cert", self.cert, "--tls-key", self.other_key,
                     says=[f"invalid tls_key {self.other_key}: it does not belong to the certificate in tls_cert "
                           f"{self.cert}", "give the key the certificate was made for"])
        self.refused("--tls-cert", self.cert, "--tls-key", self.key,
                     says=["invalid tls_cert (--tls-cert", "it needs tls_listen (--tls-listen HOST:PORT)"])
        self.refused(*tls, says=["invalid tls_listen (--tls-listen 127.0.0.1:0): it needs tls_cert and tls_key"])

    def test_listen_names_resolve_or_say_why(self):
        self.refused("--listen", "no-such-host.invalid:0",
                     says=["invalid listen (--listen no-such-host.invalid:0): the host no-such-host.invalid does "
                           "not resolve", "127.0.0.1 (loopback only) or 0.0.0.0 (every interface)"])
        with FakeHub() as hub:
            with Node(hub.url, None, "--listen", "localhost:0", "--bt-listen", "localhost:0") as node:
                self.assertTrue(node.url.startswith("http://127.0.0.1:"), node.url)
                self.assertEqual(node.request("GET", "/healthz")[0], 200)

    def test_a_taken_port_names_its_setting_and_the_bittorrent_port_never_moves_silently(self):
        with FakeHub() as hub, Node(hub.url, None) as first:
            self.refused("--listen", f"127.0.0.1:{first.port}", "--data-dir", os.path.join(self.tmp, "other"),
                         says=[f"--listen 127.0.0.1:{first.port}: bind: Address already in use: another process "
                               "listens there; stop it or choose another port"], code=1)
            taken = f"127.0.0.1:{first.bt_port}"
            done = serve("--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.tmp, "bt"), "--bt-listen", taken)
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertIn(f"--bt-listen {taken}: BitTorrent listener", done.stderr)
            self.assertNotIn("bittorrent on", done.stdout)
            with Node(hub.url, None, "--bt-listen", taken, "--bt-port-fallback") as moved:
                self.assertNotEqual(moved.bt_port, first.bt_port)

    def test_one_node_per_data_directory(self):
        with FakeHub() as hub, Node(hub.url, None) as node:
            done = serve("--listen", "127.0.0.1:0", "--data-dir", node.data_dir)
            self.assertEqual(done.returncode, 1)
            self.assertIn(f"another node (pid {node.proc.pid}) is using the data directory {node.data_dir}: stop "
                          "it first, or give this one another --data-dir", done.stderr)
            self.assertEqual(done.stdout, "")

    def test_client_variables_do_not_stop_the_node(self):
        with FakeHub() as hub, Node(hub.url, None, env={"INFERLLAMA_NODE": "http://127.0.0.1:9"}) as node:
            self.assertEqual(node.request("GET", "/healthz")[0], 200)

    def test_secrets_are_refused_on_the_command_line(self):
        self.refused("--admin-key", "an-admin-key-of-some-length",
                     says=["flag --admin-key would show the secret to every user of the machine (ps): give it as "
                           "--admin-key-file FILE or the environment variable INFERLLAMA_ADMIN_KEY"])
        self.refused("--upstream-token", "hf_secret", says=["--upstream-token-file FILE"])

    def test_the_cli_suggests_what_was_meant(self):
        for args, says in ((["serve", "--ofline"], "unknown option --ofline (did you mean --offline?)"),
                           (["pul", "acme/x"], "unknown command pul (did you mean pull?)"),
                           (["user", "ad", "x"], "unknown command ad (did you mean add?)")):
            done = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=30, env=clean_env())
            self.assertEqual(done.returncode, 2, args)
            self.assertIn(says, done.stderr)
        usage = subprocess.run([BINARY, "serve", "--help"], capture_output=True, text=True, timeout=30,
                               env=clean_env()).stdout
        self.assertRegex(usage, r"\n  --offline +Never contact")  # a switch, not "--offline TEXT"


class RunningNodeTest(unittest.TestCase):
    def test_an_upstream_that_leads_back_is_refused_at_once(self):
        port = free_port()
        with Node(f"http://127.0.0.1:{port}", None, "--listen", f"127.0.0.1:{port}") as node:  # its own upstream
            started = time.monotonic()
            status, headers, body = node.request("GET", "/api/models/acme/x")
            self.assertEqual(status, 508, body)
            self.assertLess(time.monotonic() - started, 10)
            self.assertIn(b"the nodes' upstream settings form a loop", body)
        # Two nodes, each the other's upstream.
        a_port, b_port = free_port(), free_port()
        with Node(f"http://127.0.0.1:{b_port}", None, "--listen", f"127.0.0.1:{a_port}") as a, \
                Node(f"http://127.0.0.1:{a_port}", None, "--listen", f"127.0.0.1:{b_port}"):
            status, _, body = a.request("GET", "/api/models/acme/x/revision/main")
            self.assertEqual(status, 508, body)
            self.assertIn("came back to this node", log_of(a))

    def test_a_hostile_via_is_neither_believed_nor_passed_on(self):
        seen: list[str] = []

        class Upstream(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append(self.headers.get("Via", ""))
                self.send_response(404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_HEAD = do_GET

        upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        try:
            with Node(f"http://127.0.0.1:{upstream.server_address[1]}", None) as node:
                other = "1.1 inferllama-0123456789abcdef"
                node.request("GET", "/api/models/acme/x", {"Via": f"1.0 corp-proxy (internal), {other}"})
                self.assertTrue(seen)
                for via in seen:  # only node hops go on, then this node
                    self.assertRegex(via, rf"^{other}, 1\.1 inferllama-[0-9a-f]{{16}}$")
                asked = len(seen)
                many = ", ".join(f"1.1 inferllama-{i:016x}" for i in range(17))
                status, _, body = node.request("GET", "/api/models/acme/x", {"Via": many})
                self.assertEqual(status, 508, body)
                status, _, _ = node.request("GET", "/api/models/acme/x", {"Via": "1.0 p, " * 700})
                self.assertEqual(status, 400)
                self.assertEqual(len(seen), asked, "neither went upstream")
        finally:
            upstream.shutdown()
            upstream.server_close()

    def test_pull_says_which_side_is_unreachable(self):
        with Node("http://127.0.0.1:9", None) as node:  # nothing listens on the upstream's port
            done = subprocess.run([BINARY, "pull", MODEL, "--node", node.url], capture_output=True, text=True,
                                  timeout=120, env=clean_env())
            self.assertEqual(done.returncode, 1)
            self.assertIn("the upstream Hub is unreachable", done.stderr)
            self.assertNotIn("gated", done.stderr)
        done = subprocess.run([BINARY, "pull", MODEL], capture_output=True, text=True, timeout=60,
                              env=clean_env({"INFERLLAMA_NODE": "http://127.0.0.1:9"}))
        self.assertEqual(done.returncode, 1)
        self.assertIn("cannot reach the node at http://127.0.0.1:9", done.stderr)

    def test_first_start_says_how_to_manage_the_node(self):
        with FakeHub() as hub, Node(hub.url, None) as node:
            wait_until(lambda: "the admin API is served on the admin socket only" in log_of(node), 30,
                       "the admin hint")
            self.assertIn(f"--data-dir {node.data_dir}", log_of(node))

    def test_a_stop_says_what_it_waits_for_and_a_second_signal_stops_at_once(self):
        with FakeHub("--cdn-rate", "200000") as hub:
            node = Node(hub.url, None).start()
            try:
                path = node.resolve_path(MODEL, "main", "model.safetensors")
                client = subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"{node.url}{path}"])
                wait_until(lambda: node.metrics().get("inferllama_upstream_bytes_total", 0) > 0, 60,
                           "a download under way")
                node.proc.send_signal(signal.SIGTERM)
                # The client's response, and any metrics connection the node has not seen closed yet.
                wait_until(lambda: re.search(r"waiting up to 30 s for [1-9]\d* responses in flight \(1 downloads",
                                             log_of(node)), 30, "the drain's message")
                started = time.monotonic()
                node.proc.send_signal(signal.SIGINT)
                self.assertEqual(node.proc.wait(timeout=20), 0)
                self.assertLess(time.monotonic() - started, 15)
                self.assertIn("signal 2 again: stopping now; 1 downloads cut short resume at the next start",
                              log_of(node))
                client.wait(timeout=30)
            finally:
                node.stop()


class SeedingTest(unittest.TestCase):
    def test_a_cached_snapshot_is_seeded_without_being_asked(self):
        with FakeHub() as hub, Node(hub.url, None) as node:
            done = subprocess.run([BINARY, "pull", MODEL, "--node", node.url, "--quiet"], capture_output=True,
                                  text=True, timeout=300, env=clean_env())
            self.assertEqual(done.returncode, 0, done.stderr)
            wait_until(lambda: re.search(rf"seeding model/{MODEL} at [0-9a-f]{{40}} \(v1", log_of(node)), 60,
                       "the snapshot's seed")


if __name__ == "__main__":
    unittest.main()
