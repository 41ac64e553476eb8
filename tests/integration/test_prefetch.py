"""Keeping things warm: `prefetch` entries fetched with no client asking, only the files their patterns want,
a moved branch picked up at the next interval, `inferllama prefetch add|list|remove` kept across a restart,
and `inferllama refresh` showing a force-pushed branch at once."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, FakeHub, Node, clean_env, wait_until  # noqa: E402

MODEL = "acme/tiny-model"
INTERVAL = 10  # the shortest prefetch_interval


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=120, env=clean_env())
    if check:
        assert done.returncode == 0, f"{args}: {done.stderr}"
    return done


def prefetch_list(node: Node) -> list[dict]:
    return json.loads(cli("prefetch", "list", "--json", "--data-dir", node.data_dir).stdout)["entries"]


def entry_of(node: Node, repo: str, revision: str = "main") -> dict | None:
    for entry in prefetch_list(node):
        if entry["repo"] == repo and entry["revision"] == revision:
            return entry
    return None


def wait_for_commit(node: Node, repo: str, revision: str, commit: str, timeout: float) -> dict:
    """The entry once its last run held every wanted file of `commit`."""
    def done():
        entry = entry_of(node, repo, revision)
        return entry if entry and entry["current"] and entry["commit"] == commit else None
    return wait_until(done, timeout, f"prefetch of {repo}@{revision} at {commit}")


class PrefetchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def start_node(self, *extra: str, data_dir: str | None = None) -> Node:
        node = Node(self.hub.url, data_dir, "--prefetch-interval", f"{INTERVAL}s", *extra).start()
        self.addCleanup(node.cleanup)  # runs after the stop below (a node given a data_dir leaves it alone)
        self.addCleanup(node.stop)
        return node

    def resolved(self, path: str) -> list[str]:
        """The hub requests for `path` of MODEL's files so far (HEAD or GET of a resolve URL)."""
        return [r for r in self.hub.stats()["hub_requests"] if f"/{MODEL}/resolve/" in r and r.endswith(path)]

    def test_configured_entries_are_fetched_without_a_client_and_only_the_files_their_patterns_want(self):
        self.hub.reset()
        files = self.hub.files(MODEL)
        node = self.start_node("--prefetch", f"{MODEL}:*.json;nested/")
        entry = wait_for_commit(node, MODEL, "main", self.hub.commit(MODEL), timeout=60)
        wanted = ["config.json", "nested/deep/dir/weights.bin"]
        self.assertEqual(entry["files_wanted"], 2)
        self.assertEqual(entry["files_held"], 2)
        self.assertEqual(entry["bytes_held"], sum(files[p]["size"] for p in wanted))
        self.assertEqual(entry["source"], "config")
        self.assertEqual(entry["pinned"], [self.hub.commit(MODEL)])
        # No client asked: every request the Hub saw was the node's own, for the wanted files only.
        for path in wanted:
            self.assertTrue(self.resolved(path), f"{path} was not fetched")
        for path in ("model.safetensors", "README.md", "empty.txt"):
            self.assertEqual(self.resolved(path), [], f"{path} matches no pattern but was fetched")
        self.assertNotIn(files["model.safetensors"]["sha256"], self.hub.stats()["cdn_bytes"])
        samples = node.metrics()
        self.assertEqual(samples["inferllama_prefetch_entries"], 1)
        self.assertEqual(samples["inferllama_prefetch_entries_current"], 1)
        self.assertEqual(samples["inferllama_prefetch_files_wanted"], 2)
        self.assertEqual(samples["inferllama_prefetch_files_held"], 2)
        self.assertEqual(samples["inferllama_prefetch_bytes_held"], entry["bytes_held"])
        self.assertGreater(samples["inferllama_prefetch_last_run_timestamp_seconds"], 0)
        # A client now gets them from the store, without the Hub being asked for the bytes.
        before = self.hub.stats()["cdn_bytes"].get(files["nested/deep/dir/weights.bin"]["sha256"], 0)
        status, headers, body = node.request("GET", node.resolve_path(MODEL, "main", "nested/deep/dir/weights.bin"))
        self.assertEqual(status, 200)
        self.assertEqual(len(body), files["nested/deep/dir/weights.bin"]["size"])
        self.assertEqual(self.hub.stats()["cdn_bytes"].get(files["nested/deep/dir/weights.bin"]["sha256"], 0), before)
        # `ls` shows the entry from the data directory, pinned and current.
        listing = cli("ls", "--data-dir", node.data_dir).stdout
        self.assertIn(f"{MODEL}@main:*.json;nested/", listing)
        self.assertIn("current", listing)
        self.assertIn("pinned", listing)

    def test_a_moved_branch_is_fetched_at_the_next_interval_and_the_old_commit_unpinned(self):
        branch = "warm-moving"
        first = self.hub.push(MODEL, {"config.json": '{"model_type": "tiny", "version": 1}\n'}, branch=branch)
        node = self.start_node("--prefetch", f"{MODEL}@{branch}")
        wait_for_commit(node, MODEL, branch, first, timeout=60)
        pushed_at = time.monotonic()
        second = self.hub.push(MODEL, {"config.json": '{"model_type": "tiny", "version": 2}\n',
                                       "extra/adapter.bin": {"size": 1024 * 1024 + 5}}, branch=branch)
        entry = wait_for_commit(node, MODEL, branch, second, timeout=INTERVAL + 60)
        picked_up = time.monotonic() - pushed_at
        self.assertEqual(entry["files_held"], 2)
        self.assertEqual(entry["pinned"], [second])
        # The node serves the new commit to a client at once: the prefetch asked the Hub, so the node knows.
        status, headers, body = node.request("GET", node.resolve_path(MODEL, branch, "config.json"))
        self.assertEqual((status, headers.get("x-repo-commit")), (200, second))
        self.assertIn(b'"version": 2', body)
        listing = cli("ls", "--data-dir", node.data_dir).stdout
        old_line = next(line for line in listing.splitlines() if line.strip().startswith(f"@{first}"))
        new_line = next(line for line in listing.splitlines() if line.strip().startswith(f"@{second}"))
        self.assertNotIn("pinned", old_line)
        self.assertIn("pinned", new_line)
        print(f"\n  the moved branch was prefetched {picked_up:.1f}s after the push (interval {INTERVAL}s)")

    def test_entries_added_at_run_time_are_kept_across_a_restart_until_removed(self):
        node = self.start_node()
        self.assertIn("the prefetch list is empty", cli("prefetch", "list", "--data-dir", node.data_dir).stdout)
        added = cli("prefetch", "add", "datasets/acme/tiny-dataset", "--include", "*.csv", "--include", "README.md",
                    "--data-dir", node.data_dir)
        self.assertIn("prefetching datasets/acme/tiny-dataset@main", added.stdout)
        # Fetched at once, not at the next interval.
        entry = wait_until(lambda: (e := entry_of(node, "acme/tiny-dataset")) and e["current"] and e, INTERVAL,
                           "the added entry fetched")
        self.assertEqual((entry["type"], entry["source"], entry["files_held"]), ("dataset", "added", 2))
        self.assertEqual(entry["include"], ["*.csv", "README.md"])
        table = cli("prefetch", "list", "--data-dir", node.data_dir).stdout
        self.assertIn("datasets/acme/tiny-dataset@main:*.csv;README.md", table)
        self.assertIn("current", table)

        node.stop()
        self.assertIn("datasets/acme/tiny-dataset@main:*.csv;README.md",
                      cli("ls", "--data-dir", node.data_dir).stdout)
        node = self.start_node(data_dir=node.data_dir)
        entry = entry_of(node, "acme/tiny-dataset")
        self.assertIsNotNone(entry, "the added entry did not survive the restart")
        self.assertEqual(entry["include"], ["*.csv", "README.md"])

        removed = cli("prefetch", "remove", "datasets/acme/tiny-dataset", "--data-dir", node.data_dir)
        self.assertIn("removed datasets/acme/tiny-dataset@main from the prefetch list", removed.stdout)
        self.assertEqual(prefetch_list(node), [])
        again = cli("prefetch", "remove", "datasets/acme/tiny-dataset", "--data-dir", node.data_dir, check=False)
        self.assertEqual(again.returncode, 1)
        self.assertIn("not in the prefetch list", again.stderr)
        node.stop()
        node = self.start_node(data_dir=node.data_dir)
        self.assertEqual(prefetch_list(node), [])

    def test_configured_entries_are_removed_only_in_the_setting(self):
        node = self.start_node("--prefetch", f"{MODEL}:config.json")
        for args in (("remove", MODEL), ("add", MODEL, "--include", "*.bin")):
            done = cli("prefetch", *args, "--data-dir", node.data_dir, check=False)
            self.assertEqual(done.returncode, 1, args)
            self.assertIn("prefetch setting", done.stderr)
        refused = cli("prefetch", "add", f"{MODEL}", "--include", "a,b", "--data-dir", node.data_dir, check=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("HTTP 400", refused.stderr)

    def test_refresh_shows_a_force_pushed_branch_at_once(self):
        branch = "warm-refresh"
        first = self.hub.push(MODEL, {"config.json": '{"model_type": "tiny", "pushed": 1}\n'}, branch=branch)
        node = self.start_node("--ref-ttl", "1h")  # the node would remember the branch for an hour
        path = node.resolve_path(MODEL, branch, "config.json")

        def commit_seen():
            # A GET stores the file (its download is committed just after the client has every byte): the
            # node answers a stored file of a branch it remembers without asking the Hub.
            status, headers, _ = node.request("GET", path)
            self.assertEqual(status, 200)
            wait_until(lambda: node.metric("inferllama_downloads_in_flight") == 0, 30, "the download stored")
            return headers["x-repo-commit"]

        self.assertEqual(commit_seen(), first)
        second = self.hub.push(MODEL, {"config.json": '{"model_type": "tiny", "pushed": 2}\n'}, branch=branch)
        self.assertEqual(commit_seen(), first, "within ref_ttl the node answers the commit it saw")
        done = cli("refresh", f"{MODEL}@{branch}", "--data-dir", node.data_dir)
        self.assertIn(f"moved: {first} before, {second} now", done.stdout)
        self.assertEqual(commit_seen(), second)

        third = self.hub.push(MODEL, {"config.json": '{"model_type": "tiny", "pushed": 3}\n'}, branch=branch)
        done = cli("refresh", f"{MODEL}@{branch}", "--no-resolve", "--data-dir", node.data_dir)
        self.assertIn(f"(it named {second}); the next request asks the Hub", done.stdout)
        self.assertEqual(commit_seen(), third)
        status, _, body = node.request("GET", path)
        self.assertEqual(status, 200)
        self.assertIn(b'"pushed": 3', body)

        # A commit never moves; a repo the Hub does not know is its answer.
        commit = cli("refresh", f"{MODEL}@{first}", "--data-dir", node.data_dir, check=False)
        self.assertEqual(commit.returncode, 1)
        self.assertIn("names the same files forever", commit.stderr)
        missing = cli("refresh", "acme/no-such-model", "--data-dir", node.data_dir, check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("HTTP 401", missing.stderr)


if __name__ == "__main__":
    unittest.main()
