"""A hosted repo's life through the real HuggingFace JavaScript client (@huggingface/hub, pinned in
tests/js/package.json): createRepo, uploadFiles (nested paths, regular and LFS files, one large enough for the
node to ask for a multipart upload), deleteFile, listCommits, snapshotDownload into a fresh cache with byte
checks, deleteRepo — with accessToken "hf_" + the user's node key (the client refuses tokens without the prefix)
and hubUrl the node. tests/js/upload.mjs makes the calls and confines the client to the node's origin.

Needs `node` on PATH and `npm ci` done in tests/js; skipped otherwise.

Run:  cd tests/integration && python3 -m unittest -v test_hosting_js
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from accounts import HostedNodeCase  # noqa: E402

JS_DIR = os.path.join(harness.ROOT, "tests", "js")
UPLOAD_JS = os.path.join(JS_DIR, "upload.mjs")
JS_CLIENT = os.path.join(JS_DIR, "node_modules", "@huggingface", "hub", "package.json")
NODEJS = shutil.which("node")
RUN_TIMEOUT = 600
MIB = 1024 * 1024
# The client uploads in parts whenever the batch answer gives a chunk_size (it has no threshold of its own); the
# node asks for parts from 64 MiB on. This file is well above that, and no multiple of any part size.
MULTIPART_SIZE = 80 * MIB + 4321
OWNER = "carol"


class HostingJsTest(HostedNodeCase):
    users = (OWNER,)

    @classmethod
    def setUpClass(cls):
        if NODEJS is None:
            raise unittest.SkipTest("`node` (Node.js) is not on PATH")
        if not os.path.exists(JS_CLIENT):
            raise unittest.SkipTest(f"@huggingface/hub is not installed: run `npm ci` in {JS_DIR}")
        super().setUpClass()
        cls.key = cls.keys[OWNER]

    def js_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE_", "INFERLLAMA_")) and k != "NODE_OPTIONS"}
        env["HF_HOME"] = os.path.join(self.tmp, "hf-home")  # never the user's real cache
        return env

    def run_upload(self, repo: str, files_dir: str, delete: str, token: str) -> dict:
        cache_dir = tempfile.mkdtemp(prefix="cache-", dir=self.tmp)
        cmd = [NODEJS, UPLOAD_JS, "--endpoint", self.node.url, "--token", token, "--repo", repo,
               "--files", files_dir, "--delete", delete, "--cache-dir", cache_dir]
        proc = subprocess.run(cmd, cwd=JS_DIR, env=self.js_env(), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, f"upload.mjs exited {proc.returncode}; stdout:\n{proc.stdout[-3000:]}\n"
                                        f"stderr:\n{proc.stderr[-4000:]}")
        out = json.loads(lines[0])
        if out["failed"] is not None or proc.returncode != 0:
            requests = "\n".join(f"  {r['method']} {r['url']} -> {r['status']}" for r in out["requests"][-40:])
            self.fail(f"upload.mjs failed (exit {proc.returncode}) at {json.dumps(out['failed'], indent=1)}\n"
                      f"last requests:\n{requests}\nstderr:\n{proc.stderr[-3000:]}")
        return out

    def test_a_hosted_repos_life(self):
        repo = f"{OWNER}/js-model"
        files_dir = os.path.join(self.tmp, "files")
        files = {"config.json": b'{"model_type": "bert"}\n',
                 "README.md": b"---\nlicense: mit\n---\n# From JS\n",
                 "nested/deep/notes.txt": b"nested notes\n",
                 "to-delete.txt": b"short-lived\n",
                 "model.safetensors": os.urandom(2 * MIB),           # LFS by the default .gitattributes
                 "nested/blob.dat": b"\x00\x01binary" + os.urandom(3000),  # LFS: binary
                 "big/weights.bin": None}                           # LFS, multipart
        digests = {}
        for path, data in files.items():
            full = os.path.join(files_dir, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                if data is None:
                    block, h = os.urandom(MIB), hashlib.sha256()
                    for i in range(MULTIPART_SIZE // MIB):
                        chunk = i.to_bytes(8, "big") + block[8:]
                        f.write(chunk)
                        h.update(chunk)
                    tail = block[:MULTIPART_SIZE % MIB]
                    f.write(tail)
                    h.update(tail)
                    digests[path] = h.hexdigest()
                else:
                    f.write(data)
                    digests[path] = hashlib.sha256(data).hexdigest()
        self.assertEqual(os.path.getsize(os.path.join(files_dir, "big/weights.bin")), MULTIPART_SIZE)

        out = self.run_upload(repo, files_dir, "to-delete.txt", "hf_" + self.key)
        steps, requests = out["steps"], out["requests"]

        self.assertEqual(steps["createRepo"]["repoUrl"], f"{self.node.url}/{repo}")
        self.assertTrue(steps["createRepo"]["id"])
        self.assertEqual(steps["createRepoAgain"]["status"], 409, steps["createRepoAgain"])

        uploaded = steps["uploadFiles"]
        self.assertEqual(sorted(uploaded["files"]), sorted(files))
        self.assertRegex(uploaded["commit"]["oid"], r"^[0-9a-f]{40}$")
        self.assertTrue(uploaded["commit"]["url"].startswith(f"{self.node.url}/{repo}/commit/"), uploaded)
        deleted = steps["deleteFile"]["commit"]
        self.assertRegex(deleted["oid"], r"^[0-9a-f]{40}$")

        commits = steps["listCommits"]
        self.assertEqual([(c["oid"], c["title"]) for c in commits[:2]],
                         [(deleted["oid"], "Delete to-delete.txt"), (uploaded["commit"]["oid"], f"Add {len(files)} files")])
        self.assertEqual([a["username"] for a in commits[0]["authors"]], [OWNER])

        expected = {p: d for p, d in digests.items() if p != "to-delete.txt"}
        got = {p: d for p, d in steps["snapshotDownload"]["files"].items() if p != ".gitattributes"}
        self.assertEqual(sorted(got), sorted(expected))
        for path, digest in expected.items():
            self.assertEqual(got[path], digest, f"{path} differs in the snapshot")
        self.assertEqual(os.path.basename(steps["snapshotDownload"]["snapshot"]), deleted["oid"])

        # The big file went in parts: several PUTs (5 at a time) of part-sized bodies adding up to it, then the
        # completion POST, all to the node's signed upload URLs; the small LFS files in one PUT each.
        puts = [r for r in requests if r["method"] == "PUT"]
        parts = list(puts)
        for path in ("model.safetensors", "nested/blob.dat"):
            whole = next((r for r in parts if r["bytes"] == len(files[path])), None)
            self.assertIsNotNone(whole, f"no PUT of {path}'s {len(files[path])} bytes: {puts}")
            parts.remove(whole)
        self.assertGreaterEqual(len(parts), 2, f"no multipart upload: {puts}")
        self.assertEqual(sum(r["bytes"] for r in parts), MULTIPART_SIZE, parts)
        self.assertEqual({r["status"] for r in puts}, {200}, puts)
        for r in puts:
            self.assertTrue(r["url"].startswith("/api/inferllama/lfs/"), r)
        completions = [r for r in requests if r["method"] == "POST" and r["url"].startswith("/api/inferllama/lfs/")]
        self.assertEqual([r["status"] for r in completions], [200], completions)
        self.assertEqual([r for r in requests if "xet" in r["url"].lower()], [])
        batch = [r for r in requests if r["url"].endswith(f"/{repo}.git/info/lfs/objects/batch")]
        self.assertEqual([r["status"] for r in batch], [200])
        commit_posts = [r for r in requests if r["method"] == "POST" and re.search(r"/commit/main$", r["url"])]
        self.assertEqual([r["status"] for r in commit_posts], [200, 200])

        self.assertEqual(steps["deleteRepo"], {"deleted": True})
        self.assertIs(steps["repoExistsAfterDelete"], False)

    def test_a_token_without_the_hf_prefix_is_refused_by_the_client_itself(self):
        """Why the node takes "hf_" + key: the client does not send a token of any other shape."""
        files_dir = os.path.join(self.tmp, "one-file")
        os.makedirs(files_dir, exist_ok=True)
        with open(os.path.join(files_dir, "a.txt"), "wb") as f:
            f.write(b"a\n")
        cache_dir = tempfile.mkdtemp(prefix="cache-", dir=self.tmp)
        proc = subprocess.run([NODEJS, UPLOAD_JS, "--endpoint", self.node.url, "--token", self.key, "--repo",
                               f"{OWNER}/never", "--files", files_dir, "--delete", "a.txt", "--cache-dir", cache_dir],
                              cwd=JS_DIR, env=self.js_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
        self.assertNotEqual(proc.returncode, 0)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertEqual(out["failed"]["step"], "createRepo")
        self.assertIn("must start with 'hf_'", out["failed"]["message"])
        self.assertEqual(out["requests"], [])


if __name__ == "__main__":
    unittest.main()
