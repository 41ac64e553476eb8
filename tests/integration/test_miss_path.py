"""The miss path and the store: single flight, streaming, upstream faults, restarts, the CLI, drain."""
import concurrent.futures
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, FakeHub, Node, clean_env, sha256  # noqa: E402

MODEL = "acme/tiny-model"
BIG = "model.safetensors"  # 9 MiB + 12345: three 4 MiB chunks


class MissPathTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A 96 MiB file fetched with parallel Range connections.
        cls.hub = FakeHub("--big-file-size", str(96 * 1024 * 1024)).start()
        cls.files = cls.hub.files(MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.hub.reset()
        self.node = Node(self.hub.url, None, "--upstream-retries", "3").start()

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()

    def fetch(self, path, repo=MODEL, rev="main", node=None, headers=None):
        node = node or self.node
        return node.request("GET", node.resolve_path(repo, rev, path), headers)

    def cdn_bytes(self, digest):
        return self.hub.stats()["cdn_bytes"].get(digest, 0)

    def test_sixteen_concurrent_clients_cause_one_upstream_fetch(self):
        f = self.files[BIG]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: self.fetch(BIG), range(16)))
        for status, _, body in results:
            self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        self.assertEqual(self.cdn_bytes(f["sha256"]), f["size"])
        self.assertEqual(self.hub.stats()["requests"]["cdn_get"], 1)

    def test_large_file_is_fetched_in_ranges_once(self):
        f = self.hub.files("acme/big-model")["model.safetensors"]
        status, _, body = self.fetch("model.safetensors", repo="acme/big-model")
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        self.assertEqual(self.cdn_bytes(f["sha256"]), f["size"])
        self.assertGreaterEqual(self.hub.stats()["requests"]["cdn_get"], 4)

    def test_first_bytes_stream_before_the_download_ends(self):
        # The CDN sends the file slowly; the first bytes must reach the client long before the end.
        f = self.files[BIG]
        self.hub.faults([{"match": f["sha256"], "kind": "slow_body", "bps": 4 * 1024 * 1024, "times": -1}])
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.request("GET", self.node.resolve_path(MODEL, "main", BIG))
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        first = response.read(64 * 1024)
        sent_so_far = self.cdn_bytes(f["sha256"])
        self.assertLess(sent_so_far, f["size"] // 2, "the first bytes waited for most of the file")
        rest = response.read()
        conn.close()
        self.assertEqual(sha256(first + rest), f["sha256"])

    def test_connection_reset_is_resumed_with_a_range(self):
        f = self.files[BIG]
        self.hub.faults([{"match": f["sha256"], "kind": "reset_after_bytes", "bytes": 3 * 1024 * 1024, "times": 2}])
        status, _, body = self.fetch(BIG)
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        self.assertLess(self.cdn_bytes(f["sha256"]), f["size"] + 1024 * 1024,
                        "the resumed download refetched bytes it already had")

    def test_transient_5xx_is_retried(self):
        f = self.files[BIG]
        self.hub.faults([{"match": f["sha256"], "kind": "status", "status": 503, "times": 2}])
        status, _, body = self.fetch(BIG)
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))

    def assert_broken_then_recovers(self, fault):
        f = self.files[BIG]
        self.hub.faults([fault])
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.fetch(BIG)
        # Nothing was cached: the next request fetches again and gets the right bytes.
        self.hub.faults([])
        before = self.cdn_bytes(f["sha256"])
        status, _, body = self.fetch(BIG)
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        self.assertEqual(self.cdn_bytes(f["sha256"]) - before, f["size"])

    def test_corrupt_byte_is_never_served_as_complete(self):
        f = self.files[BIG]
        self.assert_broken_then_recovers({"match": f["sha256"], "kind": "corrupt_byte", "offset": 5000000})

    def test_upstream_failing_for_good_breaks_the_transfer(self):
        f = self.files[BIG]
        self.assert_broken_then_recovers({"match": f["sha256"], "kind": "status", "status": 502, "times": -1})

    def test_connection_reset_without_progress_gives_up(self):
        f = self.files[BIG]
        self.assert_broken_then_recovers({"match": f["sha256"], "kind": "reset_after_bytes", "bytes": 0,
                                          "times": -1})

    def test_truncated_bodies_are_resumed(self):
        f = self.files[BIG]
        self.hub.faults([{"match": f["sha256"], "kind": "truncate", "bytes": 1000000, "times": 3}])
        status, _, body = self.fetch(BIG)
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        self.assertEqual(self.cdn_bytes(f["sha256"]), f["size"])

    def test_corrupt_regular_file_is_not_cached(self):
        f = self.files["config.json"]
        self.hub.faults([{"match": f["git_sha1"], "kind": "corrupt_byte", "offset": 10}])
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.fetch("config.json")
        status, _, body = self.fetch("config.json")
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))

    def test_restart_keeps_the_cache(self):
        for path in self.files:
            self.fetch(path)
        self.assertEqual(self.node.stop(), 0)
        node = Node(self.hub.url, self.node.data_dir).start()
        try:
            self.hub.reset()
            commit = self.hub.commit(MODEL)
            for path, f in self.files.items():
                status, _, body = self.fetch(path, rev=commit, node=node)
                self.assertEqual((status, sha256(body)), (200, f["sha256"]), path)
            stats = self.hub.stats()["requests"]
            self.assertEqual((stats["cdn_get"], stats["resolve_get"], stats["resolve_head"]), (0, 0, 0))
        finally:
            node.stop()

    def test_pull_then_ls(self):
        result = subprocess.run([BINARY, "pull", MODEL, "--node", self.node.url, "--quiet"],
                                capture_output=True, text=True, timeout=120, env=clean_env())
        self.assertEqual(result.returncode, 0, result.stderr)
        stats = self.hub.stats()
        self.assertEqual(sum(stats["cdn_bytes"].values()), sum(f["size"] for f in self.files.values() if f["lfs"]))
        listing = subprocess.run([BINARY, "ls", "--data-dir", self.node.data_dir], capture_output=True, text=True,
                                 timeout=60, env=clean_env())
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn("model/" + MODEL, listing.stdout)
        for path in self.files:
            self.assertIn(path, listing.stdout)
        missing = subprocess.run([BINARY, "pull", "acme/missing", "--node", self.node.url, "--quiet"],
                                 capture_output=True, text=True, timeout=60, env=clean_env())
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("401", missing.stderr)

    def test_sigterm_drains_a_response_in_flight(self):
        f = self.files[BIG]
        self.hub.faults([{"match": f["sha256"], "kind": "slow_body", "bps": 8 * 1024 * 1024, "times": -1}])
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.request("GET", self.node.resolve_path(MODEL, "main", BIG))
        response = conn.getresponse()
        first = response.read(1024)
        self.node.proc.send_signal(signal.SIGTERM)
        rest = response.read()
        conn.close()
        self.assertEqual(sha256(first + rest), f["sha256"])
        self.assertEqual(self.node.proc.wait(timeout=60), 0)


