"""Backups: `inferllama backup` of a running node (the node makes it through its admin socket) and of a
stopped one, the schedule and its checks, retention, and `inferllama restore` into a fresh data directory
that a node then serves from: users' keys, cached metadata, and cached files fetched again."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY, add_user, admin, bearer  # noqa: E402
from harness import BINARY, FakeHub, Node, clean_env, sha256, wait_until  # noqa: E402

MODEL = "acme/tiny-model"
BIG = "model.safetensors"  # an LFS file of three chunks
WRITTEN = re.compile(r"backup written: (\S+) \((\d+) bytes\)")
NAME = re.compile(r"inferllama-backup-\d{8}T\d{6}Z\.ilbk")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=120, env=clean_env())


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def stamp(seconds_ago: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - seconds_ago))


class BackupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.files = cls.hub.files(MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="inferllama-backup-test-")
        self.backups = os.path.join(self.tmp, "backups")
        self.key_file = self.new_key("backup.key")
        with open(self.key_file) as f:
            self.key = f.read().strip()
        self.outputs: list[str] = []  # everything the CLI printed
        self.nodes: list[Node] = []

    def tearDown(self):
        try:
            # The backup key never reaches a log or an output.
            for node in self.nodes:
                node.stop()
                with open(node.log_path, errors="replace") as f:
                    self.assertNotIn(self.key, f.read())
            for text in self.outputs:
                self.assertNotIn(self.key, text)
        finally:
            for node in self.nodes:
                node.cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = cli(*args)
        self.outputs += [done.stdout, done.stderr]
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    def new_key(self, name: str) -> str:
        path = os.path.join(self.tmp, "keys", name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        done = cli("backup", "--new-key", path)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(mode(path), 0o600)
        return path

    def start(self, data_dir: str | None = None, *extra: str) -> Node:
        node = Node(self.hub.url, data_dir, *extra, admin_key=ADMIN_KEY).start()
        self.nodes.append(node)
        return node

    def backed_up(self, data_dir: str, *extra: str) -> str:
        """`inferllama backup` of `data_dir` into self.backups: the file it wrote."""
        done = self.run_cli("backup", "--data-dir", data_dir, "--backup-dir", self.backups,
                            "--backup-key-file", self.key_file, *extra)
        written = WRITTEN.search(done.stdout)
        self.assertIsNotNone(written, done.stdout)
        path = written.group(1)
        self.assertRegex(os.path.basename(path), NAME)
        self.assertEqual(os.path.getsize(path), int(written.group(2)))
        self.assertEqual(mode(path), 0o600)
        return path

    def stopped_node_with_a_user(self) -> str:
        node = self.start()
        add_user(node, "alice")
        node.stop()
        return node.data_dir

    def test_a_running_nodes_backup_restores_into_a_fresh_data_directory(self):
        node = self.start()
        key = add_user(node, "alice")
        status, _, info = node.request("GET", f"/api/models/{MODEL}/revision/main", bearer(key))
        self.assertEqual(status, 200)
        commit = json.loads(info)["sha"]
        status, _, body = node.request("GET", node.resolve_path(MODEL, "main", BIG), bearer(key))
        self.assertEqual((status, sha256(body)), (200, self.files[BIG]["sha256"]))

        # Beside the running node, the CLI asks it (admin socket) and the node backs up its open index.
        backup = self.backed_up(node.data_dir)
        with open(node.log_path, errors="replace") as f:
            self.assertIn("backup written: " + backup, f.read())
        self.assertFalse(os.path.exists(os.path.join(node.data_dir, "backup-staging")))
        with open(backup, "rb") as f:
            self.assertTrue(f.read(8).startswith(b"ILBK"))
        self.assertEqual(node.stop(), 0)
        with open(os.path.join(node.data_dir, "secret.key")) as f:
            secret = f.read()

        fresh = os.path.join(self.tmp, "fresh")
        done = self.run_cli("restore", backup, "--data-dir", fresh, "--backup-key-file", self.key_file)
        self.assertIn("restored " + backup, done.stdout)
        self.assertIn("have no chunks", done.stdout)
        self.assertTrue(os.path.isdir(os.path.join(fresh, "index")))
        self.assertEqual(mode(fresh), 0o700)
        with open(os.path.join(fresh, "secret.key")) as f:
            self.assertEqual(f.read(), secret)
        self.assertEqual(mode(os.path.join(fresh, "secret.key")), 0o600)
        chunks = [n for _, _, names in os.walk(os.path.join(fresh, "chunks")) for n in names]
        self.assertEqual(chunks, [])

        # The restored index alone (offline: the Hub is never asked) knows the user's key and the repo.
        restored = self.start(fresh, "--offline")
        self.hub.reset()
        status, _, _ = restored.request("GET", "/api/usage", bearer(key))
        self.assertEqual(status, 200)
        status, _, _ = restored.request("GET", "/api/usage", bearer("il_" + "0" * 40))
        self.assertEqual(status, 401)
        status, _, info = restored.request("GET", f"/api/models/{MODEL}/revision/main", bearer(key))
        self.assertEqual((status, json.loads(info)["sha"]), (200, commit))
        status, _, _ = restored.request("GET", restored.resolve_path(MODEL, "main", BIG), bearer(key))
        self.assertEqual(status, 504)  # its bytes are not in the backup
        self.assertEqual(self.hub.stats()["total_requests"], 0)
        self.assertEqual(restored.stop(), 0)

        # Online, the file is fetched again and served whole.
        restored = self.start(fresh)
        status, _, body = restored.request("GET", restored.resolve_path(MODEL, commit, BIG), bearer(key))
        self.assertEqual((status, sha256(body)), (200, self.files[BIG]["sha256"]))
        self.assertEqual(self.hub.stats()["cdn_bytes"].get(self.files[BIG]["sha256"]), self.files[BIG]["size"])

    def test_a_stopped_nodes_backup_deletes_only_its_own_expired_backups(self):
        data_dir = self.stopped_node_with_a_user()
        os.makedirs(self.backups)
        old = [f"inferllama-backup-{stamp(40 * 86400)}.ilbk", "inferllama-backup-20200101T000000Z.ilbk"]
        kept = [f"inferllama-backup-{stamp(2 * 86400)}.ilbk", "inferllama-backup-20200101T000000Z.ilbk.old",
                "nightly-20200101T000000Z.ilbk", "inferllama-backup-2020-01-01.ilbk", "notes.txt"]
        for name in old + kept:
            with open(os.path.join(self.backups, name), "w") as f:
                f.write("not a backup")
        # No node runs on the directory: the command opens the index itself.
        backup = self.backed_up(data_dir)
        self.assertFalse(os.path.exists(os.path.join(data_dir, "backup-staging")))
        self.assertEqual(sorted(os.listdir(self.backups)), sorted(kept + [os.path.basename(backup)]))
        # The default retention is 35 days; a shorter one (from a configuration file) deletes the two-day-old
        # backup too.
        with open(os.path.join(self.tmp, "short.toml"), "w") as f:
            f.write(f'backup_retention = "1d"\nbackup_dir = "{self.backups}"\n'
                    f'backup_key_file = "{self.key_file}"\ndata_dir = "{data_dir}"\n')
        done = self.run_cli("backup", "--config", os.path.join(self.tmp, "short.toml"))
        self.assertIn(f"deleted the expired backup {os.path.join(self.backups, kept[0])}", done.stdout)
        self.assertTrue(os.path.exists(backup))
        fresh = os.path.join(self.tmp, "fresh")
        self.run_cli("restore", backup, "--data-dir", fresh, "--backup-key-file", self.key_file)
        self.assertIn("alice", self.run_cli("user", "list", "--data-dir", fresh).stdout)

    def test_a_wrong_key_a_damaged_file_or_a_used_directory_restores_nothing(self):
        data_dir = self.stopped_node_with_a_user()
        backup = self.backed_up(data_dir)
        fresh = os.path.join(self.tmp, "fresh")
        done = self.run_cli("restore", backup, "--data-dir", fresh, "--backup-key-file", self.new_key("other.key"),
                            code=1)
        self.assertIn("another key", done.stderr)
        self.assertFalse(os.path.exists(fresh))
        with open(backup, "rb") as f:
            whole = f.read()
        for name, damaged in (("cut.ilbk", whole[:-100]), ("flipped.ilbk", whole[:60] + bytes([whole[60] ^ 1]) +
                                                                              whole[61:])):
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(damaged)
            done = self.run_cli("restore", path, "--data-dir", fresh, "--backup-key-file", self.key_file, code=1)
            self.assertIn("damaged, cut short or altered", done.stderr)
            self.assertFalse(os.path.exists(fresh))
        done = self.run_cli("restore", backup, "--data-dir", data_dir, "--backup-key-file", self.key_file, code=1)
        self.assertIn("--force", done.stderr)
        done = self.run_cli("restore", backup, "--data-dir", data_dir, "--backup-key-file", self.key_file,
                            "--force")
        aside = re.search(r"the index that was there is kept at (\S+)", done.stdout).group(1)
        self.assertTrue(os.path.isdir(aside))
        # A key others may read is refused, for a restore as for a backup.
        os.chmod(self.key_file, 0o644)
        done = self.run_cli("restore", backup, "--data-dir", fresh, "--backup-key-file", self.key_file, code=1)
        self.assertIn("chmod 600", done.stderr)
        self.assertFalse(os.path.exists(fresh))

    def test_the_schedule_backs_up_at_start_and_its_settings_are_checked(self):
        node = self.start(None, "--backup-dir", self.backups, "--backup-key-file", self.key_file)
        made = wait_until(lambda: [n for n in os.listdir(self.backups) if NAME.fullmatch(n)]
                          if os.path.isdir(self.backups) else None, what="the first scheduled backup")
        self.assertEqual(len(made), 1)
        self.assertGreater(wait_until(lambda: node.metric("inferllama_backup_last_success_timestamp_seconds")),
                           time.time() - 60)
        self.assertEqual(node.metric("inferllama_backup_failures_total"), 0)
        # Over TCP with the admin key: into the node's backup_dir (a second one, named after the next second).
        status, answer = admin(node, "POST", "backup", {})
        self.assertEqual(status, 200, answer)
        self.assertEqual(os.path.dirname(answer["file"]), self.backups)
        self.assertEqual(len([n for n in os.listdir(self.backups) if NAME.fullmatch(n)]), 2)
        status, answer = admin(node, "POST", "backup", {"backup_dir": "relative"})
        self.assertEqual(status, 400, answer)
        # A backup asked of the node with a place inside its data directory is refused.
        done = self.run_cli("backup", "--data-dir", node.data_dir, "--backup-dir",
                            os.path.join(node.data_dir, "backups"), code=1)
        self.assertIn("inside the data directory", done.stderr)
        node.stop()

        # The node does not start with a backup key it could not keep apart or private.
        inside = os.path.join(node.data_dir, "backup.key")
        shutil.copy(self.key_file, inside)
        os.chmod(self.key_file, 0o640)
        for key_file, why in ((inside, "inside the data directory"), (self.key_file, "chmod 600"),
                              (os.path.join(self.tmp, "missing.key"), "--new-key")):
            done = subprocess.run([BINARY, "serve", "--data-dir", node.data_dir, "--listen", "127.0.0.1:0",
                                   "--bt-listen", "", "--tracker-udp", "", "--metrics-listen", "",
                                   "--backup-dir", self.backups, "--backup-key-file", key_file],
                                  capture_output=True, text=True, timeout=60, env=clean_env())
            self.assertEqual(done.returncode, 2, done.stderr)
            self.assertIn("backup_key_file", done.stderr)
            self.assertIn(why, done.stderr)


if __name__ == "__main__":
    unittest.main()
