"""Crash safety: a kill -9 at any moment leaves an index whose cached files all hash to their etags,
and an interrupted download resumes from the chunks already staged instead of fetching them again."""
import http.client
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import crash_loop  # noqa: E402
from harness import FakeHub, Node, sha256  # noqa: E402

SIZE = 48 << 20




class CrashTest(unittest.TestCase):
    def test_short_crash_loop(self):
        counts = crash_loop.run(iterations=4, seed=int(os.environ.get("CRASH_SEED", "1234")))
        self.assertEqual(counts["killed"], 4)

    def test_kill_during_a_download_resumes_without_refetching(self):
        # 4 connections at 8 MB/s each: the 48 MiB file takes about 1.5 s, long enough to kill midway.
        hub = FakeHub("--big-file-size", str(SIZE), "--cdn-rate", str(8 << 20)).start()
        node = Node(hub.url)
        try:
            node.start()
            f = hub.files("acme/big-model")["model.safetensors"]
            path = node.resolve_path("acme/big-model", "main", "model.safetensors")
            client = threading.Thread(target=lambda: self.swallow(node, path), daemon=True)
            client.start()
            deadline = time.monotonic() + 60
            while node.metric("inferllama_upstream_bytes_total") < SIZE / 3:
                self.assertLess(time.monotonic(), deadline)
            node.proc.send_signal(signal.SIGKILL)
            node.stop()
            client.join(timeout=60)

            node.start()
            sent_before = hub.stats()["cdn_bytes"][f["sha256"]]
            status, _, body = node.request("GET", path)
            self.assertEqual((status, sha256(body)), (200, f["sha256"]))
            resumed = node.metric("inferllama_resumed_bytes_total")
            refetched = hub.stats()["cdn_bytes"][f["sha256"]] - sent_before
            self.assertGreaterEqual(resumed, SIZE / 4)
            self.assertLessEqual(refetched, SIZE - resumed + 4096)
        finally:
            node.stop()
            node.cleanup()
            hub.stop()

    @staticmethod
    def swallow(node, path):
        try:
            conn = http.client.HTTPConnection(node.host, node.port, timeout=60)
            conn.request("GET", path)
            conn.getresponse().read()
        except Exception:  # the node is killed under it
            pass


if __name__ == "__main__":
    unittest.main()
