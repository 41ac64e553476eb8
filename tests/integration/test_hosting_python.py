"""Hosted repos through the real Python Hub client: `huggingface_hub` 1.x (.venv/hub1, with HF_HUB_DISABLE_XET=1)
and the last 0.x (.venv/hub0) create, fill, change, hide and delete repos in a node user's own namespace, with the
user's node key as HF_TOKEN, and download what they made back into fresh caches, byte for byte.

Every client call runs in the venv's python (DRIVER below, one subprocess per group of calls, the calls' results
printed as JSON); the assertions are here, checked against the node's access log (`--access-log -`) where the
requests matter. One node per class; the 1,000-file and the 300 MiB uploads have a test each (they are slow).

Run:  cd tests/integration && python3 -m unittest -v test_hosting_python
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import HostedNodeCase  # noqa: E402
from harness import access_lines, clean_env, wait_until  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MIB = 1024 * 1024
BIG_SIZE = 300 * MIB + 12345  # a multipart LFS upload whose last part is short
PR_URL = re.compile(r".*/discussions/(\d+)$")
# A request of the Xet protocol: a token, or the CAS's routes.
XET_REQUEST = re.compile(r"/xet-(read|write)-token|/v1/(xorbs|xorb-grants|shards|chunks)/")

# Runs in the client's environment: reads a JSON list of calls on stdin, makes them in order with HfApi (the token
# of each call, else HF_TOKEN) and prints one JSON object: the client's version and each call's result, or its
# error (class names, HTTP status, X-Error-Code, message). The first error stops the run unless the call says
# "may_fail". File contents: {"text": s}, {"b64": s} or {"path": absolute path}.
DRIVER = r'''
import base64, hashlib, json, os, sys
import huggingface_hub
from huggingface_hub import (CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, HfApi, hf_hub_download,
                             snapshot_download)
from huggingface_hub.utils._runtime import is_xet_available

def content(spec):
    if "text" in spec:
        return spec["text"].encode()
    if "b64" in spec:
        return base64.b64decode(spec["b64"])
    return spec["path"]

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def commit_info(info):
    return {"oid": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url,
            "pr_revision": info.pr_revision, "pr_num": info.pr_num}

def operation(spec):
    if "add" in spec:
        return CommitOperationAdd(path_in_repo=spec["add"], path_or_fileobj=content(spec))
    if "delete" in spec:
        return CommitOperationDelete(path_in_repo=spec["delete"], is_folder=spec.get("is_folder", "auto"))
    return CommitOperationCopy(src_path_in_repo=spec["copy"], path_in_repo=spec["to"])

def cache(call):
    return os.path.join(os.environ["HF_HOME"], call.get("cache", "cache"))

def run(call):
    kind, token = call["call"], call.get("token")
    api = HfApi(token=token) if token is not None else HfApi()
    repo = call.get("repo_id")
    if kind == "create_repo":
        url = api.create_repo(repo, exist_ok=call.get("exist_ok", False), private=call.get("private"))
        return {"url": str(url), "repo_id": url.repo_id, "repo_type": url.repo_type}
    if kind == "delete_repo":
        return api.delete_repo(repo, missing_ok=call.get("missing_ok", False))
    if kind == "upload_file":
        return commit_info(api.upload_file(path_or_fileobj=content(call), path_in_repo=call["path_in_repo"],
                                           repo_id=repo, create_pr=call.get("create_pr"),
                                           commit_message=call.get("message")))
    if kind == "upload_folder":
        return commit_info(api.upload_folder(repo_id=repo, folder_path=call["folder"],
                                             path_in_repo=call.get("path_in_repo"),
                                             delete_patterns=call.get("delete_patterns"),
                                             create_pr=call.get("create_pr"), commit_message=call.get("message")))
    if kind == "create_commit":
        return commit_info(api.create_commit(repo, [operation(op) for op in call["operations"]],
                                             commit_message=call["message"], create_pr=call.get("create_pr")))
    if kind == "delete_file":
        return commit_info(api.delete_file(call["path_in_repo"], repo, commit_message=call.get("message")))
    if kind == "update_repo_settings":
        return api.update_repo_settings(repo, private=call["private"])
    if kind == "model_info":
        info = api.model_info(repo, revision=call.get("revision"))
        return {"sha": info.sha, "private": info.private,
                "siblings": sorted(s.rfilename for s in info.siblings or [])}
    if kind == "list_repo_files":
        return sorted(api.list_repo_files(repo, revision=call.get("revision")))
    if kind == "list_repo_tree":
        return sorted(({"path": e.path, "type": "file" if hasattr(e, "blob_id") else "folder",
                        "size": getattr(e, "size", None),
                        "lfs": e.lfs.sha256 if getattr(e, "lfs", None) else None}
                       for e in api.list_repo_tree(repo, revision=call.get("revision"),
                                                   recursive=call.get("recursive", False))),
                      key=lambda e: e["path"])
    if kind == "list_repo_commits":
        return [{"id": c.commit_id, "title": c.title, "message": c.message, "authors": c.authors,
                 "created_at": c.created_at.isoformat()} for c in api.list_repo_commits(repo, revision=call.get("revision"))]
    if kind == "list_repo_refs":
        refs = api.list_repo_refs(repo, include_pull_requests=True)
        return {"branches": {b.name: b.target_commit for b in refs.branches},
                "pull_requests": {p.ref: p.target_commit for p in refs.pull_requests or []}}
    if kind == "snapshot_download":
        folder = snapshot_download(repo, revision=call.get("revision"), cache_dir=cache(call), token=token)
        files = {os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"): digest(os.path.join(root, name))
                 for root, _, names in os.walk(folder) for name in names}
        return {"commit": os.path.basename(folder), "files": files}
    if kind == "hf_hub_download":
        return digest(hf_hub_download(repo, call["filename"], revision=call.get("revision"), cache_dir=cache(call),
                                      token=token))
    raise ValueError(f"unknown call {kind}")

def failure(e):
    # The HTTP error may be the cause of the one raised (e.g. "Error while uploading 'x' to the Hub.").
    chain, seen = [], e
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    response = next((getattr(c, "response", None) for c in chain if getattr(c, "response", None) is not None), None)
    return {"error": type(e).__name__, "classes": [c.__name__ for c in type(e).__mro__],
            "status": getattr(response, "status_code", None),
            "error_code": response.headers.get("X-Error-Code") if response is not None else None,
            "message": "\n  caused by: ".join(f"{type(c).__name__}: {c}" for c in chain)[:4000]}

calls = json.load(sys.stdin)
results = []
for call in calls:
    try:
        results.append({"value": run(call)})
    except Exception as e:
        results.append(failure(e))
        if not call.get("may_fail"):
            break
print(json.dumps({"version": huggingface_hub.__version__, "xet": is_xet_available(), "results": results}))
'''


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def write(folder: str, files: dict[str, bytes]) -> dict[str, str]:
    """Writes `files` (path -> bytes) under `folder`; path -> sha256."""
    for path, data in files.items():
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    return {path: sha256_bytes(data) for path, data in files.items()}


class HostingTests:
    """The tests, for a client in `venv` run with `client_env`; the concrete classes below say which."""

    venv = ""
    client_env: dict[str, str] = {}
    marks = 0

    # The shared fake Hub and node (accounts.HostedNodeCase), with its access log to read the requests.
    node_args = ("--access-log", "-")
    owner, other = "alice", "bob"

    # -- helpers ------------------------------------------------------------

    def folder(self, name: str) -> str:
        path = tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def access_log(self) -> list[dict]:
        return access_lines(self.node.stdout_text())

    def mark(self) -> int:
        """How many lines the access log holds once every request made before this call is among them (as in
        test_python_client: the node logs a request when its answer is written)."""
        type(self).marks += 1
        agent = f"inferllama-test-mark/{self.venv}/{self.marks}"
        status, _, _ = self.node.request("GET", "/healthz", {"User-Agent": agent})
        self.assertEqual(status, 200)
        return wait_until(lambda: next((i + 1 for i, e in enumerate(self.access_log()) if e["user_agent"] == agent),
                                       0), what=f"{agent} in the access log")

    def run_python(self, venv: str, script: str, *args: str, stdin: str = "", timeout: float = 300,
                   **env: str) -> subprocess.CompletedProcess:
        python = os.path.join(ROOT, ".venv", venv, "bin", "python")
        self.assertTrue(os.path.exists(python), f"{python} is missing: run scripts/install-deps.sh --test")
        # No HF_* variable of the caller's (HF_HUB_DISABLE_XET above all) decides what the client does.
        base = {k: v for k, v in clean_env().items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        return subprocess.run([python, "-c", script, *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env={**base, "HF_HUB_DISABLE_TELEMETRY": "1",
                                                    "HF_HUB_DISABLE_PROGRESS_BARS": "1", **env})

    def calls(self, *calls: dict, token: str | None = None, env: dict | None = None,
              timeout: float = 300) -> tuple[dict, list[dict]]:
        """Makes `calls` in one run of DRIVER as the owner (or with `token`), with this class's client
        environment (or `env`): (its JSON output, the node's access log entries of the run)."""
        home = self.folder("hf-home")
        first_line = self.mark()
        done = self.run_python(self.venv, DRIVER, stdin=json.dumps(list(calls)), timeout=timeout,
                               **{"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                  "HF_TOKEN": token or self.keys[self.owner],
                                  **(self.client_env if env is None else env)})
        requests = self.access_log()[first_line:self.mark() - 1]
        self.assertEqual(done.returncode, 0, f"the client driver crashed; it wrote:\n{done.stdout[-2000:]}\n"
                                             f"{done.stderr[-4000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertTrue(out["version"].startswith(self.venv[-1] + "."), out["version"])
        out["stderr"] = done.stderr[-4000:]
        return out, requests

    def ok(self, *calls: dict, **kwargs) -> list:
        """`calls` all succeed: their values."""
        out, _ = self.calls(*calls, **kwargs)
        return self.values(out, len(calls))

    def values(self, out: dict, count: int) -> list:
        for i, result in enumerate(out["results"]):
            self.assertNotIn("error", result, f"call {i} failed: {json.dumps(result, indent=1)}\n{out['stderr']}")
        self.assertEqual(len(out["results"]), count)
        return [r["value"] for r in out["results"]]

    def refused(self, result: dict, error: str, status: int | None = None) -> None:
        """`result` is a failure whose exception is (or derives from) `error`, with HTTP `status` if given."""
        self.assertIn("error", result, f"expected {error}, the call succeeded: {result}")
        self.assertIn(error, result["classes"], result)
        if status is not None:
            self.assertEqual(result["status"], status, result)

    def repo(self, name: str) -> str:
        return f"{self.owner}/{name}-{self.venv}"

    def check_snapshot(self, repo: str, expected: dict[str, str], revision: str | None = None,
                       token: str | None = None) -> dict:
        """A snapshot of `repo` into a fresh cache holds exactly `expected` (path -> sha256), besides a
        .gitattributes the node may keep; each file again through hf_hub_download, into another fresh cache."""
        snapshot, *singles = self.ok({"call": "snapshot_download", "repo_id": repo, "revision": revision},
                                     *({"call": "hf_hub_download", "repo_id": repo, "filename": path,
                                        "revision": revision, "cache": "single"} for path in sorted(expected)),
                                     token=token)
        files = {p: d for p, d in snapshot["files"].items() if p != ".gitattributes"}
        self.assertEqual(sorted(files), sorted(expected))
        for path, digest in expected.items():
            self.assertEqual(files[path], digest, f"{repo}: {path} differs in the snapshot")
        self.assertEqual(dict(zip(sorted(expected), singles)), {p: expected[p] for p in sorted(expected)})
        return snapshot

    def own_files(self, files: list[str]) -> list[str]:
        return sorted(f for f in files if f != ".gitattributes")

    # -- tests --------------------------------------------------------------

    def test_create_repo_again_with_and_without_exist_ok(self):
        repo = self.repo("create")
        out, _ = self.calls({"call": "create_repo", "repo_id": repo},
                            {"call": "create_repo", "repo_id": repo, "exist_ok": True},
                            {"call": "create_repo", "repo_id": repo, "may_fail": True},
                            {"call": "model_info", "repo_id": repo})
        created, again, conflict, info = out["results"]
        for answer in (created, again):
            self.assertEqual(answer["value"], {"url": f"{self.node.url}/{repo}", "repo_id": repo, "repo_type": "model"})
        self.refused(conflict, "HfHubHTTPError", 409)
        self.assertEqual(info["value"]["private"], False)
        self.assertRegex(info["value"]["sha"], r"^[0-9a-f]{40}$")
        # Another user's namespace is not theirs to create in.
        out, _ = self.calls({"call": "create_repo", "repo_id": f"{self.owner}/not-bobs-{self.venv}", "may_fail": True},
                            token=self.keys[self.other])
        self.assertIn("error", out["results"][0], out)
        self.assertIn(out["results"][0]["status"], (401, 403), out)

    def test_upload_file_regular_and_lfs(self):
        repo = self.repo("files")
        folder = self.folder("files")
        files = {"config.json": b'{"model_type": "bert"}\n',
                 "model.safetensors": os.urandom(3 * MIB),   # LFS by the default .gitattributes
                 "blob.dat": b"\x00binary" + os.urandom(2000),  # LFS: a NUL in the first 512 bytes
                 "notes/big.txt": b"line of text\n" * 800_000,  # LFS by size: 10,400,000 bytes
                 "notes/small.txt": b"small text\n"}
        digests = write(folder, files)
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_file", "repo_id": repo, "path_in_repo": "config.json",
                                    "text": files["config.json"].decode()},
                                   *({"call": "upload_file", "repo_id": repo, "path_in_repo": path,
                                      "path": os.path.join(folder, path)} for path in sorted(files)
                                     if path != "config.json"),
                                   {"call": "list_repo_tree", "repo_id": repo, "recursive": True},
                                   {"call": "list_repo_files", "repo_id": repo})
        values = self.values(out, 8)
        commits = values[1:6]
        self.assertEqual(len({c["oid"] for c in commits}), 5)
        for c in commits:
            self.assertRegex(c["oid"], r"^[0-9a-f]{40}$")
            self.assertTrue(c["commit_url"].startswith(f"{self.node.url}/{repo}/commit/"), c)
            self.assertIsNone(c["pr_url"])
        tree = {e["path"]: e for e in values[6]}
        self.assertEqual(tree["notes"]["type"], "folder")
        lfs = {p for p, e in tree.items() if e["lfs"]}
        self.assertEqual(lfs, {"model.safetensors", "blob.dat", "notes/big.txt"})
        for path in lfs:
            self.assertEqual(tree[path]["lfs"], digests[path])
        for path, data in files.items():
            self.assertEqual(tree[path]["size"], len(data))
        self.assertEqual(self.own_files(values[7]), sorted(files))
        # The LFS files went through the batch and a PUT each; the regular ones only in the commits.
        batch = [e for e in requests if e["method"] == "POST" and e["target"].endswith(".git/info/lfs/objects/batch")]
        self.assertEqual(len(batch), 3, requests)
        self.assertEqual(len([e for e in requests if e["method"] == "PUT"]), 3, requests)
        self.assertEqual([e for e in requests if XET_REQUEST.search(e["target"])], [])
        self.check_snapshot(repo, digests)

    def test_upload_folder_nested_then_delete_patterns(self):
        repo = self.repo("folder")
        first = self.folder("folder-1")
        readme = b"---\nlicense: mit\ntags:\n- test\n---\n# A hosted model\n"
        files = {"README.md": readme, "config.json": b"{}\n", "a/b/c/deep.txt": b"deep\n",
                 "a/b/sibling.txt": b"sibling\n", "weights/model.safetensors": os.urandom(MIB),
                 "old/one.log": b"one\n", "old/two.log": b"two\n", "keep.log": b"kept\n"}
        first_digests = write(first, files)
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_folder", "repo_id": repo, "folder": first, "message": "first"},
                                   {"call": "list_repo_files", "repo_id": repo})
        _, commit, listed = self.values(out, 3)
        self.assertEqual(self.own_files(listed), sorted(files))
        self.assertIn(("POST", "/api/validate-yaml"), {(e["method"], e["target"]) for e in requests})
        self.assertEqual(len([e for e in requests if e["method"] == "POST" and "/commit/" in e["target"]]), 1)

        # The second folder replaces a file, adds one, and deletes what matches old/* or *.log and is not re-added.
        second = self.folder("folder-2")
        changed = {"config.json": b'{"changed": true}\n', "old/two.log": b"two again\n", "new/file.txt": b"new\n"}
        write(second, changed)
        out, requests = self.calls({"call": "upload_folder", "repo_id": repo, "folder": second,
                                    "delete_patterns": ["old/*", "*.log"], "message": "second"},
                                   {"call": "list_repo_files", "repo_id": repo},
                                   {"call": "list_repo_commits", "repo_id": repo})
        second_commit, listed, commits = self.values(out, 3)
        expected = {**first_digests, **{p: sha256_bytes(d) for p, d in changed.items()}}
        for gone in ("old/one.log", "keep.log"):
            del expected[gone]
        self.assertEqual(self.own_files(listed), sorted(expected))
        tree = [e for e in requests if e["method"] == "GET" and f"/api/models/{repo}/tree/main" in e["target"]]
        self.assertTrue(tree, requests)
        self.assertRegex(tree[0]["target"], r"[?&]recursive=(true|True)(&|$)")
        self.assertEqual([(c["id"], c["title"]) for c in commits[:2]],
                         [(second_commit["oid"], "second"), (commit["oid"], "first")])
        self.check_snapshot(repo, expected)

    def test_create_commit_with_mixed_operations(self):
        repo = self.repo("mixed")
        folder = self.folder("mixed")
        start = {"keep.txt": b"keep\n", "gone.txt": b"gone\n", "dir/x.txt": b"x\n", "dir/y/z.bin": os.urandom(4096),
                 "src.txt": b"source text\n", "weights.safetensors": os.urandom(2 * MIB)}
        digests = write(folder, start)
        added_file = os.path.join(self.folder("added"), "added.bin")
        added = b"\x00\x01" + os.urandom(5000)
        with open(added_file, "wb") as f:
            f.write(added)
        self.ok({"call": "create_repo", "repo_id": repo}, {"call": "upload_folder", "repo_id": repo, "folder": folder})
        out, requests = self.calls(
            {"call": "create_commit", "repo_id": repo, "message": "mixed", "operations": [
                {"add": "new/bytes.txt", "text": "added from bytes\n"},
                {"add": "new/added.bin", "path": added_file},
                {"delete": "gone.txt"},
                {"delete": "dir/"},
                {"copy": "src.txt", "to": "copies/src.txt"},
                {"copy": "weights.safetensors", "to": "copies/weights.safetensors"}]},
            {"call": "list_repo_files", "repo_id": repo},
            {"call": "list_repo_tree", "repo_id": repo, "recursive": True},
            {"call": "list_repo_commits", "repo_id": repo})
        commit, listed, tree, commits = self.values(out, 4)
        expected = {"keep.txt": digests["keep.txt"], "src.txt": digests["src.txt"],
                    "weights.safetensors": digests["weights.safetensors"],
                    "new/bytes.txt": sha256_bytes(b"added from bytes\n"), "new/added.bin": sha256_bytes(added),
                    "copies/src.txt": digests["src.txt"], "copies/weights.safetensors": digests["weights.safetensors"]}
        self.assertEqual(self.own_files(listed), sorted(expected))
        lfs = {e["path"]: e["lfs"] for e in tree if e["lfs"]}
        self.assertEqual(lfs["copies/weights.safetensors"], digests["weights.safetensors"])
        self.assertEqual(lfs["new/added.bin"], sha256_bytes(added))
        self.assertEqual((commits[0]["id"], commits[0]["title"]), (commit["oid"], "mixed"))
        # The copies were looked up with paths-info and the regular one read back through resolve; of the LFS
        # files only the new one was uploaded, the copied one was not.
        self.assertTrue([e for e in requests if e["method"] == "POST" and "/paths-info/" in e["target"]], requests)
        self.assertTrue([e for e in requests if e["method"] == "GET" and e["target"].endswith("/src.txt")], requests)
        self.assertEqual(len([e for e in requests if e["method"] == "PUT"]), 1, requests)
        self.assertEqual(len([e for e in requests if e["method"] == "POST" and "/commit/" in e["target"]]), 1)
        self.check_snapshot(repo, expected)

    def test_create_pr_lands_on_its_ref_only(self):
        repo = self.repo("pr")
        main_text, pr_text = b"on main\n", b"proposed\n"
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_file", "repo_id": repo, "path_in_repo": "file.txt",
                                    "text": main_text.decode()},
                                   {"call": "upload_file", "repo_id": repo, "path_in_repo": "pr-only.txt",
                                    "text": pr_text.decode(), "create_pr": True, "message": "a proposal"},
                                   {"call": "create_commit", "repo_id": repo, "message": "another proposal",
                                    "create_pr": True, "operations": [{"add": "file.txt", "text": "changed in PR\n"}]},
                                   {"call": "list_repo_files", "repo_id": repo},
                                   {"call": "list_repo_refs", "repo_id": repo},
                                   {"call": "hf_hub_download", "repo_id": repo, "filename": "pr-only.txt",
                                    "may_fail": True})
        _, on_main, pr, pr2, main_files, refs, missing = out["results"]
        pr, pr2 = pr["value"], pr2["value"]
        for proposal in (pr, pr2):
            self.assertRegex(proposal["pr_url"], PR_URL)
            self.assertTrue(proposal["pr_url"].startswith(f"{self.node.url}/{repo}/discussions/"), proposal)
            number = int(PR_URL.match(proposal["pr_url"]).group(1))
            self.assertEqual((proposal["pr_revision"], proposal["pr_num"]), (f"refs/pr/{number}", number))
        self.assertNotEqual(pr["pr_num"], pr2["pr_num"])
        self.assertEqual(self.own_files(main_files["value"]), ["file.txt"])
        self.assertEqual(refs["value"]["branches"]["main"], on_main["value"]["oid"])
        self.assertEqual(refs["value"]["pull_requests"].get(pr["pr_revision"]), pr["oid"])
        self.refused(missing, "EntryNotFoundError")
        # No discussion was opened by hand: the commits asked for the PR themselves.
        self.assertEqual([e for e in requests if e["target"].endswith("/discussions")], [])
        self.assertTrue([e for e in requests if "create_pr=1" in e["target"] and "/commit/" in e["target"]])
        self.check_snapshot(repo, {"file.txt": sha256_bytes(main_text), "pr-only.txt": sha256_bytes(pr_text)},
                            revision=pr["pr_revision"])
        self.check_snapshot(repo, {"file.txt": sha256_bytes(b"changed in PR\n")}, revision=pr2["pr_revision"])
        self.check_snapshot(repo, {"file.txt": sha256_bytes(main_text)})

    def test_delete_file(self):
        repo = self.repo("delete-file")
        out, _ = self.calls({"call": "create_repo", "repo_id": repo},
                            {"call": "upload_file", "repo_id": repo, "path_in_repo": "a.txt", "text": "a\n"},
                            {"call": "upload_file", "repo_id": repo, "path_in_repo": "b.safetensors",
                             "b64": "AAECAw=="},
                            {"call": "delete_file", "repo_id": repo, "path_in_repo": "b.safetensors"},
                            {"call": "delete_file", "repo_id": repo, "path_in_repo": "never-was.txt", "may_fail": True},
                            {"call": "list_repo_files", "repo_id": repo},
                            {"call": "list_repo_commits", "repo_id": repo})
        _, _, _, deleted, missing, listed, commits = out["results"]
        self.assertRegex(deleted["value"]["oid"], r"^[0-9a-f]{40}$")
        self.refused(missing, "EntryNotFoundError")
        self.assertEqual(missing["error_code"], "EntryNotFound")
        self.assertEqual(self.own_files(listed["value"]), ["a.txt"])
        self.assertEqual(commits["value"][0]["id"], deleted["value"]["oid"])
        self.assertEqual(commits["value"][0]["title"], "Delete b.safetensors with huggingface_hub")
        self.check_snapshot(repo, {"a.txt": sha256_bytes(b"a\n")})

    def test_private_repo_is_not_found_by_another_user(self):
        repo = self.repo("private")
        secret = os.urandom(4096)
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_file", "repo_id": repo, "path_in_repo": "secret.bin",
                                    "b64": base64.b64encode(secret).decode()},
                                   {"call": "update_repo_settings", "repo_id": repo, "private": True},
                                   {"call": "model_info", "repo_id": repo})
        self.assertTrue(self.values(out, 4)[3]["private"])
        settings = [e for e in requests if e["method"] == "PUT" and e["target"] == f"/api/models/{repo}/settings"]
        self.assertEqual([e["status"] for e in settings], [200])
        for who, token in (("another user", self.keys[self.other]), ("a wrong key", "il_" + "x" * 43)):
            with self.subTest(who=who):
                out, _ = self.calls({"call": "model_info", "repo_id": repo, "may_fail": True},
                                    {"call": "list_repo_files", "repo_id": repo, "may_fail": True},
                                    {"call": "hf_hub_download", "repo_id": repo, "filename": "secret.bin",
                                     "may_fail": True},
                                    {"call": "upload_file", "repo_id": repo, "path_in_repo": "intruder.txt",
                                     "text": "x", "may_fail": True},
                                    token=token)
                info, listing, download, upload = out["results"]
                if who == "another user":
                    for result in (info, listing):
                        self.refused(result, "RepositoryNotFoundError", 404)
                        self.assertEqual(result["error_code"], "RepoNotFound")
                self.assertIn("error", download)
                self.assertIn("error", upload)
        # Still the owner's, unchanged.
        self.check_snapshot(repo, {"secret.bin": sha256_bytes(secret)})

    def test_delete_repo_and_missing_ok(self):
        repo = self.repo("doomed")
        out, _ = self.calls({"call": "create_repo", "repo_id": repo},
                            {"call": "upload_file", "repo_id": repo, "path_in_repo": "w.safetensors", "b64": "AAAA"},
                            {"call": "delete_repo", "repo_id": repo, "token": self.keys[self.other], "may_fail": True},
                            {"call": "model_info", "repo_id": repo},
                            {"call": "delete_repo", "repo_id": repo},
                            {"call": "model_info", "repo_id": repo, "may_fail": True},
                            {"call": "delete_repo", "repo_id": repo, "may_fail": True},
                            {"call": "delete_repo", "repo_id": repo, "missing_ok": True},
                            {"call": "create_repo", "repo_id": repo},
                            {"call": "list_repo_files", "repo_id": repo})
        results = out["results"]
        self.assertEqual(len(results), 10, results)
        self.assertIn("error", results[2], "another user deleted the repo")
        self.assertNotIn("error", results[3], results[3])
        self.assertNotIn("error", results[4], results[4])
        self.refused(results[5], "RepositoryNotFoundError", 404)
        self.refused(results[6], "RepositoryNotFoundError", 404)
        self.assertEqual(results[6]["error_code"], "RepoNotFound")
        self.assertNotIn("error", results[7], results[7])
        self.assertNotIn("error", results[8], results[8])
        self.assertEqual(self.own_files(results[9]["value"]), [], "a re-created repo starts empty")

    def test_list_repo_commits_newest_first(self):
        repo = self.repo("history")
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   *({"call": "upload_file", "repo_id": repo, "path_in_repo": f"f{i}.txt",
                                      "text": f"{i}\n", "message": f"commit {i}"} for i in range(3)),
                                   {"call": "list_repo_commits", "repo_id": repo},
                                   {"call": "model_info", "repo_id": repo})
        values = self.values(out, 6)
        made, commits, info = values[1:4], values[4], values[5]
        self.assertEqual([(c["id"], c["title"]) for c in commits[:3]],
                         [(made[i]["oid"], f"commit {i}") for i in (2, 1, 0)])
        for c in commits[:3]:
            self.assertEqual(c["authors"], [self.owner])
        dates = [c["created_at"] for c in commits]
        self.assertEqual(dates, sorted(dates, reverse=True))
        self.assertEqual(info["sha"], made[2]["oid"])

    def test_upload_folder_of_1000_files(self):
        """One commit for the whole folder (the client's single-commit path), preuploads of 256 files, a recursive
        listing of 1,000 entries for delete_patterns, and the snapshot back file by file."""
        repo = self.repo("thousand")
        folder = self.folder("thousand")
        files = {f"d{i % 10}/sub{i % 3}/file{i:04d}.txt": f"file {i}\n".encode() * (1 + i % 7) for i in range(1000)}
        files.update({f"weights/w{i}.bin": os.urandom(1000 + i) for i in range(3)})  # a few LFS files
        digests = write(folder, files)
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_folder", "repo_id": repo, "folder": folder},
                                   {"call": "list_repo_files", "repo_id": repo}, timeout=900)
        _, commit, listed = self.values(out, 3)
        self.assertEqual(self.own_files(listed), sorted(files))
        commits = [e for e in requests if e["method"] == "POST" and f"/api/models/{repo}/commit/" in e["target"]]
        self.assertEqual([e["status"] for e in commits], [200], "one commit for the whole folder")
        preuploads = [e for e in requests if e["method"] == "POST" and f"/api/models/{repo}/preupload/" in e["target"]]
        self.assertEqual(len(preuploads), 4, "ceil(1003 / 256) preupload calls")

        # delete_patterns over the 1,000-entry tree: d1/ goes, one file is added.
        more = self.folder("thousand-more")
        write(more, {"added.txt": b"added\n"})
        out, requests = self.calls({"call": "upload_folder", "repo_id": repo, "folder": more,
                                    "delete_patterns": ["d1/*"]},
                                   {"call": "list_repo_files", "repo_id": repo}, timeout=900)
        _, listed = self.values(out, 2)
        expected = {p: d for p, d in digests.items() if not p.startswith("d1/")}
        expected["added.txt"] = sha256_bytes(b"added\n")
        self.assertEqual(self.own_files(listed), sorted(expected))
        self.assertEqual(len(expected), 1000 - 100 + 3 + 1)
        snapshot, = self.ok({"call": "snapshot_download", "repo_id": repo}, timeout=900)
        got = {p: d for p, d in snapshot["files"].items() if p != ".gitattributes"}
        self.assertEqual(got, expected)

    def test_upload_folder_with_a_300_mib_file(self):
        """A 300 MiB file goes up in parts (multipart: a PUT per part, then the completion call) and comes back
        whole, into a fresh cache."""
        repo = self.repo("big")
        folder = self.folder("big")
        os.makedirs(os.path.join(folder, "big"))
        big_path = os.path.join(folder, "big", "weights.bin")
        block = os.urandom(MIB)
        with open(big_path, "wb") as f:
            for i in range(BIG_SIZE // MIB):
                f.write(i.to_bytes(8, "big") + block[8:])
            f.write(block[:BIG_SIZE % MIB])
        self.assertEqual(os.path.getsize(big_path), BIG_SIZE)
        digests = {"big/weights.bin": sha256_file(big_path), **write(folder, {"config.json": b'{"big": true}\n'})}
        out, requests = self.calls({"call": "create_repo", "repo_id": repo},
                                   {"call": "upload_folder", "repo_id": repo, "folder": folder},
                                   {"call": "list_repo_tree", "repo_id": repo, "recursive": True}, timeout=1200)
        _, _, tree = self.values(out, 3)
        entry = next(e for e in tree if e["path"] == "big/weights.bin")
        self.assertEqual((entry["size"], entry["lfs"]), (BIG_SIZE, digests["big/weights.bin"]))
        puts = [e for e in requests if e["method"] == "PUT"]
        self.assertGreaterEqual(len(puts), 2, f"the 300 MiB file was not uploaded in parts: {requests}")
        self.assertEqual({e["status"] for e in puts}, {200})
        completion = [e for e in requests if e["method"] == "POST" and e["target"].startswith("/api/inferllama/lfs/")]
        self.assertTrue(completion, requests)
        self.check_snapshot(repo, digests)

    def check_xet_without_disable(self) -> tuple[dict, list[dict]]:
        """Uploads of an LFS file, one through upload_file and one through upload_folder, without
        HF_HUB_DISABLE_XET: (the driver's output, the node's access log entries)."""
        repo = self.repo("without-the-variable")
        folder = self.folder("without-the-variable")
        write(folder, {"folder.safetensors": os.urandom(MIB)})
        self.ok({"call": "create_repo", "repo_id": repo})
        env = {k: v for k, v in self.client_env.items() if k != "HF_HUB_DISABLE_XET"}
        return self.calls({"call": "upload_file", "repo_id": repo, "path_in_repo": "file.safetensors",
                           "b64": base64.b64encode(os.urandom(MIB)).decode(), "may_fail": True},
                          {"call": "upload_folder", "repo_id": repo, "folder": folder, "may_fail": True},
                          {"call": "list_repo_files", "repo_id": repo}, env=env)


class HostingHub1Test(HostingTests, HostedNodeCase):
    """huggingface_hub 1.x, with HF_HUB_DISABLE_XET=1 (≥ 1.20 would send every LFS file through Xet)."""
    venv = "hub1"
    client_env = {"HF_HUB_DISABLE_XET": "1"}

    def test_without_hf_hub_disable_xet_the_upload_fails_naming_it(self):
        """hf_xet is installed: the client asks for a Xet write token and uploads nothing through LFS. The node
        refuses, and the error the user sees says what to do."""
        out, requests = self.check_xet_without_disable()
        self.assertTrue(out["xet"], "hf_xet is not importable: the run proves nothing about Xet")
        by_file, by_folder, listed = out["results"]
        for result in (by_file, by_folder):
            self.assertIn("error", result, result)
            self.assertIn("HF_HUB_DISABLE_XET", result["message"], result)
        self.assertTrue([e for e in requests if e["method"] == "GET" and "/xet-write-token/" in e["target"]], requests)
        self.assertEqual([e for e in requests if e["target"].endswith(".git/info/lfs/objects/batch")], [])
        self.assertEqual(self.own_files(listed["value"]), [], "a refused upload committed something")


class HostingHub0Test(HostingTests, HostedNodeCase):
    """The last huggingface_hub 0.x, as users run it: without HF_HUB_DISABLE_XET."""
    venv = "hub0"
    client_env = {}

    def test_without_hf_hub_disable_xet_lfs_is_used(self):
        """0.x offers Xet in the batch call and uses it only if the answer picks it: the node never does, so the
        upload goes through plain LFS and no Xet token is asked for."""
        out, requests = self.check_xet_without_disable()
        self.assertTrue(out["xet"], "hf_xet is not importable: the run proves nothing about Xet")
        by_file, by_folder, listed = out["results"]
        for result in (by_file, by_folder):
            self.assertNotIn("error", result, result)
        self.assertEqual(self.own_files(listed["value"]), ["file.safetensors", "folder.safetensors"])
        self.assertEqual([e for e in requests if XET_REQUEST.search(e["target"])], [])


if __name__ == "__main__":
    unittest.main()
