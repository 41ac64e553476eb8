"""A RocksDB error on the request path (a damaged table of the index) is a 500 with a reason, a counter
and an error log line: never a dropped connection, and the node goes on answering everything else."""
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node  # noqa: E402

MODEL = "acme/tiny-model"


def table_of_family(index_dir: str, family: str) -> str:
    """The one SST file of the index that holds `family` (found with RocksDB's own sst_dump)."""
    found = []
    for name in sorted(os.listdir(index_dir)):
        if not name.endswith(".sst"):
            continue
        path = os.path.join(index_dir, name)
        props = subprocess.run([shutil.which("sst_dump") or "sst_dump", f"--file={path}", "--show_properties"],
                               capture_output=True, text=True, check=True).stdout
        if f"column family name: {family}\n" in props:
            found.append(path)
    if len(found) != 1:
        raise AssertionError(f"want one table of {family} in {index_dir}, found {found}")
    return found[0]


class IndexErrorTest(unittest.TestCase):
    def setUp(self):
        self.hub = FakeHub().start()
        self.data_dir = None

    def tearDown(self):
        self.hub.stop()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def test_a_damaged_index_table_is_a_500_and_the_node_goes_on(self):
        path = f"/{MODEL}/resolve/main/config.json"
        node = Node(self.hub.url).start()
        self.data_dir = node.data_dir
        status, _, body = node.request("GET", path)
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 131)
        node.stop()
        # A restart writes what the log held into tables, one per column family.
        Node(self.hub.url, self.data_dir).start().stop()

        table = table_of_family(os.path.join(self.data_dir, "index"), "files")
        with open(table, "r+b") as f:
            f.seek(8)  # inside the first data block: its checksum no longer matches
            damaged = bytes(b ^ 0xFF for b in f.read(16))
            f.seek(8)
            f.write(damaged)

        errors_logged = 0
        for extra in ((), ("--offline",)):
            with self.subTest(mode=extra or "online"):
                node = Node(self.hub.url, self.data_dir, *extra).start()
                try:
                    for _ in range(2):  # the first failure leaves nothing behind that changes the second
                        status, headers, body = node.request("GET", path)
                        self.assertEqual(status, 500, body)
                        self.assertIn("see its log", headers.get("x-error-message", ""))
                        self.assertEqual(headers.get("content-type"), "application/json")
                        self.assertIn(b"failed to answer", body)
                    self.assertEqual(node.metric("inferllama_http_internal_errors_total"), 2)
                    # Everything that does not need the damaged table still works.
                    self.assertEqual(node.request("GET", "/healthz")[0], 200)
                    status, _, body = node.request("GET", f"/{MODEL}/resolve/main/README.md")
                    self.assertEqual(status, 200, body)
                finally:
                    node.stop()
                with open(node.log_path, errors="replace") as f:
                    log = f.read()
                errors_logged += 2
                self.assertEqual(log.count(f"[error] GET {path}: index read: Corruption"), errors_logged)


if __name__ == "__main__":
    unittest.main()
