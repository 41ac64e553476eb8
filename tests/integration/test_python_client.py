"""The Python Hub client (`huggingface_hub`, the newest 1.x and the last 0.x release, each in its own
virtual environment under .venv/ that `scripts/install-deps.sh --test` makes) with HF_ENDPOINT at the node
and the fake Hub behind it: downloads by branch, tag and commit, datasets, subfolders, filtered snapshots,
repo metadata, and the client's own offline mode after a warm-up."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, HubAndNodeTest, clean_env, sha256  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "acme/tiny-model"
DATASET = "acme/tiny-dataset"

# Runs in the client's environment; prints one JSON object of what it got.
CLIENT_SCRIPT = r'''
import hashlib, json, os, sys
import huggingface_hub
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                  for root, _, names in os.walk(folder) for name in names)

model, dataset, commit = sys.argv[1], sys.argv[2], sys.argv[3]
# Snapshots in caches of their own: a snapshot folder also holds the files fetched one by one before.
allowed_cache = os.path.join(os.environ["HF_HOME"], "allowed")
ignored_cache = os.path.join(os.environ["HF_HOME"], "ignored")
out = {"version": huggingface_hub.__version__}
if os.environ.get("HF_HUB_OFFLINE") == "1":
    out["offline_config"] = digest(hf_hub_download(model, "config.json"))
    out["offline_snapshot"] = files_under(snapshot_download(model, allow_patterns=["*.json", "*.md"],
                                                            cache_dir=allowed_cache))
    print(json.dumps(out))
    sys.exit(0)
out["config"] = digest(hf_hub_download(model, "config.json"))
out["config_at_tag"] = digest(hf_hub_download(model, "config.json", revision="v1.0"))
out["config_at_commit"] = digest(hf_hub_download(model, "config.json", revision=commit))
out["config_at_pr"] = digest(hf_hub_download(model, "config.json", revision="refs/pr/1"))
out["weights"] = digest(hf_hub_download(model, "weights.bin", subfolder="nested/deep/dir"))
out["dataset_readme"] = digest(hf_hub_download(dataset, "README.md", repo_type="dataset"))
out["allowed"] = files_under(snapshot_download(model, allow_patterns=["*.json", "*.md"], cache_dir=allowed_cache))
out["ignored"] = files_under(snapshot_download(model, ignore_patterns=["*.safetensors", "nested/*"],
                                               revision="v1.0", cache_dir=ignored_cache))
api = HfApi()
info = api.model_info(model)
out["sha"] = info.sha
out["siblings"] = sorted(s.rfilename for s in info.siblings)
out["repo_files"] = sorted(api.list_repo_files(model))
print(json.dumps(out))
'''


# One LFS file, as the client fetches it.
LARGE_FILE_SCRIPT = r'''
import hashlib, json, sys
from huggingface_hub import hf_hub_download
path = hf_hub_download(sys.argv[1], "model.safetensors")
print(json.dumps({"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}))
'''

# Repo metadata, files as a file system, gated repos: one JSON object of what the client saw.
METADATA_SCRIPT = r'''
import json, sys
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.utils import GatedRepoError

model, approved = sys.argv[1], sys.argv[2]
api = HfApi()
out = {}
out["tree"] = sorted(e.path for e in api.list_repo_tree(model, recursive=True) if hasattr(e, "blob_id"))
out["paths_info"] = sorted(e.path for e in api.get_paths_info(model, ["config.json", "nested"]))
refs = api.list_repo_refs(model)
out["branches"] = sorted(b.name for b in refs.branches)
out["tags"] = sorted(t.name for t in refs.tags)
fs = HfFileSystem()
with fs.open(f"{model}/config.json", "rb") as f:
    f.seek(5)
    out["range"] = f.read(10).hex()
out["ls"] = sorted(p.split("/", 2)[2] for p in fs.ls(model, detail=False))
out["glob"] = sorted(p.split("/", 2)[2] for p in fs.glob(f"{model}/**/*.bin"))
try:
    hf_hub_download("acme/gated-model", "config.json")
    out["gated_anonymous"] = "downloaded"
except GatedRepoError:
    out["gated_anonymous"] = "GatedRepoError"
out["gated_approved"] = len(open(hf_hub_download("acme/gated-model", "config.json", token=approved), "rb").read())
print(json.dumps(out))
'''


class PythonClientTest(HubAndNodeTest):
    hub_args = ("--tree-page-size", "2")  # every listing of more than 2 entries is paginated

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = cls.hub.files(MODEL)
        cls.dataset = cls.hub.files(DATASET)
        cls.commit = cls.hub.commit(MODEL)

    def run_client(self, venv: str, home: str, *args: str, script: str = CLIENT_SCRIPT, **env: str) -> dict:
        python = os.path.join(ROOT, ".venv", venv, "bin", "python")
        self.assertTrue(os.path.exists(python), f"{python} is missing: run scripts/install-deps.sh --test")
        args = args or (MODEL, DATASET, self.commit)
        done = subprocess.run([python, "-c", script, *args], capture_output=True,
                              text=True, timeout=300,
                              env=clean_env({"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                             "HF_HUB_DISABLE_TELEMETRY": "1", **env}))
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    def check_client(self, venv: str, major: str):
        home = tempfile.mkdtemp(prefix=f"inferllama-{venv}-")
        try:
            got = self.run_client(venv, home)
            self.assertTrue(got["version"].startswith(major), got["version"])
            config = self.model["config.json"]["sha256"]
            self.assertEqual(got["config"], config)
            self.assertEqual(got["config_at_tag"], config)
            self.assertEqual(got["config_at_commit"], config)
            self.assertNotEqual(got["config_at_pr"], config)  # the PR's bigger config
            self.assertEqual(got["weights"], self.model["nested/deep/dir/weights.bin"]["sha256"])
            self.assertEqual(got["dataset_readme"], self.dataset["README.md"]["sha256"])
            self.assertEqual(got["allowed"], ["README.md", "config.json"])
            self.assertEqual(got["ignored"], sorted(p for p in self.model
                                                    if not p.endswith(".safetensors") and not p.startswith("nested/")))
            self.assertEqual(got["sha"], self.commit)
            self.assertEqual(got["siblings"], sorted(self.model))
            self.assertEqual(got["repo_files"], sorted(self.model))
            # The client's own cache answers with the node out of reach.
            offline = self.run_client(venv, home, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
            self.assertEqual(offline["offline_config"], config)
            self.assertEqual(offline["offline_snapshot"], ["README.md", "config.json"])

            seen = self.run_client(venv, home, MODEL, "hf_approved", script=METADATA_SCRIPT)
            self.assertEqual(seen["tree"], sorted(self.model))
            self.assertEqual(seen["paths_info"], ["config.json", "nested"])
            self.assertIn("main", seen["branches"])
            self.assertEqual(seen["tags"], ["v1.0"])
            status, _, body = self.node.request("GET", self.node.resolve_path(MODEL, "main", "config.json"))
            self.assertEqual((status, seen["range"]), (200, body[5:15].hex()))
            self.assertEqual(seen["ls"], sorted({p.split("/")[0] for p in self.model}))
            self.assertEqual(seen["glob"], ["nested/deep/dir/weights.bin"])
            self.assertEqual(seen["gated_anonymous"], "GatedRepoError")
            self.assertGreater(seen["gated_approved"], 0)

            # A node key as HF_TOKEN: the node knows the user, and the Hub never sees the key.
            def cli(*args):
                done = subprocess.run([BINARY, *args, "--data-dir", self.node.data_dir], capture_output=True,
                                      text=True, timeout=60, env=clean_env())
                self.assertEqual(done.returncode, 0, done.stderr)
                return done.stdout
            user = f"py{venv}"
            cli("user", "add", user)
            key = next(line for line in cli("key", "create", user).splitlines() if line.startswith("il_"))
            keyed = self.run_client(venv, os.path.join(home, "keyed"), MODEL, script=LARGE_FILE_SCRIPT, HF_TOKEN=key)
            self.assertEqual(keyed["sha256"], self.model["model.safetensors"]["sha256"])
            self.assertIn(f"{user} ", cli("usage", user))

            # The command line client.
            local = os.path.join(home, "local")
            done = subprocess.run([os.path.join(ROOT, ".venv", venv, "bin", "hf"), "download", MODEL, "config.json",
                                   "--local-dir", local], capture_output=True, text=True, timeout=120,
                                  env=clean_env({"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                                 "HF_HUB_DISABLE_TELEMETRY": "1"}))
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            self.assertEqual(sha256(open(os.path.join(local, "config.json"), "rb").read()), config)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def test_the_newest_1_x(self):
        self.check_client("hub1", "1.")

    def test_the_last_0_x(self):
        self.check_client("hub0", "0.")


if __name__ == "__main__":
    unittest.main()
