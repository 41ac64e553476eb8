"""The Python Hub client (`huggingface_hub`: the newest 2.x and 1.x, and the last 0.x release) and `transformers`, each
in a virtual environment of its own under .venv/ that `scripts/install-deps.sh --test` makes from the pinned
tests/python/requirements-*.txt, with HF_ENDPOINT at the node and the fake Hub behind it: downloads by branch,
tag and commit, datasets, subfolders, filtered snapshots, repo metadata, the client's own offline mode after a
warm-up; with hf_xet installed, plain HTTP through the node and no Xet request upstream; hf_transfer's parallel
ranges; a second snapshot of a cached commit that fetches no body; transformers' AutoConfig and AutoTokenizer.
Every run is checked against the node's access log (`--access-log -`)."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, HubAndNodeTest, access_lines, clean_env, sha256, wait_until  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "acme/tiny-model"
DATASET = "acme/tiny-dataset"
BIG = "acme/big-model"  # the fake Hub's --big-file-size repo
MIB = 1024 * 1024
# huggingface_hub 0.x hands a download to hf_transfer only above 5 chunks of 10 MiB (`http_get`); hf_transfer
# then asks for 10 MiB ranges, and the last one of a size that is no multiple of 10 MiB ends past the file
# (`bytes=START-SIZE`).
HF_TRANSFER_CHUNK = 10 * MIB
HF_TRANSFER_SIZE = 6 * HF_TRANSFER_CHUNK + 12345
BERT_BRANCH = "tiny-bert"  # a branch of MODEL holding a config and a tokenizer, pushed by the transformers test
TEXT = "The node serves models"

# Runs in the client's environment; prints one JSON object of what it got.
CLIENT_SCRIPT = r'''
import hashlib, json, os, sys
import huggingface_hub
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.utils._runtime import is_xet_available

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
# With hf_xet importable, a Xet marker reaching the client would take the download away from the node.
out = {"version": huggingface_hub.__version__, "xet": is_xet_available()}
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


# A whole snapshot by branch, then one file by branch (the client compares the node's etag with the blob it holds).
SNAPSHOT_SCRIPT = r'''
import hashlib, json, os, sys
from huggingface_hub import hf_hub_download, snapshot_download

def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

folder = snapshot_download(sys.argv[1])
files = {os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"): digest(os.path.join(root, name))
         for root, _, names in os.walk(folder) for name in names}
print(json.dumps({"files": files, "weights": digest(hf_hub_download(sys.argv[1], "model.safetensors"))}))
'''

# One file through hf_transfer (HF_HUB_ENABLE_HF_TRANSFER=1 in the environment).
HF_TRANSFER_SCRIPT = r'''
import hashlib, json, sys
from huggingface_hub import constants, hf_hub_download
digest = hashlib.sha256()
with open(hf_hub_download(sys.argv[1], "model.safetensors"), "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
print(json.dumps({"enabled": constants.HF_HUB_ENABLE_HF_TRANSFER, "sha256": digest.hexdigest()}))
'''

# Run against the fake Hub itself: the LFS file, which it offers through Xet as the Hub does.
XET_LURE_SCRIPT = r'''
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], allow_patterns=["model.safetensors"])
'''

# A tiny WordPiece tokenizer trained with the tokenizers library: its tokenizer.json and the ids it gives TEXT.
TRAIN_TOKENIZER_SCRIPT = r'''
import json, sys
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
corpus = ["the node fetches each file from the hub once", "and serves it from its own store",
          "clients point their endpoint at the node", "a pull-through cache for models"]
tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tokenizer.decoder = decoders.WordPiece()
specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials,
                                                                show_progress=False))
tokenizer.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
print(json.dumps({"tokenizer": tokenizer.to_str(), "vocab_size": tokenizer.get_vocab_size(),
                  "ids": tokenizer.encode(sys.argv[1]).ids}))
'''

# transformers' own loaders, then the bytes they left in the client's cache (read without asking the node).
TRANSFORMERS_SCRIPT = r'''
import hashlib, json, sys
from huggingface_hub import hf_hub_download
from transformers import AutoConfig, AutoTokenizer
repo, revision, text = sys.argv[1:4]
config = AutoConfig.from_pretrained(repo, revision=revision)
tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
out = {"config": type(config).__name__, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
       "tokenizer": type(tokenizer).__name__, "ids": tokenizer(text)["input_ids"], "files": {}}
for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    with open(hf_hub_download(repo, name, revision=revision, local_files_only=True), "rb") as f:
        out["files"][name] = hashlib.sha256(f.read()).hexdigest()
print(json.dumps(out))
'''

BERT_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 37, "max_position_embeddings": 64}
TOKENIZER_CONFIG = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64,
                    "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]",
                    "mask_token": "[MASK]"}
# The fake Hub's request counters of its Xet side (its xet-fileinfo answers are counted apart).
XET_REQUESTS = ("xet_read_token", "xet_cas")


@dataclass
class ClientRun:
    out: dict  # the JSON object the script printed last
    requests: list[dict]  # the node's access log entries of the run


class PythonClientTest(HubAndNodeTest):
    hub_args = ("--tree-page-size", "2",  # every listing of more than 2 entries is paginated
                "--big-file-size", str(HF_TRANSFER_SIZE))
    node_args = ("--access-log", "-")
    marks = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = cls.hub.files(MODEL)
        cls.dataset = cls.hub.files(DATASET)
        cls.commit = cls.hub.commit(MODEL)

    def home(self, name: str) -> str:
        """A fresh HF_HOME, removed after the test."""
        home = tempfile.mkdtemp(prefix=f"inferllama-{name}-")
        self.addCleanup(shutil.rmtree, home, True)
        return home

    def access_log(self) -> list[dict]:
        return access_lines(self.node.stdout_text())

    def mark(self) -> int:
        """How many lines the access log holds once every request made before this call is among them: the node
        logs a request when its answer is written, so a request of the test's own, made now, comes after them."""
        type(self).marks += 1
        agent = f"inferllama-test-mark/{self.marks}"
        status, _, _ = self.node.request("GET", "/healthz", {"User-Agent": agent})
        self.assertEqual(status, 200)
        return wait_until(lambda: next((i + 1 for i, e in enumerate(self.access_log()) if e["user_agent"] == agent),
                                       0), what=f"{agent} in the access log")

    def xet_requests(self) -> int:
        stats = self.hub.stats()
        return sum(stats["requests"][kind] for kind in XET_REQUESTS) + stats["xet_fileinfo_responses"]

    def run_python(self, venv: str, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        python = os.path.join(ROOT, ".venv", venv, "bin", "python")
        self.assertTrue(os.path.exists(python), f"{python} is missing: run scripts/install-deps.sh --test")
        return subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=300,
                              env=clean_env({"HF_HUB_DISABLE_TELEMETRY": "1", **env}))

    def run_client(self, venv: str, home: str, *args: str, script: str = CLIENT_SCRIPT, **env: str) -> ClientRun:
        """`script` with HF_ENDPOINT at the node (unless `env` says otherwise). Every run leaves the fake Hub's Xet
        side alone and asks the node nothing of Xet: hf_xet is installed, so a Xet marker that reached the client
        would send it there."""
        args = args or (MODEL, DATASET, self.commit)
        xet_before, first_line = self.xet_requests(), self.mark()
        done = self.run_python(venv, script, *args, **{"HF_ENDPOINT": self.node.url, "HF_HOME": home, **env})
        requests = self.access_log()[first_line:self.mark() - 1]
        self.assertEqual(done.returncode, 0, f"the client failed; it wrote:\n{done.stdout[-2000:]}\n"
                                             f"{done.stderr[-4000:]}")
        self.assertEqual(self.xet_requests(), xet_before, "a client went to the fake Hub's Xet side")
        self.assertEqual([e["target"] for e in requests if "xet" in e["target"].lower()], [])
        return ClientRun(json.loads(done.stdout.strip().splitlines()[-1]), requests)

    def check_client(self, venv: str, major: str):
        home = self.home(venv)
        got = self.run_client(venv, home).out
        self.assertTrue(got["version"].startswith(major), got["version"])
        self.assertTrue(got["xet"], "hf_xet is not importable: the run proves nothing about Xet")
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
        offline = self.run_client(venv, home, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9").out
        self.assertEqual(offline["offline_config"], config)
        self.assertEqual(offline["offline_snapshot"], ["README.md", "config.json"])

        seen = self.run_client(venv, home, MODEL, "hf_approved", script=METADATA_SCRIPT).out
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
        keyed = self.run_client(venv, os.path.join(home, "keyed"), MODEL, script=LARGE_FILE_SCRIPT, HF_TOKEN=key).out
        self.assertEqual(keyed["sha256"], self.model["model.safetensors"]["sha256"])
        self.assertIn(f"{user} ", cli("usage", user))

        # The command line client.
        local = os.path.join(home, "local")
        done = subprocess.run([os.path.join(ROOT, ".venv", venv, "bin", "hf"), "download", MODEL, "config.json",
                               "--local-dir", local], capture_output=True, text=True, timeout=120,
                              env=clean_env({"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                             "HF_HUB_DISABLE_TELEMETRY": "1"}))
        self.assertEqual(done.returncode, 0, f"hf download failed; it wrote:\n{done.stdout[-2000:]}\n"
                                             f"{done.stderr[-4000:]}")
        with open(os.path.join(local, "config.json"), "rb") as f:
            self.assertEqual(sha256(f.read()), config)

    def test_the_newest_2_x(self):
        self.check_client("hub2", "2.")

    def test_the_newest_1_x(self):
        self.check_client("hub1", "1.")

    def test_the_last_0_x(self):
        self.check_client("hub0", "0.")

    def check_second_snapshot(self, venv: str):
        """The client's cache holds the commit: the second run asks the node for metadata and heads, no body."""
        home = self.home(venv)
        first = self.run_client(venv, home, MODEL, script=SNAPSHOT_SCRIPT)
        served = self.served_bytes()
        second = self.run_client(venv, home, MODEL, script=SNAPSHOT_SCRIPT)
        for run in (first, second):
            self.assertEqual(run.out["files"], {path: f["sha256"] for path, f in self.model.items()})
            self.assertEqual(run.out["weights"], self.model["model.safetensors"]["sha256"])
        self.assertIn(("GET", "resolve"), {(e["method"], e["route"]) for e in first.requests})
        methods = {(e["method"], e["route"]) for e in second.requests}
        self.assertIn(("HEAD", "resolve"), methods)  # the branch download's etag check
        self.assertNotIn(("GET", "resolve"), methods, second.requests)
        self.assertEqual(self.served_bytes(), served)

    def served_bytes(self) -> float:
        return sum(v for k, v in self.node.metrics().items() if k.startswith("inferllama_served_bytes_total"))

    def test_second_snapshot_2_x(self):
        self.check_second_snapshot("hub2")

    def test_second_snapshot_1_x(self):
        self.check_second_snapshot("hub1")

    def test_second_snapshot_0_x(self):
        self.check_second_snapshot("hub0")

    def test_xet_lures_stop_at_the_node(self):
        """The fake Hub offers its LFS files through Xet as the Hub does: straight to it, each client goes to its
        Xet side (and fails: the fake Hub has no Xet storage); the node's answers carry no Xet marker, which is
        what keeps every run through the node on plain HTTP."""
        for venv in ("hub2", "hub1", "hub0"):
            with self.subTest(client=venv):
                before = self.xet_requests()
                done = self.run_python(venv, XET_LURE_SCRIPT, MODEL, HF_ENDPOINT=self.hub.url, HF_HOME=self.home(venv))
                self.assertNotEqual(done.returncode, 0, f"the fake Hub's Xet side served a download:\n"
                                                        f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
                self.assertGreater(self.xet_requests(), before, done.stderr[-4000:])
        path = self.node.resolve_path(MODEL, "main", "model.safetensors")
        hub = urllib.parse.urlsplit(self.hub.url)
        conn = http.client.HTTPConnection(hub.hostname, hub.port, timeout=30)
        try:
            conn.request("HEAD", path)
            upstream = {k.lower(): v for k, v in conn.getresponse().getheaders()}
        finally:
            conn.close()
        self.assertIn("x-xet-hash", upstream)
        self.assertIn('rel="xet-auth"', upstream["link"])
        status, headers, _ = self.node.request("HEAD", path, {"Accept": "application/vnd.xet-fileinfo+json, */*"})
        self.assertEqual(status, 200)
        self.assertEqual([name for name in headers if name.startswith("x-xet")], [])
        self.assertNotIn("xet", headers.get("link", ""))
        self.assertEqual(headers["x-linked-etag"], f'"{self.model["model.safetensors"]["sha256"]}"')

    def test_hf_transfer_0_x(self):
        """huggingface_hub 0.x with HF_HUB_ENABLE_HF_TRANSFER=1 and a file above its threshold: hf_transfer's
        `bytes=0-0` probe (the size from Content-Range), then 10 MiB ranges at once, the last ending past the file;
        against a miss, then a hit. (1.x no longer uses hf_transfer and only warns about the variable.)"""
        big = self.hub.files(BIG)["model.safetensors"]
        for cache in ("miss", "hit"):
            with self.subTest(cache=cache):
                run = self.run_client("hub0", self.home(f"hf-transfer-{cache}"), BIG, script=HF_TRANSFER_SCRIPT,
                                      HF_HUB_ENABLE_HF_TRANSFER="1")
                self.assertTrue(run.out["enabled"])
                self.assertEqual(run.out["sha256"], big["sha256"])
                ranges = [e for e in run.requests if e["method"] == "GET" and e["status"] == 206 and BIG in e["target"]]
                chunks = -(-big["size"] // HF_TRANSFER_CHUNK)
                self.assertEqual(len(ranges), 1 + chunks, run.requests)
                self.assertEqual(sum(e["bytes"] for e in ranges), 1 + big["size"])  # the probe's byte, then the file
                if cache == "miss":
                    # Before hf_transfer takes over, the client opens a plain GET (status 200), which starts the
                    # node's download; every range, the probe first, joins that download ("stream") or reads the
                    # file it stored ("hit"): none starts a download of its own ("miss").
                    self.assertLessEqual({e["cache"] for e in ranges}, {"stream", "hit"}, ranges)
                else:
                    self.assertEqual({e["cache"] for e in ranges}, {"hit"})

    def test_transformers_config_and_tokenizer(self):
        """transformers (with the newest huggingface_hub it takes) loads a config and a tokenizer through the node,
        twice: the second time nothing is fetched again, not even the optional files the repo lacks (the client
        remembers a 404 under the commit the node names in X-Repo-Commit)."""
        trained = self.run_python("transformers", TRAIN_TOKENIZER_SCRIPT, TEXT)
        self.assertEqual(trained.returncode, 0, trained.stderr[-4000:])
        tokenizer = json.loads(trained.stdout.strip().splitlines()[-1])
        self.hub.push(MODEL, {"config.json": json.dumps({**BERT_CONFIG, "vocab_size": tokenizer["vocab_size"]}),
                              "tokenizer.json": tokenizer["tokenizer"],
                              "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG)}, branch=BERT_BRANCH)
        pushed = self.hub.files(MODEL, BERT_BRANCH)
        home = self.home("transformers")
        first = self.run_client("transformers", home, MODEL, BERT_BRANCH, TEXT, script=TRANSFORMERS_SCRIPT)
        second = self.run_client("transformers", home, MODEL, BERT_BRANCH, TEXT, script=TRANSFORMERS_SCRIPT)
        for run in (first, second):
            self.assertEqual((run.out["config"], run.out["tokenizer"]), ("BertConfig", "BertTokenizer"))
            self.assertEqual((run.out["vocab_size"], run.out["hidden_size"]), (tokenizer["vocab_size"], 32))
            self.assertEqual(run.out["ids"], tokenizer["ids"])
            self.assertEqual(run.out["files"], {path: f["sha256"] for path, f in pushed.items()})
        missing = {e["target"] for e in first.requests if e["route"] == "resolve" and e["status"] == 404}
        self.assertTrue(missing, first.requests)
        again = [e for e in second.requests
                 if e["route"] == "resolve" and (e["method"] == "GET" or e["target"] in missing)]
        self.assertEqual(again, [])


if __name__ == "__main__":
    unittest.main()
