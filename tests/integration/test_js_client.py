"""The real HuggingFace JavaScript client (@huggingface/hub, pinned in tests/js/package.json) against
the real node in front of the fake Hub: `snapshotDownload` with `hubUrl` = the node.

Needs `node` on PATH and `npm ci` done in tests/js; skipped otherwise. tests/js/snapshot.mjs confines
the client to the node's origin (a redirect to, or a Xet request for, any other host fails the run).

Run:  cd tests/integration && python3 -m unittest -v test_js_client
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FakeHub, Node  # noqa: E402

JS_DIR = os.path.join(harness.ROOT, "tests", "js")
SNAPSHOT_JS = os.path.join(JS_DIR, "snapshot.mjs")
JS_CLIENT = os.path.join(JS_DIR, "node_modules", "@huggingface", "hub", "package.json")
NODEJS = shutil.which("node")
RUN_TIMEOUT = 300

MODEL, DATASET, GATED = "acme/tiny-model", "acme/tiny-dataset", "acme/gated-model"
# Requests the fake Hub must not see when a client re-downloads a public repo's cached commit.
NO_REFETCH_KINDS = ("api_tree", "api_paths_info", "resolve_head", "resolve_get", "cdn_get")


class SnapshotResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.data = None
        if self.code == 0:
            lines = [line for line in self.stdout.splitlines() if line.strip()]
            if len(lines) != 1:
                raise AssertionError(f"snapshot.mjs printed {len(lines)} lines on stdout, expected 1:\n"
                                     f"{self.stdout}\nstderr:\n{self.stderr}")
            self.data = json.loads(lines[0])

    def describe(self) -> str:
        return f"exit code {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class JsClientTest(unittest.TestCase):
    hub: FakeHub
    node: Node

    @classmethod
    def setUpClass(cls):
        if NODEJS is None:
            raise unittest.SkipTest("`node` (Node.js) is not on PATH")
        if not os.path.exists(JS_CLIENT):
            raise unittest.SkipTest(f"@huggingface/hub is not installed: run `npm ci` in {JS_DIR}")
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-js-")
        cls.hub = FakeHub("--data-dir", os.path.join(cls.tmp, "fake-hub"))
        cls.node = None
        try:
            cls.hub.start()
            cls.node = Node(cls.hub.url).start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.node is not None:
            cls.node.stop()
            cls.node.cleanup()
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def snapshot(self, repo: str, repo_type: str = "model", token: str | None = None) -> tuple[SnapshotResult, str]:
        """Runs snapshot.mjs against the node into a fresh cache dir: (result, cache dir)."""
        cache_dir = tempfile.mkdtemp(prefix="cache-", dir=self.tmp)
        cmd = [NODEJS, SNAPSHOT_JS, "--endpoint", self.node.url, "--repo", repo, "--type", repo_type,
               "--cache-dir", cache_dir]
        if token is not None:
            cmd += ["--token", token]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE_", "INFERLLAMA_")) and k != "NODE_OPTIONS"}
        env["HF_HOME"] = os.path.join(self.tmp, "hf-home")  # never the user's real cache
        proc = subprocess.run(cmd, cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        return SnapshotResult(proc), cache_dir

    def assert_snapshot_ok(self, result: SnapshotResult, repo: str) -> None:
        """The client succeeded and its snapshot holds exactly the fake Hub's files at main, byte for byte."""
        self.assertEqual(result.code, 0, f"snapshotDownload of {repo} failed: {result.describe()}")
        expected = {path: f["sha256"] for path, f in self.hub.files(repo).items()}
        got = result.data["files"]
        self.assertEqual(sorted(got), sorted(expected), f"file set of the {repo} snapshot differs")
        for path, digest in expected.items():
            self.assertEqual(got[path], digest, f"{repo}: content of {path!r} differs")
        self.assertEqual(os.path.basename(result.data["snapshot"]), self.hub.commit(repo),
                         "the snapshot folder is not named after main's commit")

    def assert_no_xet(self, stats: dict) -> None:
        req = stats["requests"]
        self.assertEqual((req["xet_read_token"], req["xet_cas"]), (0, 0),
                         f"Xet traffic reached the fake Hub: {stats}")

    def assert_refused(self, result: SnapshotResult, repo: str, cache_dir: str, what: str) -> None:
        """The client failed with an HTTP 401/403 and no content of `repo` landed in its cache."""
        self.assertNotEqual(result.code, 0, f"{what}: snapshotDownload of {repo} succeeded: {result.describe()}")
        self.assertRegex(result.stderr, r"\(HTTP 40[13]\)",
                         f"{what}: expected the client to fail on a 401/403, got: {result.describe()}")
        secret = {f["sha256"] for f in self.hub.files(repo).values() if f["size"] > 0}
        for dirpath, _, names in os.walk(cache_dir):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                self.assertNotIn(digest, secret, f"{what}: content of {repo} reached the client "
                                 f"({os.path.join(dirpath, name)})")

    # -- tests --------------------------------------------------------------

    def test_model_snapshot(self):
        self.hub.reset()
        result, _ = self.snapshot(MODEL)
        self.assert_snapshot_ok(result, MODEL)
        # The fixture's awkward names really were part of it.
        for path in ("empty.txt", "nested/deep/dir/weights.bin", "with space/naïve – file.txt"):
            self.assertIn(path, result.data["files"])
        self.assert_no_xet(self.hub.stats())

    def test_dataset_snapshot(self):
        self.hub.reset()
        result, _ = self.snapshot(DATASET, "dataset")
        self.assert_snapshot_ok(result, DATASET)
        self.assert_no_xet(self.hub.stats())

    def test_second_snapshot_is_served_from_the_node(self):
        first, _ = self.snapshot(MODEL)
        self.assert_snapshot_ok(first, MODEL)
        self.hub.reset()
        second, _ = self.snapshot(MODEL)  # fresh cache dir: the client downloads everything again
        self.assert_snapshot_ok(second, MODEL)
        self.assertEqual(second.data["files"], first.data["files"])
        stats = self.hub.stats()
        req = stats["requests"]
        metadata = {k: v for k, v in req.items() if k.startswith("api_") and v}
        print(f"\n[js client] second snapshot of {MODEL}: upstream requests {req}, "
              f"metadata (api_*) calls {metadata}", file=sys.stderr)
        self.assert_no_xet(stats)
        self.assertEqual({k: req[k] for k in NO_REFETCH_KINDS}, dict.fromkeys(NO_REFETCH_KINDS, 0),
                         f"re-downloading a cached commit reached the fake Hub: {stats}")

    def test_gated_model(self):
        files = self.hub.files(GATED)
        self.assertTrue(any(f["lfs"] for f in files.values()))
        result, cache = self.snapshot(GATED)
        self.assert_refused(result, GATED, cache, "anonymous, before any approved download")

        self.hub.reset()
        result, _ = self.snapshot(GATED, token="hf_approved")
        self.assert_snapshot_ok(result, GATED)
        self.assert_no_xet(self.hub.stats())

        # Now that the node holds the content, it must still refuse those without access.
        result, cache = self.snapshot(GATED, token="hf_unapproved")
        self.assert_refused(result, GATED, cache, "hf_unapproved, after an approved download")
        result, cache = self.snapshot(GATED)
        self.assert_refused(result, GATED, cache, "anonymous, after an approved download")


if __name__ == "__main__":
    unittest.main()
