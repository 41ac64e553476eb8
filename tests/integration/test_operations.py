"""What an operator sees: Prometheus metrics, the JSON access log, security headers on every response."""
import http.client
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, FakeHub, Node, sha256  # noqa: E402

MODEL = "acme/tiny-model"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}




class OperationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.class_started = time.time()
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url)
        cls.node.extra = ["--access-log", os.path.join(cls.node.data_dir, "access.log")]
        cls.node.start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def metrics(self):
        status, h, _ = self.node.metrics_request()
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
        return self.node.metrics()

    def test_every_metric_family_is_declared_once_and_its_samples_follow_it(self):
        self.node.request("GET", self.node.resolve_path(MODEL, "main", "config.json"))
        status, _, body = self.node.metrics_request()
        self.assertEqual(status, 200)
        helps, types, family = [], [], None
        for line in body.decode().splitlines():
            if line.startswith("# HELP "):
                helps.append(line.split()[2])
            elif line.startswith("# TYPE "):
                family = line.split()[2]
                types.append(family)
            elif line:
                name = line.split("{")[0].split(" ")[0]
                self.assertIn(name, {family, f"{family}_bucket", f"{family}_sum", f"{family}_count"},
                              f"{name} is not under its own # TYPE line")
        self.assertEqual(sorted(helps), sorted(set(helps)), "a family has two # HELP lines")
        self.assertEqual(helps, types)
        # The server's, the hub's, the downloads', the disk's, the tracker's, the limiter's and the seed's.
        for name in ("inferllama_http_requests_total", "inferllama_cache_requests_total", "inferllama_downloads_total",
                     "inferllama_disk_used_bytes", "inferllama_tracker_announces_total",
                     "inferllama_ratelimit_decisions_total", "inferllama_auth_failures_total",
                     "inferllama_parent_swarm_bytes_total", "inferllama_bt_torrents", "inferllama_build_info",
                     "process_start_time_seconds"):
            self.assertIn(name, helps)

    def test_build_info_and_start_time(self):
        version = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
        samples = self.metrics()
        info = [name for name in samples if name.startswith("inferllama_build_info{")]
        self.assertEqual(len(info), 1, info)
        self.assertEqual(samples[info[0]], 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', info[0]))
        self.assertEqual(labels["version"], version)
        self.assertEqual(sorted(labels), ["boost", "compiler", "curl", "libtorrent", "openssl", "rocksdb", "version"])
        for name, value in labels.items():
            self.assertRegex(value, r"\d+\.\d+", name)
        # The node started after this class began and before now, to the millisecond or better.
        started = samples["process_start_time_seconds"]
        self.assertGreaterEqual(started, self.class_started - 1)
        self.assertLessEqual(started, time.time())
        _, h, _ = self.node.request("GET", "/healthz")
        self.assertEqual(h["x-inferllama-node"], version)

    def test_metrics_count_hits_misses_bytes_and_requests(self):
        f = self.hub.files(MODEL)["model.safetensors"]
        path = self.node.resolve_path(MODEL, "main", "model.safetensors")
        before = self.metrics()
        self.node.request("GET", path)
        self.node.request("GET", path)
        self.node.request("GET", "/api/models/acme/missing/revision/main")
        after = self.metrics()

        def delta(name):
            return after.get(name, 0) - before.get(name, 0)

        # The second request may still find the first one's download (verified, not yet committed).
        self.assertGreaterEqual(delta('inferllama_cache_requests_total{result="miss"}'), 1)
        self.assertEqual(delta('inferllama_cache_requests_total{result="hit"}')
                         + delta('inferllama_cache_requests_total{result="miss"}'), 2)
        self.assertEqual(delta('inferllama_upstream_bytes_total'), f["size"])
        self.assertEqual(delta('inferllama_served_bytes_total{source="cache"}')
                         + delta('inferllama_served_bytes_total{source="download"}'), 2 * f["size"])
        self.assertEqual(delta('inferllama_http_requests_total{route="resolve",status="200"}'), 2)
        self.assertEqual(delta('inferllama_http_requests_total{route="api_revision",status="401"}'), 1)
        self.assertGreaterEqual(delta('inferllama_downloads_total{result="completed"}'), 1)
        self.assertIn("inferllama_downloads_in_flight", after)
        self.assertGreaterEqual(after["inferllama_disk_used_bytes"], f["size"])
        self.assertGreaterEqual(after['inferllama_http_request_duration_seconds_count{route="resolve"}'], 2)

    def test_security_headers_on_every_kind_of_response(self):
        for method, path in (("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/nope"),
                             ("GET", self.node.resolve_path(MODEL, "main", "config.json")),
                             ("HEAD", self.node.resolve_path(MODEL, "main", "config.json")),
                             ("GET", f"/api/models/{MODEL}/tree/main"),
                             ("GET", self.node.resolve_path("acme/gated-model", "main", "config.json")),
                             ("GET", "/acme/x/resolve/main/..%2Fetc")):
            _, h, _ = self.node.request(method, path)
            for name, value in SECURITY_HEADERS.items():
                self.assertEqual(h.get(name), value, f"{method} {path}: {name}")
            self.assertIn("default-src 'none'", h.get("content-security-policy", ""))

    def test_access_log_has_one_json_line_per_request(self):
        target = self.node.resolve_path(MODEL, "main", "README.md")
        # One keep-alive connection: a request's line is written before the next request is read.
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        self.assertEqual(response.status, 200)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        with open(os.path.join(self.node.data_dir, "access.log")) as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        mine = [l for l in lines if l["target"] == target]
        self.assertTrue(mine)
        entry = mine[-1]
        self.assertEqual((entry["method"], entry["status"], entry["route"], entry["bytes"]),
                         ("GET", 200, "resolve", len(body)))
        self.assertEqual((entry["remote"], entry["identity"], entry["user_agent"]), ("127.0.0.1", "anon", ""))
        self.assertIn(entry["cache"], ("hit", "miss"))
        self.assertRegex(entry["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertIsInstance(entry["duration_us"], int)
        self.assertGreaterEqual(entry["duration_us"], 0)


if __name__ == "__main__":
    unittest.main()
