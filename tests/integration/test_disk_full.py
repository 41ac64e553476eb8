"""A full disk (ENOSPC on a small tmpfs): the download that hit it fails with a clear error and no
half-written chunk is ever referenced, eviction makes room, hits keep serving, and a retry succeeds."""
import http.client
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256  # noqa: E402

SIZE = 12 << 20


def mount_tmpfs(path: str, size: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.mount = tempfile.mkdtemp(prefix="inferllama-enospc-")
        if os.geteuid() != 0 or not mount_tmpfs(self.mount, "64m"):
            os.rmdir(self.mount)
            self.skipTest("needs root to mount a small tmpfs")
        self.addCleanup(self.unmount)
        self.hub = FakeHub("--sized-models", "2", "--sized-model-size", str(SIZE)).start()
        self.addCleanup(self.hub.stop)
        data = os.path.join(self.mount, "data")
        os.makedirs(data)
        self.node = Node(self.hub.url, data).start()
        self.addCleanup(self.node.stop)

    def unmount(self):
        subprocess.run(["umount", self.mount], capture_output=True)
        os.rmdir(self.mount)

    def fetch(self, i, path="model.safetensors"):
        repo = f"acme/sized-{i}"
        return self.node.request("GET", self.node.resolve_path(repo, self.hub.commit(repo), path))

    def digest(self, i, path="model.safetensors"):
        return self.hub.files(f"acme/sized-{i}")[path]["sha256"]

    def test_enospc_fails_cleanly_evicts_and_recovers(self):
        self.assertEqual(self.fetch(0)[0], 200)
        status, _, body = self.fetch(1, "config.json")
        self.assertEqual((status, sha256(body)), (200, self.digest(1, "config.json")))
        # The client has every byte once they are verified; the file is stored a moment later. It must be
        # stored before the disk fills, or the hit below would be a miss on a full disk.
        deadline = time.monotonic() + 30
        while self.node.metric('inferllama_downloads_total{result="completed"}') < 2:
            self.assertLess(time.monotonic(), deadline, "the two files were not stored")
        # Fill the file system but for 6 MiB: the next 12 MiB download runs out of space midway.
        st = os.statvfs(self.mount)
        with open(os.path.join(self.mount, "filler"), "wb") as fh:
            fh.write(b"\0" * (st.f_bavail * st.f_frsize - (6 << 20)))
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.fetch(1)
        with open(self.node.log_path) as fh:
            self.assertIn("No space left on device", fh.read())
        # Hits keep serving while the disk is full.
        status, _, body = self.fetch(1, "config.json")
        self.assertEqual((status, sha256(body)), (200, self.digest(1, "config.json")))
        # Eviction (of the least recently used file, sized-0) made room: the retry succeeds.
        deadline = time.monotonic() + 30
        while True:
            _, _, metrics = self.node.metrics_request()
            if "inferllama_evictions_total 1" in metrics.decode():
                break
            self.assertLess(time.monotonic(), deadline, "nothing was evicted")
        # An evicted chunk's space comes back once no thread of the node has it open any more (a hashing
        # thread of the node's lowest priority may still be reading it on a busy machine).
        while os.statvfs(self.mount).f_bavail * os.statvfs(self.mount).f_frsize < SIZE - (6 << 20):
            self.assertLess(time.monotonic(), deadline, "the evicted file's space did not come back")
        status, _, body = self.fetch(1)
        self.assertEqual((status, sha256(body)), (200, self.digest(1)))


if __name__ == "__main__":
    unittest.main()
