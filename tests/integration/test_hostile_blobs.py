"""A hostile upstream (a compromised Hub or parent node) that lies about files: hashes of other repos'
files, wrong sizes, bodies without end. A stored blob answers for a repo only once that repo's own
upstream delivered the same bytes (blobs of public repos are shared); sizes come from the stored bytes;
every lie ends in a clear error or the right bytes, nothing wrong is stored, and the node stays responsive."""
import http.client
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256, wait_until  # noqa: E402

PUBLIC = "acme/tiny-model"
OTHER_PUBLIC = "acme/new-name"
GATED = "acme/gated-model"
DATASET = "acme/tiny-dataset"
APPROVED = {"Authorization": "Bearer hf_approved"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HostileBlobsTest(unittest.TestCase):
    def setUp(self):
        self.hub = FakeHub().start()
        # Branch names expire at once: every request asks the (lying) upstream again.
        self.node = Node(self.hub.url, None, "--ref-ttl", "0").start()

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()
        self.hub.stop()

    def fetch(self, method, path, headers=None, timeout=60):
        """(status, headers, body, complete): a body cut short is returned as far as it came."""
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            try:
                body, complete = r.read(), True
            except http.client.IncompleteRead as e:
                body, complete = e.partial, False
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body, complete
        finally:
            conn.close()

    def settled(self):
        """A client has the last byte once the file verified; it is stored a moment later."""
        wait_until(lambda: self.node.metric("inferllama_downloads_in_flight") == 0, what="downloads to end")

    def blob_bytes(self, repo, path):
        status, _, body, complete = self.fetch("GET", self.node.resolve_path(repo, "main", path), APPROVED)
        self.assertEqual((status, complete), (200, True))
        self.settled()
        return body

    def chunk_files(self):
        return sum(len(files) for _, _, files in os.walk(os.path.join(self.node.data_dir, "chunks")))

    def test_a_gated_blob_answers_a_public_repo_only_after_its_own_upstream_delivered_it(self):
        gated = self.hub.files(GATED)["model.safetensors"]
        gated_bytes = self.blob_bytes(GATED, "model.safetensors")
        self.assertEqual(sha256(gated_bytes), gated["sha256"])
        chunks = self.chunk_files()
        own = self.hub.files(PUBLIC)["model.safetensors"]
        path = self.node.resolve_path(PUBLIC, "main", "model.safetensors")

        # The public repo's upstream names the gated file's hash but has other bytes: no gated byte goes out,
        # the public repo's own bytes fail the hash, and nothing is stored for it.
        self.hub.lies([{"kind": "etag_of", "match": f"{PUBLIC}/model.safetensors", "repo": GATED,
                        "path": "model.safetensors", "deliver": "own"}])
        for _ in range(2):
            status, _, body, complete = self.fetch("GET", path)
            self.assertFalse(status == 200 and complete, "a body that failed its hash looked complete")
            self.assertLess(len(body), len(gated_bytes))
            if body:
                self.assertNotEqual(body[:4096], gated_bytes[:len(body[:4096])])
        self.settled()
        self.assertGreater(self.hub.stats()["cdn_bytes"].get(own["sha256"], 0), 0,
                           "the public repo's own upstream was not asked for the bytes")
        self.assertEqual(self.chunk_files(), chunks)

        # Its upstream really has the bytes: once they verified, the stored blob answers for it too,
        # without a second copy of its chunks.
        self.hub.lies([{"kind": "etag_of", "match": f"{PUBLIC}/model.safetensors", "repo": GATED,
                        "path": "model.safetensors", "deliver": "claimed"}])
        before = self.hub.stats()["cdn_bytes"].get(gated["sha256"], 0)
        status, headers, body, complete = self.fetch("GET", path)
        self.assertEqual((status, complete), (200, True))
        self.assertEqual(body, gated_bytes)
        self.settled()
        self.assertGreaterEqual(self.hub.stats()["cdn_bytes"].get(gated["sha256"], 0) - before, gated["size"])
        self.assertEqual(self.chunk_files(), chunks)
        # From now on it is served from the store.
        before = self.hub.stats()["cdn_bytes"].get(gated["sha256"], 0)
        status, _, body, complete = self.fetch("GET", path)
        self.assertEqual((status, complete, body == gated_bytes), (200, True, True))
        self.assertEqual(self.hub.stats()["cdn_bytes"].get(gated["sha256"], 0), before)

    def test_a_private_blob_is_not_seeded_in_a_public_snapshot_torrent(self):
        private = self.hub.files("acme/private-model")["weights.bin"]
        private_bytes = self.blob_bytes("acme/private-model", "weights.bin")
        self.assertEqual(sha256(private_bytes), private["sha256"])
        # The public repo's tree names the private file's hash for one of its files, whose bytes differ:
        # the torrent's file has to be fetched from the public repo's upstream, and fails.
        self.hub.lies([{"kind": "etag_of", "match": f"{OTHER_PUBLIC}/model.safetensors",
                        "repo": "acme/private-model", "path": "weights.bin", "deliver": "own"}])
        status, _, body, _ = self.fetch("GET", f"/api/models/{OTHER_PUBLIC}/torrent/main")
        self.assertEqual(status, 502, body[:300])

    def test_sizes_that_disagree_with_the_stored_bytes_are_refused_without_hanging_the_node(self):
        weights = self.hub.files(PUBLIC)["nested/deep/dir/weights.bin"]
        weights_bytes = self.blob_bytes(PUBLIC, "nested/deep/dir/weights.bin")
        path = self.node.resolve_path(OTHER_PUBLIC, "main", "model.safetensors")
        claim = {"kind": "etag_of", "match": f"{OTHER_PUBLIC}/model.safetensors", "repo": PUBLIC,
                 "path": "nested/deep/dir/weights.bin", "deliver": "claimed"}
        cpu_before, wall_before = cpu_seconds(self.node.proc.pid), time.monotonic()
        for size in (weights["size"] + 10 * 1024 * 1024, weights["size"] - 1000, 0):
            self.hub.lies([claim, {"kind": "size", "match": f"{OTHER_PUBLIC}/model.safetensors", "size": size}])
            for method in ("GET", "HEAD"):
                status, headers, _, _ = self.fetch(method, path, timeout=20)
                self.assertEqual(status, 502, (method, size))
                self.assertIn("claims", headers.get("x-error-message", ""))
            # Another request answers at once.
            started = time.monotonic()
            status, _, _, _ = self.fetch("GET", self.node.resolve_path(PUBLIC, "main", "config.json"), timeout=5)
            self.assertEqual(status, 200)
            self.assertLess(time.monotonic() - started, 2)
        cpu_used, wall = cpu_seconds(self.node.proc.pid) - cpu_before, time.monotonic() - wall_before
        self.assertLess(cpu_used, 0.5 * wall + 1.0, "the node burnt CPU on lying sizes")

        # The true size: the shared blob answers (a public repo's bytes are anyone's), with its own size.
        self.hub.lies([claim])
        status, headers, body, complete = self.fetch("GET", path)
        self.assertEqual((status, complete), (200, True))
        self.assertEqual(body, weights_bytes)
        self.assertEqual(headers["x-linked-size"], str(weights["size"]))
        status, headers, _, _ = self.fetch("HEAD", self.node.resolve_path(PUBLIC, "main", "nested/deep/dir/weights.bin"))
        self.assertEqual((status, headers["x-linked-size"]), (200, str(weights["size"])))

    def test_a_lying_size_of_a_file_not_stored_ends_in_an_error_and_stores_nothing(self):
        csv = self.hub.files(DATASET)["data/test.csv"]
        path = self.node.resolve_path(DATASET, "main", "data/test.csv", prefix="datasets/")
        for size in (csv["size"] + 5000, csv["size"] - 10):
            self.hub.lies([{"kind": "size", "match": f"{DATASET}/data/test.csv", "size": size}])
            status, _, body, complete = self.fetch("GET", path)
            self.assertFalse(status == 200 and complete, size)
        self.hub.lies([])
        status, headers, body, complete = self.fetch("GET", path)
        self.assertEqual((status, complete, sha256(body)), (200, True, csv["sha256"]))

    def test_an_endless_metadata_answer_is_an_error_in_bounded_memory(self):
        def rss_kib():
            with open(f"/proc/{self.node.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

        before = rss_kib()
        self.hub.lies([{"kind": "endless", "match": "acme/tiny-space/"}])
        status, _, _, _ = self.fetch("GET", "/api/spaces/acme/tiny-space/tree/main", timeout=60)
        self.assertGreaterEqual(status, 500)
        self.assertLess(rss_kib() - before, 512 * 1024)

    def test_endless_bodies_are_cut_at_the_claimed_size(self):
        parquet_path = "data/train-00000-of-00001.parquet"
        parquet = self.hub.files(DATASET)[parquet_path]
        csv = self.hub.files(DATASET)["data/test.csv"]
        self.hub.lies([{"kind": "endless", "match": f"{DATASET}/{parquet_path}"},
                       {"kind": "endless", "match": f"{DATASET}/data/test.csv"}])
        for path, f in ((parquet_path, parquet), ("data/test.csv", csv)):
            status, headers, body, complete = self.fetch(
                "GET", self.node.resolve_path(DATASET, "main", path, prefix="datasets/"), timeout=60)
            self.assertEqual((status, complete, len(body)), (200, True, f["size"]), path)
            self.assertEqual(sha256(body), f["sha256"])
        # The node stopped reading: the CDN could write little more than the file before the node hung up.
        self.assertLess(self.hub.stats()["cdn_bytes"].get(parquet["sha256"], 0), parquet["size"] + 16 * 1024 * 1024)
        # An endless body that is shorter than its claim in truth (a size lie): the hash fails, nothing stored.
        readme_path = "README.md"
        readme = self.hub.files(DATASET)[readme_path]
        self.hub.lies([{"kind": "endless", "match": f"{DATASET}/{readme_path}"},
                       {"kind": "size", "match": f"{DATASET}/{readme_path}", "size": readme["size"] + 100}])
        status, _, body, complete = self.fetch("GET", self.node.resolve_path(DATASET, "main", readme_path,
                                                                             prefix="datasets/"))
        self.assertFalse(status == 200 and complete)
        self.hub.lies([])
        status, _, body, complete = self.fetch("GET", self.node.resolve_path(DATASET, "main", readme_path,
                                                                             prefix="datasets/"))
        self.assertEqual((status, complete, sha256(body)), (200, True, readme["sha256"]))


if __name__ == "__main__":
    unittest.main()
