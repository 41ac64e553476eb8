"""Upstream outages and offline mode: cached commits keep being served when the Hub is down (branch
names at the last commit seen, said in a header), what is not cached gets a Hub-style error at once,
and gated or private repos are refused unless the operator allowed a grace window."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, ROOT, sha256  # noqa: E402

MODEL = "acme/tiny-model"
GATED = "acme/gated-model"
STALE = "x-inferllama-stale"
JS_CLIENT = os.path.join(ROOT, "tests", "js", "snapshot.mjs")


def js_snapshot(endpoint: str, repo: str, cache_dir: str, token: str | None = None):
    cmd = ["node", JS_CLIENT, "--endpoint", endpoint, "--repo", repo, "--cache-dir", cache_dir]
    if token:
        cmd += ["--token", token]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class OutageTest(unittest.TestCase):
    def setUp(self):
        self.hub = FakeHub().start()
        self.data_dir = tempfile.mkdtemp(prefix="inferllama-outage-")
        self.nodes = []
        self.files = self.hub.files(MODEL)
        self.gated = self.hub.files(GATED)
        self.commit = self.hub.commit(MODEL)

    def tearDown(self):
        for n in self.nodes:
            n.stop()
        self.hub.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def node(self, *flags):
        # Branch names expire at once, so every request after the Hub stops takes the outage path.
        n = Node(self.hub.url, self.data_dir, "--ref-ttl", "0", *flags).start()
        self.nodes.append(n)
        return n

    def restart(self, *flags):
        for n in self.nodes:
            n.stop()
        self.nodes = []
        return self.node(*flags)

    def warm(self, node):
        for path in self.files:
            status, _, _ = node.request("GET", node.resolve_path(MODEL, "main", path))
            self.assertEqual(status, 200, path)
        status, _, _ = node.request("GET", node.resolve_path(GATED, "main", "config.json"),
                                    {"Authorization": "Bearer hf_approved"})
        self.assertEqual(status, 200)

    def test_cached_files_are_served_with_a_stale_marker_and_the_rest_is_refused_at_once(self):
        node = self.node()
        self.warm(node)
        self.hub.stop()
        node = self.restart()  # nothing in memory: visibility and refs come from the index
        for path, f in self.files.items():
            status, h, body = node.request("GET", node.resolve_path(MODEL, "main", path))
            self.assertEqual((status, sha256(body)), (200, f["sha256"]), path)
            self.assertIn("last commit seen", h[STALE])
            self.assertEqual(h["x-repo-commit"], self.commit)
        status, h, _ = node.request("GET", node.resolve_path(MODEL, "main", "not-cached.bin"))
        self.assertEqual(status, 504)
        self.assertIn("not cached", h["x-error-message"])
        status, _, _ = node.request("GET", node.resolve_path("acme/tiny-dataset", "main", "README.md", "datasets/"))
        self.assertEqual(status, 504)

    def test_gated_repo_is_refused_without_the_hub_unless_a_grace_window_allows_it(self):
        node = self.node()
        self.warm(node)
        self.hub.stop()
        node = self.restart()
        path = node.resolve_path(GATED, "main", "config.json")
        status, h, _ = node.request("GET", path, {"Authorization": "Bearer hf_approved"})
        self.assertEqual(status, 503)
        self.assertIn("gated and private", h["x-error-message"])
        node = self.restart("--offline-grace", "1h")
        status, _, body = node.request("GET", path, {"Authorization": "Bearer hf_approved"})
        self.assertEqual((status, sha256(body)), (200, self.gated["config.json"]["sha256"]))
        for headers in ({}, {"Authorization": "Bearer hf_unapproved"}):
            status, _, body = node.request("GET", path, headers)
            self.assertEqual(status, 503, headers)
            self.assertNotEqual(sha256(body), self.gated["config.json"]["sha256"])

    def test_offline_mode_never_contacts_the_hub(self):
        node = self.node()
        self.warm(node)
        node = self.restart("--offline")
        self.hub.reset()
        status, h, body = node.request("GET", node.resolve_path(MODEL, "main", "config.json"))
        self.assertEqual((status, sha256(body)), (200, self.files["config.json"]["sha256"]))
        self.assertIn(STALE, h)
        status, _, _ = node.request("GET", node.resolve_path(MODEL, "main", "missing.txt"))
        self.assertEqual(status, 504)
        status, _, body = node.request("GET", f"/api/models/{MODEL}/revision/main")
        self.assertEqual(status, 504)  # this query was never cached
        self.assertEqual(self.hub.stats()["total_requests"], 0)

    @unittest.skipUnless(shutil.which("node") and os.path.isdir(os.path.join(ROOT, "tests", "js", "node_modules")),
                         "node or tests/js/node_modules missing (scripts/install-deps.sh --test installs them)")
    def test_js_client_snapshot_with_the_hub_stopped(self):
        node = self.node()
        with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
            warm = js_snapshot(node.url, MODEL, first)
            self.assertEqual(warm.returncode, 0, warm.stderr)
            self.hub.stop()
            node = self.restart()
            again = js_snapshot(node.url, MODEL, second)
            self.assertEqual(again.returncode, 0, again.stderr)
            got = json.loads(again.stdout.strip().splitlines()[-1])["files"]
            self.assertEqual(got, {p: f["sha256"] for p, f in self.files.items()})


if __name__ == "__main__":
    unittest.main()
