"""The Hub's routes the node does not serve itself (listings, whoami, commits, discussions, dataset parquet
listings, /raw/ files) pass through to the upstream: with the caller's own credentials (node keys and the
admin key never leave the node; the node's token only for a public repo's files and history), the Hub's
status, content and error headers, nothing of the Hub's cookies, and the pagination links pointing back at
the node. Driven with plain HTTP and with the Python Hub client (both releases)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from accounts import bearer, totals, usage_after  # noqa: E402
from harness import BINARY, FakeHub, Node, clean_env  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "acme/tiny-model"
ADMIN_KEY = "admin-key-for-hub-routes-0123456789"
NODE_TOKEN = "hf_approved"  # the node's own Hub token: it opens gated and private repos at the fake Hub

# Runs in the client's environment; prints one JSON object of what the listings gave.
LISTING_SCRIPT = r'''
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.utils import HfHubHTTPError

model, approved, node_key = sys.argv[1], sys.argv[2], sys.argv[3]
api = HfApi()
out = {}
out["models"] = [m.id for m in api.list_models(author="acme")]
out["searched"] = [m.id for m in api.list_models(search="gated")]
out["datasets"] = [d.id for d in api.list_datasets(author="acme")]
out["whoami"] = api.whoami(token=approved)["name"]
try:
    # A node key names a node user, whom the node answers for itself (the Hub never sees a node key).
    out["whoami_node_key"] = api.whoami(token=node_key)["name"]
except (HfHubHTTPError, OSError) as e:  # 0.x raises requests' HTTPError (an OSError) here
    out["whoami_node_key"] = e.response.status_code
out["commits"] = [c.commit_id for c in api.list_repo_commits(model)]
out["commits_at_tag"] = [c.commit_id for c in api.list_repo_commits(model, revision="v1.0")]
out["discussions"] = [(d.num, d.is_pull_request) for d in api.get_repo_discussions(model)]
print(json.dumps(out))
'''


class HubRoutesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        try:
            cls.node = Node(cls.hub.url, None, env={"INFERLLAMA_UPSTREAM_TOKEN": NODE_TOKEN},
                            admin_key=ADMIN_KEY).start()
        except BaseException:
            cls.hub.stop()
            raise
        cls.manifest = cls.hub.manifest()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run([BINARY, *args, "--data-dir", self.node.data_dir], capture_output=True, text=True,
                              timeout=60, env=clean_env(), input=stdin)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def node_key(self, user: str, hub_token: str = "") -> str:
        self.cli("user", "add", user)
        if hub_token:
            self.cli("user", "hub-token", user, stdin=hub_token + "\n")
        return next(line for line in self.cli("key", "create", user).splitlines() if line.startswith("il_"))

    def passed(self, since: int = 0) -> list[dict]:
        """What the fake Hub saw of the routes passed through, from the `since`-th on."""
        return self.hub.stats()["other_requests"][since:]

    def through(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        """One request to the node; (status, headers, body, what the fake Hub saw of it)."""
        before = len(self.passed())
        status, head, data = self.node.request(method, path, headers, body)
        return status, head, data, self.passed(before)

    def public_ids(self, rtype: str) -> list[str]:
        return sorted(r["id"] for r in self.manifest["repos"] if r["type"] == rtype and not r["private"]
                      and r["id"].startswith("acme/"))

    def test_whoami_carries_the_callers_own_credentials_only(self):
        status, head, body, seen = self.through("GET", "/api/whoami-v2")
        self.assertEqual(status, 401)  # the node's token is never anyone's identity
        self.assertEqual(head.get("x-error-message"), "Invalid credentials in Authorization header")
        self.assertEqual([s["auth"] for s in seen], ["anonymous"])
        self.assertIn("inferllama-", seen[0]["via"])

        status, head, body, seen = self.through("GET", "/api/whoami-v2", {"Authorization": "Bearer hf_unapproved",
                                                                          "Cookie": "session=secret"})
        self.assertEqual((status, json.loads(body)["name"]), (200, "unapproved-user"))
        self.assertEqual((seen[0]["auth"], seen[0]["cookie"]), ("hf_unapproved", ""))
        self.assertNotIn("set-cookie", head)  # the Hub's session cookie is not handed to the node's clients
        self.assertNotIn("x-internal-route", head)
        self.assertEqual(head["cache-control"], "private")  # an answer to a token: never a shared cache's
        self.assertEqual(head["vary"], "Authorization")
        # HEAD: the GET answer's head, its length included.
        status, head, empty, _ = self.through("HEAD", "/api/whoami-v2", {"Authorization": "Bearer hf_unapproved"})
        self.assertEqual((status, empty, int(head["content-length"])), (200, b"", len(body)))

        # The admin key opens the node's admin API and is nobody's Hub token.
        _, _, _, seen = self.through("GET", "/api/whoami-v2", {"Authorization": f"Bearer {ADMIN_KEY}"})
        self.assertEqual([s["auth"] for s in seen], ["anonymous"])
        # The Hub reads bearer tokens only: the admin key (or anything) in another scheme stays at the node.
        for authorization in (f"token {ADMIN_KEY}", f"Basic {ADMIN_KEY}", ADMIN_KEY):
            _, _, _, seen = self.through("GET", "/api/whoami-v2", {"Authorization": authorization})
            self.assertEqual([s["auth"] for s in seen], ["anonymous"], authorization)
        # A node key names a node user, whom the node answers for itself (they own a namespace of hosted
        # repos there); the Hub is not asked, whether the user has a Hub token of their own or not.
        own = self.node_key("routes-own", hub_token="hf_unapproved")
        status, _, body, seen = self.through("GET", "/api/whoami-v2", {"Authorization": f"Bearer {own}"})
        self.assertEqual((status, json.loads(body)["name"], json.loads(body)["type"], seen), (200, "routes-own", "user", []))
        self.assertIsInstance(json.loads(body)["auth"], dict)
        none = self.node_key("routes-none")
        status, _, body, seen = self.through("GET", "/api/whoami-v2", {"Authorization": f"Bearer {none}"})
        self.assertEqual((status, json.loads(body)["name"], seen), (200, "routes-none", []))
        self.assertIn("routes-none ", self.cli("usage", "routes-none"))  # counted like any other request

    def test_raw_files_go_with_the_nodes_token_only_where_anyone_may_read(self):
        files = {f["path"]: f for r in self.manifest["repos"] if r["id"] == MODEL for f in r["files"][r["revisions"]["main"]]}
        status, head, body, seen = self.through("GET", f"/{MODEL}/raw/main/config.json")
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), files["config.json"]["sha256"])
        self.assertEqual(head["etag"], f'"{files["config.json"]["git_sha1"]}"')
        self.assertEqual(head["x-repo-commit"], self.hub.commit(MODEL))
        self.assertEqual(head["content-type"], "text/plain; charset=utf-8")
        self.assertNotIn("set-cookie", head)
        self.assertEqual([s["auth"] for s in seen], [NODE_TOKEN])  # a public repo: the node's token may go

        status, head, _, seen = self.through("GET", "/acme/gated-model/raw/main/config.json")
        self.assertEqual((status, head.get("x-error-code")), (401, "GatedRepo"))
        self.assertEqual([s["auth"] for s in seen], ["anonymous"])  # never the node's token for a gated repo
        status, _, _, seen = self.through("GET", "/acme/private-model/raw/main/config.json")
        self.assertEqual((status, [s["auth"] for s in seen]), (401, ["anonymous"]))
        status, _, _, seen = self.through("GET", "/acme/gated-model/raw/main/config.json",
                                          {"Authorization": "Bearer hf_approved"})
        self.assertEqual((status, [s["auth"] for s in seen]), (200, ["hf_approved"]))
        # A repo's web pages are not its content: they never carry the node's token.
        _, _, _, seen = self.through("GET", f"/{MODEL}/commits/main")
        self.assertEqual([s["auth"] for s in seen], ["anonymous"])
        _, _, _, seen = self.through("GET", f"/api/models/{MODEL}/commits/main")
        self.assertEqual([s["auth"] for s in seen], [NODE_TOKEN])

    def test_a_raw_file_is_passed_as_the_upstream_sent_it(self):
        # JSON with Xet-named keys is a file's content here, not an API answer to strip.
        text = '{"xetHash": "kept",   "z": 1, "a": [2, 3]}\n'
        commit = self.hub.push(MODEL, {"data/xet.json": text}, branch="raw-test")
        key = self.node_key("raw-reader")
        status, head, body, _ = self.through("GET", f"/{MODEL}/raw/{commit}/data/xet.json", bearer(key))
        self.assertEqual((status, body.decode()), (200, text))
        # A file's bytes are counted as the bytes of a download through resolve are.
        rows = usage_after(self.node, key, 1)
        self.assertEqual((rows[0]["repo"], totals(rows)["bytes_from_upstream"]), (f"model/{MODEL}", len(text)))
        # An encoded slash in a revision is a revision, not a path.
        status, _, body, seen = self.through("GET", f"/api/models/{MODEL}/commits/refs%2Fpr%2F1")
        self.assertEqual((status, seen[0]["path"]), (200, f"/api/models/{MODEL}/commits/refs%2Fpr%2F1"))
        self.assertEqual(json.loads(body)[0]["id"], self.hub.commit(MODEL, "refs/pr/1"))

    def test_listings_never_use_the_nodes_token(self):
        status, head, body, seen = self.through("GET", "/api/models?author=acme")
        self.assertEqual(status, 200)
        self.assertEqual([s["auth"] for s in seen], ["anonymous"])
        ids = [m["id"] for m in json.loads(body)]
        self.assertNotIn("acme/private-model", ids)
        # The next page is the node's, with the Hub's query kept.
        link = head["link"]
        self.assertTrue(link.startswith(f"<{self.node.url}/api/models?"), link)
        next_path = link[len(f"<{self.node.url}"):link.index(">")]
        self.assertIn("author=acme", next_path)
        status, _, more, _ = self.through("GET", next_path)
        self.assertEqual(status, 200)
        self.assertEqual(sorted(ids + [m["id"] for m in json.loads(more)])[:3], self.public_ids("model")[:3])

    def test_writes_and_conditional_reads(self):
        payload = json.dumps({"title": "A question", "description": "Why?"}).encode()
        path = f"/api/models/{MODEL}/discussions"
        status, _, _, seen = self.through("POST", path, {"Content-Type": "application/json"}, payload)
        self.assertEqual((status, [s["auth"] for s in seen]), (401, ["anonymous"]))  # a write: never the node's token
        status, _, body, seen = self.through("POST", path, {"Content-Type": "application/json",
                                                            "Authorization": "Bearer hf_unapproved"}, payload)
        self.assertEqual((status, json.loads(body)["title"]), (200, "A question"))
        self.assertEqual((seen[0]["method"], seen[0]["auth"], json.loads(seen[0]["body"])["title"]),
                         ("POST", "hf_unapproved", "A question"))

        commits = f"/api/models/{MODEL}/commits/main"
        status, head, _, _ = self.through("GET", commits)
        self.assertEqual(status, 200)
        status, _, body, seen = self.through("GET", commits, {"If-None-Match": head["etag"]})
        self.assertEqual((status, body, len(seen)), (304, b"", 1))

        status, _, body, _ = self.through("GET", "/api/datasets/acme/tiny-dataset/parquet")
        self.assertEqual(list(json.loads(body)["default"]), ["train"])

    def test_other_methods_keep_their_method_and_body(self):
        for method in ("PUT", "PATCH", "DELETE"):
            body = json.dumps({"private": False}).encode() if method != "DELETE" else None
            headers = {"Authorization": "Bearer hf_unapproved"}
            if body:
                headers["Content-Type"] = "application/json"
            status, _, answer, seen = self.through(method, f"/api/models/{MODEL}/settings", headers, body)
            self.assertEqual(status, 200, answer)
            self.assertEqual((seen[0]["method"], seen[0]["body"]), (method, (body or b"").decode()))
            self.assertEqual(json.loads(answer)["method"], method)

    def test_redirects_stay_within_the_hub(self):
        status, head, _, _ = self.through("GET", "/join")
        self.assertEqual((status, head["location"]), (302, "/login?next=%2Fjoin"))
        status, head, _, seen = self.through("GET", "/login")
        self.assertEqual((status, len(seen)), (502, 1))  # the node is nobody's redirector
        self.assertNotIn("location", head)

    def test_what_is_not_the_hubs_stays_at_the_node(self):
        for path in ("/api/models/..%2Fwhoami-v2/x", "/api/%2e%2e/whoami-v2", "/acme//tiny-model/raw/main/x",
                     f"/api/models/{MODEL}/commits/main%2F..%2Fx", f"/api/models/{MODEL}/commits/main%2F",
                     "/api/models/a%5cb/x"):
            status, _, _, seen = self.through("GET", path)
            self.assertEqual((status, seen), (400, []), path)
        for path in ("/api/inferllama/nothing", "/api/usage/x", "/announce/short", "/api/%69nferllama/users"):
            status, _, _, seen = self.through("GET", path)
            self.assertEqual((status, seen), (404, []), path)
        status, _, _, seen = self.through("OPTIONS", "/api/models")
        self.assertEqual((status, seen), (405, []))

    def check_client(self, venv: str):
        python = os.path.join(ROOT, ".venv", venv, "bin", "python")
        self.assertTrue(os.path.exists(python), f"{python} is missing: run scripts/install-deps.sh --test")
        key = self.node_key(f"lister-{venv}")
        with tempfile.TemporaryDirectory(prefix=f"inferllama-{venv}-") as home:
            before = len(self.passed())
            done = subprocess.run([python, "-c", LISTING_SCRIPT, MODEL, "hf_approved", key], capture_output=True,
                                  text=True, timeout=300,
                                  env=clean_env({"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                                 "HF_HUB_DISABLE_TELEMETRY": "1"}))
            self.assertEqual(done.returncode, 0, done.stderr[-3000:])
            got = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertEqual(sorted(got["models"]), self.public_ids("model"))
        self.assertEqual(got["searched"], ["acme/gated-model"])
        self.assertEqual(sorted(got["datasets"]), self.public_ids("dataset"))
        self.assertEqual(got["whoami"], "approved-user")
        self.assertEqual(got["whoami_node_key"], f"lister-{venv}")
        repo = next(r for r in self.manifest["repos"] if r["id"] == MODEL)
        self.assertEqual(got["commits"][0], repo["revisions"]["main"])
        self.assertEqual(set(got["commits"]) - set(repo["files"]), set())  # only the repo's commits
        self.assertEqual(got["commits_at_tag"][0], repo["revisions"]["v1.0"])
        self.assertEqual(got["discussions"], [[1, True]])
        # Every page went through the node: the fake Hub saw the node's Via on each.
        seen = self.passed(before)
        self.assertTrue(seen)
        self.assertTrue(all("inferllama-" in s["via"] for s in seen), seen)
        pages = [urllib.parse.parse_qs(s["query"]) for s in seen if s["path"] == "/api/models"]
        self.assertTrue(any("cursor" in q for q in pages), pages)  # a second page, asked of the node

    def test_python_client_2_x(self):
        self.check_client("hub2")

    def test_python_client_1_x(self):
        self.check_client("hub1")

    def test_python_client_0_x(self):
        self.check_client("hub0")


if __name__ == "__main__":
    unittest.main()