class CommandLineTest(unittest.TestCase):
    def run_binary(self, *args, env=None):
        return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60, env=clean_env(env))

    def test_help_on_every_command(self):
        for args in ([], ["serve"], ["pull"], ["ls"]):
            result = self.run_binary(*args, "--help")
            self.assertEqual(result.returncode, 0, args)
            self.assertIn("Usage", result.stdout + result.stderr)
        self.assertIn("--upstream-token", self.run_binary("serve", "--help").stdout)

    def test_bad_configuration_stops_start_up(self):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write('listen = "127.0.0.1:0"\nchunk_sise = "4MiB"\n')
        try:
            result = self.run_binary("serve", "--config", f.name)
            self.assertEqual(result.returncode, 2)
            self.assertIn("chunk_sise", result.stderr)
        finally:
            os.unlink(f.name)
        result = self.run_binary("serve", "--listen", "127.0.0.1:0", env={"INFERLLAMA_CHUNK_SIZE": "3000"})
        self.assertEqual(result.returncode, 2)
        self.assertIn("chunk_size", result.stderr)


class ParallelRangesTest(unittest.TestCase):
    """A CDN that caps each connection: the node adds parallel Range connections while each one raises the
    rate, up to upstream_connections."""

    def test_connections_are_added_while_they_raise_the_rate(self):
        hub = FakeHub("--big-file-size", str(48 * 1024 * 1024), "--cdn-rate", str(6 * 1024 * 1024)).start()
        node = Node(hub.url, None, "--upstream-connections", "4").start()
        try:
            f = hub.files("acme/big-model")["model.safetensors"]
            status, _, body = node.request("GET", node.resolve_path("acme/big-model", "main", "model.safetensors"))
            self.assertEqual((status, sha256(body)), (200, f["sha256"]))
            stats = hub.stats()
            self.assertGreaterEqual(stats["cdn_gets_peak"], 3, stats["requests"])
            self.assertEqual(stats["cdn_bytes"][f["sha256"]], f["size"], "a byte was fetched twice")
        finally:
            node.stop()
            node.cleanup()
            hub.stop()


if __name__ == "__main__":
    unittest.main()
