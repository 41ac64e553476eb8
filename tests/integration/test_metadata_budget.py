"""Stored Hub metadata stays bounded. Only answers to the parameters real clients send are kept, in one
canonical form (so equivalent requests share one entry), under metadata_budget with the least recently
used dropped first; anything else is forwarded to the Hub and not stored. An upstream answer too large
to read ends in a 502, not in unbounded memory."""
import http.client
import json
import os
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node  # noqa: E402

MODEL = "acme/tiny-model"
API = f"/api/models/{MODEL}"
JUNK = 10_000
# The fields of huggingface_hub's ExpandModelProperty_T the fake Hub answers with.
FIELDS = ["author", "lastModified", "createdAt", "private", "gated", "disabled", "downloads",
          "likes", "tags", "usedStorage", "xetEnabled", "siblings"]


def dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def junk_request(i: int) -> tuple[str, str, bytes | None, dict]:
    """A request a real client never sends: unknown parameters and values, or made-up paths."""
    kind = i % 4
    if kind == 0:
        return "GET", f"{API}/revision/main?junk{i}=1", None, {}
    if kind == 1:
        return "GET", f"{API}?expand=junk{i}", None, {}
    if kind == 2:
        return "GET", f"{API}/tree/main?recursive=true&page{i}=2", None, {}
    body = urllib.parse.urlencode({"paths": f"no/such/file-{i}.txt"}).encode()
    return "POST", f"{API}/paths-info/main", body, {"Content-Type": "application/x-www-form-urlencoded"}


class MetadataBudgetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.hub.reset()

    def upstream_calls(self, kind: str) -> int:
        return self.hub.stats()["requests"][kind]

    def get(self, node: Node, path: str):
        status, headers, body = node.request("GET", path)
        self.assertEqual(status, 200, body[:200])
        return body

    def test_ten_thousand_junk_queries_store_nothing(self):
        with Node(self.hub.url) as node:
            # What real clients ask is stored: info, the tree, paths-info.
            self.get(node, f"{API}/revision/main?expand=sha&expand=siblings")
            self.get(node, f"{API}/tree/main?recursive=true&expand=false")
            status, _, _ = node.request("POST", f"{API}/paths-info/main", {"Content-Type": "application/json"},
                                        json.dumps({"paths": ["config.json"], "expand": False}).encode())
            self.assertEqual(status, 200)
            stored = node.metric("inferllama_metadata_entries")
            self.assertGreaterEqual(stored, 3)
            index_before = dir_size(os.path.join(node.data_dir, "index"))
            calls_before = self.hub.stats()["total_requests"]

            failures = []

            def client(start: int, step: int) -> None:
                conn = http.client.HTTPConnection(node.host, node.port, timeout=60)  # keep-alive
                try:
                    for i in range(start, JUNK, step):
                        method, path, body, headers = junk_request(i)
                        conn.request(method, path, body=body, headers=headers)
                        r = conn.getresponse()
                        r.read()
                        if r.status != 200:
                            failures.append((path, r.status))
                finally:
                    conn.close()

            started = time.monotonic()
            threads = [threading.Thread(target=client, args=(k, 4)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            self.assertEqual(failures, [])

            # Forwarded, one upstream call each, and none of them stored.
            self.assertEqual(node.metric("inferllama_metadata_unstored_total"), JUNK * 3 / 4)
            calls = self.hub.stats()["total_requests"] - calls_before
            self.assertGreaterEqual(calls, JUNK)
            self.assertLess(calls, JUNK + 50)  # and a few visibility and branch checks as their TTLs pass
            self.assertEqual(node.metric("inferllama_metadata_entries"), stored)
            # The made-up paths were valid requests, answered, and not kept either.
            grown = dir_size(os.path.join(node.data_dir, "index")) - index_before
            self.assertLess(grown, 2 << 20, f"the index grew by {grown} bytes for {JUNK} junk requests "
                                            f"({elapsed:.1f}s)")

    def test_equivalent_requests_share_one_entry(self):
        with Node(self.hub.url) as node:
            self.get(node, f"{API}/revision/main?expand=siblings&expand=sha")
            info_calls = self.upstream_calls("api_info")
            # Another order, the older `expand[]` spelling, a repeat: the same canonical request.
            self.get(node, f"{API}/revision/main?expand%5B%5D=sha&expand=siblings&expand=sha")
            self.assertEqual(self.upstream_calls("api_info"), info_calls)

            # huggingface_hub (requests: True) and @huggingface/hub (true) list the same tree.
            self.get(node, f"{API}/tree/main?recursive=True&expand=False")
            tree_calls = self.upstream_calls("api_tree")
            self.get(node, f"{API}/tree/main?expand=false&recursive=true")
            self.assertEqual(self.upstream_calls("api_tree"), tree_calls)

            # A form body (Python) and a JSON body (JS) for the same paths.
            form = urllib.parse.urlencode([("paths", "config.json"), ("paths", "README.md"),
                                           ("expand", "False")]).encode()
            status, _, first = node.request("POST", f"{API}/paths-info/main",
                                            {"Content-Type": "application/x-www-form-urlencoded"}, form)
            self.assertEqual(status, 200)
            paths_calls = self.upstream_calls("api_paths_info")
            status, _, second = node.request("POST", f"{API}/paths-info/main", {"Content-Type": "application/json"},
                                             json.dumps({"paths": ["README.md", "config.json"]}).encode())
            self.assertEqual(status, 200)
            self.assertEqual(self.upstream_calls("api_paths_info"), paths_calls)
            self.assertEqual(json.loads(first), json.loads(second))
            self.assertEqual(sorted(e["path"] for e in json.loads(first)), ["README.md", "config.json"])

    def test_budget_evicts_the_least_recently_used(self):
        budget = 48 * 1024
        with Node(self.hub.url, None, "--metadata-budget", str(budget)) as node:
            kept = f"{API}/revision/main?expand=sha&expand=siblings"
            self.get(node, kept)
            pairs = [(a, b) for i, a in enumerate(FIELDS) for b in FIELDS[i + 1:]]
            for a, b in pairs:
                # Revision info is stored when it names its commit: `sha` is always asked for.
                self.get(node, f"{API}/revision/main?expand=sha&expand={a}&expand={b}")
                self.get(node, kept)  # the most recently used: never the one evicted
                self.assertLessEqual(node.metric("inferllama_metadata_bytes"), budget)
            self.assertGreater(node.metric("inferllama_metadata_evictions_total"), 0)
            calls = self.upstream_calls("api_info")
            self.get(node, kept)
            self.assertEqual(self.upstream_calls("api_info"), calls, "the recently used answer was evicted")
            entries = node.metric("inferllama_metadata_entries")
            self.assertLess(entries, len(pairs))
            data_dir = node.data_dir
            node.stop()
            # A restart counts what the index holds and stays under the budget.
            with Node(self.hub.url, data_dir, "--metadata-budget", str(budget)) as again:
                self.assertEqual(again.metric("inferllama_metadata_entries"), entries)
                self.assertLessEqual(again.metric("inferllama_metadata_bytes"), budget)
                self.get(again, f"{API}/revision/main?expand=sha")  # the node asks whether the repo is public
                calls = self.upstream_calls("api_info")
                self.get(again, kept)
                self.assertEqual(self.upstream_calls("api_info"), calls)

    def test_an_endless_answer_is_a_502(self):
        with Node(self.hub.url) as node:
            self.get(node, f"{API}/revision/main?expand=sha")  # the repo is known public
            self.hub.control("POST", "/_fake/hostile", {"endless_info": True})
            try:
                status, headers, body = node.request("GET", f"{API}/revision/main?expand=siblings")
            finally:
                self.hub.control("POST", "/_fake/hostile", {})
            self.assertEqual(status, 502, body[:200])
            self.assertIn("larger than", headers.get("x-error-message", ""))
            self.assertEqual(node.metric("inferllama_metadata_entries"), 1)


if __name__ == "__main__":
    unittest.main()
