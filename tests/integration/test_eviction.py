"""Disk budget: the least recently used files are evicted, pinned snapshots are kept, a file being
read is never freed under its reader, and gc collects chunks nothing references."""
import http.client
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, FakeHub, Node, clean_env, sha256  # noqa: E402

SIZE = 8 * 1024 * 1024 + 1000  # three 4 MiB chunks a model
FILE = "model.safetensors"




class EvictionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub("--sized-models", "4", "--sized-model-size", str(SIZE)).start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.hub.reset()
        # Budget: 2.5 models.
        self.node = Node(self.hub.url, None, "--max-disk", str(int(2.5 * SIZE))).start()

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()

    def model(self, i):
        return f"acme/sized-{i}"

    def fetch(self, i, path=FILE):
        commit = self.hub.commit(self.model(i))
        return self.node.request("GET", self.node.resolve_path(self.model(i), commit, path))

    def cli(self, *args):
        # Beside the node: through its admin socket.
        return subprocess.run([BINARY, *args, "--data-dir", self.node.data_dir], capture_output=True, text=True,
                              timeout=60, env=clean_env())

    def wait_for_evictions(self, at_least):
        # Eviction runs on a worker right after a file is stored: poll the node's own counter.
        deadline = time.monotonic() + 30
        while self.node.metric("inferllama_evictions_total") < at_least:
            self.assertLess(time.monotonic(), deadline, "no eviction happened")

    def cdn_bytes(self, i):
        sha = self.hub.files(self.model(i))[FILE]["sha256"]
        return self.hub.stats()["cdn_bytes"].get(sha, 0)

    def test_least_recently_used_goes_and_pinned_stays(self):
        self.assertEqual(self.fetch(0)[0], 200)
        pinned = self.cli("pin", self.model(0))
        self.assertEqual(pinned.returncode, 0, pinned.stderr)
        self.assertIn(self.hub.commit(self.model(0)), pinned.stdout)
        self.assertEqual(self.fetch(1)[0], 200)
        self.assertEqual(self.fetch(2)[0], 200)  # over budget now: sized-1 is the least recently used
        self.wait_for_evictions(1)
        self.assertLessEqual(self.node.metric("inferllama_disk_used_bytes"), 2.5 * SIZE)

        self.hub.reset()
        for i in (0, 2):
            status, _, body = self.fetch(i)
            self.assertEqual((status, sha256(body)), (200, self.hub.files(self.model(i))[FILE]["sha256"]))
            self.assertEqual(self.cdn_bytes(i), 0, f"sized-{i} was fetched again")
        status, _, body = self.fetch(1)  # evicted: fetched again, still correct
        self.assertEqual((status, sha256(body)), (200, self.hub.files(self.model(1))[FILE]["sha256"]))
        self.assertEqual(self.cdn_bytes(1), SIZE)

        unpinned = self.cli("unpin", self.model(0))
        self.assertEqual(unpinned.returncode, 0, unpinned.stderr)

    def test_a_file_being_read_is_not_freed_under_its_reader(self):
        self.assertEqual(self.fetch(0)[0], 200)
        commit = self.hub.commit(self.model(0))
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.request("GET", self.node.resolve_path(self.model(0), commit, FILE))
        response = conn.getresponse()
        first = response.read(1024)
        # sized-0 is the least recently used, but it is being read while two more models arrive.
        self.assertEqual(self.fetch(1)[0], 200)
        self.assertEqual(self.fetch(2)[0], 200)
        self.wait_for_evictions(1)
        rest = response.read()
        conn.close()
        self.assertEqual(sha256(first + rest), self.hub.files(self.model(0))[FILE]["sha256"])

    def test_a_stored_file_missing_a_chunk_is_fetched_again(self):
        self.assertEqual(self.fetch(3)[0], 200)
        deadline = time.monotonic() + 30  # stored (committed), not only streamed
        while self.node.metric('inferllama_downloads_total{result="completed"}') < 1:
            self.assertLess(time.monotonic(), deadline)
        for root, _, names in os.walk(os.path.join(self.node.data_dir, "chunks")):
            for name in names:
                os.unlink(os.path.join(root, name))
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.fetch(3)
        # The node forgets the damaged file on a worker; a following request fetches it again.
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = self.fetch(3)
                if status == 200 and sha256(body) == self.hub.files(self.model(3))[FILE]["sha256"]:
                    break
            except (http.client.IncompleteRead, ConnectionError):
                pass
            self.assertLess(time.monotonic(), deadline, "the damaged file was never fetched again")

    def test_gc_collects_unreferenced_chunks(self):
        self.assertEqual(self.fetch(3)[0], 200)
        orphan_dir = os.path.join(self.node.data_dir, "chunks", "ab", "cd")
        os.makedirs(orphan_dir, exist_ok=True)
        orphan = os.path.join(orphan_dir, "abcd" + "0" * 60)
        with open(orphan, "wb") as fh:
            fh.write(b"x" * 4096)
        result = self.cli("gc")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("removed 1 unreferenced chunks, freed 4096 bytes", result.stdout)
        self.assertFalse(os.path.exists(orphan))
        status, _, body = self.fetch(3)
        self.assertEqual((status, sha256(body)), (200, self.hub.files(self.model(3))[FILE]["sha256"]))


if __name__ == "__main__":
    unittest.main()
