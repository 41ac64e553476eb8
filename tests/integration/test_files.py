"""Files and secrets: the data directory and everything the node writes in it are the owner's only
(umask 077, the directory created 0700), secrets come from files so they are in no process's arguments,
and an existing data directory open to others is left as it is, with a warning."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from accounts import ADMIN_KEY, add_user, admin
from harness import BINARY, FakeHub, Node, clean_env


def open_to_others(root: str) -> list[str]:
    """Every path under `root` (itself included) that group or others may read, write or enter."""
    found = []
    for where, dirs, files in os.walk(root):
        for path in [where] + [os.path.join(where, n) for n in files]:
            if stat.S_IMODE(os.lstat(path).st_mode) & 0o077:
                found.append(f"{path} {stat.filemode(os.lstat(path).st_mode)}")
    return found


class SecretFilesTest(unittest.TestCase):
    def setUp(self):
        self.parent = tempfile.mkdtemp(prefix="inferllama-files-")
        self.addCleanup(shutil.rmtree, self.parent, True)
        self.key_file = os.path.join(self.parent, "admin_key")
        with open(self.key_file, "w") as f:
            f.write(ADMIN_KEY + "\n")
        os.chmod(self.key_file, 0o600)

    def node(self, data_dir: str, *extra: str) -> Node:
        node = Node(self.hub.url, data_dir, "--admin-key-file", self.key_file, *extra)
        node.log_path = os.path.join(self.parent, "node.log")  # beside the data directory, not in it
        return node

    def log(self) -> str:
        with open(os.path.join(self.parent, "node.log"), errors="replace") as f:
            return f.read()

    def test_a_new_data_directory_and_its_index_are_the_owners_only_and_the_key_file_works(self):
        data_dir = os.path.join(self.parent, "data")
        with FakeHub() as self.hub, self.node(data_dir) as node:
            # Passkeys and keys land in the index.
            add_user(node, "alice")
            self.assertEqual(admin(node, "GET", "users")[0], 200)
            self.assertEqual(admin(node, "GET", "users", key="wrong-admin-key-0123456")[0], 401)
            with open(f"/proc/{node.proc.pid}/cmdline", "rb") as f:
                self.assertNotIn(ADMIN_KEY.encode(), f.read(), "the key is in no argument")
            # The CLI takes the key from a file too, and refuses it given both ways.
            def cli(*args):
                return subprocess.run([BINARY, "user", "list", "--node", node.url, *args], capture_output=True,
                                      text=True, timeout=60, env=clean_env())
            listed = cli("--admin-key-file", self.key_file)
            self.assertEqual(listed.returncode, 0, listed.stderr)
            self.assertIn("alice", listed.stdout)
            on_the_line = cli("--admin-key", ADMIN_KEY)
            self.assertEqual(on_the_line.returncode, 2, on_the_line.stderr)
            self.assertIn("would show the key to every user of the machine", on_the_line.stderr)
            self.assertEqual(stat.S_IMODE(os.stat(data_dir).st_mode), 0o700)
            index = os.path.join(data_dir, "index")
            self.assertTrue(os.listdir(index))
            self.assertEqual(open_to_others(data_dir), [])
        self.assertEqual(open_to_others(data_dir), [], "nor after a clean stop")
        self.assertNotIn(ADMIN_KEY, self.log(), "the key is in no log line")

    def test_an_existing_data_directory_open_to_others_is_left_so_with_a_warning(self):
        data_dir = os.path.join(self.parent, "shared")
        os.mkdir(data_dir)
        os.chmod(data_dir, 0o755)
        with FakeHub() as self.hub, self.node(data_dir) as node:
            self.assertEqual(admin(node, "GET", "users")[0], 200)
            self.assertEqual(stat.S_IMODE(os.stat(data_dir).st_mode), 0o755, "the operator's modes stay")
            # What the node itself creates in it is still its own only.
            self.assertEqual(open_to_others(os.path.join(data_dir, "index")), [])
        self.assertIn(f"the data directory {data_dir} is open to others", self.log())

    def test_a_missing_key_file_stops_the_node_with_the_key_named(self):
        os.remove(self.key_file)
        with FakeHub() as self.hub:
            node = self.node(os.path.join(self.parent, "data"))
            with self.assertRaises(RuntimeError):
                node.start()
            node.stop()
        self.assertIn("admin_key_file", self.log())
        self.assertIn("cannot be read", self.log())


if __name__ == "__main__":
    unittest.main()
