"""The privacy policy's data rights through the real binary: a user's export (console, admin API, CLI),
the rectification of their name (console with the password, admin API, CLI), the deletion of an account
(console with the password, admin API, CLI), refused everywhere at once, its restore, and its purge (the admin's `purge` with older_than_days 0: the 30 days of the grace are the unit
tests' to wait)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY, HostedNodeCase, add_user, admin, bearer, usage  # noqa: E402
from harness import BINARY, clean_env  # noqa: E402
from test_console_api import PASSWORD, Browser, set_password  # noqa: E402


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60, env=clean_env(env))


def create_repo_with_file(node, key: str, repo: str, path: str, content: bytes, private: bool = False) -> None:
    """A hosted repo whose first commit holds `path`, as the JS client creates one."""
    ns, name = repo.split("/")
    body = {"name": name, "organization": ns, "type": "model", "private": private,
            "files": [{"path": path, "content": base64.b64encode(content).decode()}]}
    status, _, answer = node.request("POST", "/api/repos/create",
                                     {**bearer(key), "Content-Type": "application/json"}, json.dumps(body).encode())
    assert status == 200, (repo, status, answer)


def chunks_holding(data_dir: str, content: bytes) -> list[str]:
    """The chunk files of the store whose bytes are `content` (a file smaller than a chunk is one)."""
    found = []
    for root, _, names in os.walk(os.path.join(data_dir, "chunks")):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                if f.read() == content:
                    found.append(os.path.join(root, name))
    return found


class DataRightsTest(HostedNodeCase):
    users = ("alice", "bob", "carol", "dave")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for user in cls.users:
            set_password(cls.node, user)

    def node_cli(self, *args: str) -> subprocess.CompletedProcess:
        done = cli(*args, "--node", self.node.url, env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
        self.assertEqual(done.returncode, 0, (args, done.stdout, done.stderr))
        return done

    def resolve(self, repo: str, path: str, headers: dict | None = None):
        return self.node.request("GET", f"/{repo}/resolve/main/{path}", headers or {})

    def test_a_user_exports_everything_from_the_console_and_the_admin_from_the_cli(self):
        content = b"alice's weights, hers to take away\n"
        create_repo_with_file(self.node, self.keys["alice"], "alice/tiny", "weights.bin", content, private=True)
        b = Browser(self.node)
        self.assertEqual(b.sign_in("alice")[0], 200)
        status, created, _ = b.call("POST", "keys", {"label": "laptop"})
        self.assertEqual(status, 201, created)
        status, exported, headers = b.call("GET", "export")
        self.assertEqual(status, 200, exported)
        self.assertEqual(headers["content-disposition"], 'attachment; filename="inferllama-export-alice.json"')
        self.assertEqual((exported["format"], exported["version"]), ("inferllama-export", 1))
        self.assertEqual(exported["user"]["name"], "alice")
        self.assertTrue(exported["user"]["has_password"])
        self.assertEqual({k["label"] for k in exported["keys"]}, {"test", "laptop"})
        self.assertGreaterEqual(len(exported["sessions"]), 1)
        [repo] = exported["repos"]
        self.assertEqual((repo["repo"], repo["private"]), ("model/alice/tiny", True))
        files = {f["path"]: f for f in repo["branches"][0]["files"]}
        self.assertEqual(files["weights.bin"]["size"], len(content))
        events = [e["event"] for e in exported["audit"]]
        for event in ("signed_in", "key_created", "exported"):
            self.assertIn(event, events)
        self.assertTrue(any(e.get("network") for e in exported["audit"]))
        text = json.dumps(exported)
        for secret in (PASSWORD, created["key"], self.keys["alice"], b.cookies["inferllama_session"],
                       b.cookies["inferllama_csrf"], "$argon2"):
            self.assertNotIn(secret, text)

        done = self.node_cli("user", "export", "alice")
        by_admin = json.loads(done.stdout)
        self.assertEqual(by_admin["user"], exported["user"])
        self.assertEqual(by_admin["repos"], exported["repos"])
        self.assertEqual(by_admin["audit"][-1]["event"], "exported")
        self.assertEqual(by_admin["audit"][-1]["by"], "admin")

    def test_a_deleted_account_is_refused_everywhere_until_the_admin_restores_it(self):
        content = b"bob's public weights\n"
        create_repo_with_file(self.node, self.keys["bob"], "bob/open", "weights.bin", content)
        self.assertEqual(self.resolve("bob/open", "weights.bin")[0], 200)
        b = Browser(self.node)
        self.assertEqual(b.sign_in("bob")[0], 200)

        status, answer, _ = b.call("POST", "delete-account", {"password": "not the password at all"})
        self.assertEqual(status, 403, answer)
        self.assertEqual(b.call("GET", "me")[0], 200)
        status, answer, _ = b.call("POST", "delete-account", {"password": PASSWORD})
        self.assertEqual(status, 200, answer)
        self.assertTrue(answer["deleted"])
        self.assertIn("purge_after", answer)
        self.assertEqual(len([c for c in b.last_set_cookie if "Max-Age=0" in c]), 2)

        # Refused everywhere, at once: the console, a new sign-in, the node key, a new key.
        self.assertEqual(b.call("GET", "me")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("bob")[0], 401)
        self.assertEqual(self.node.request("GET", "/api/whoami-v2", bearer(self.keys["bob"]))[0], 401)
        self.assertEqual(admin(self.node, "POST", "keys", {"user": "bob"})[0], 409)
        self.assertEqual(admin(self.node, "POST", "users/bob/password", {"password": PASSWORD})[0], 409)
        # Its repos are gone from view, for anyone, and nothing is asked of the Hub about them.
        before = self.hub.stats()["other_requests"]
        for headers in ({}, bearer(ADMIN_KEY)):
            status, answer_headers, _ = self.resolve("bob/open", "weights.bin", headers)
            self.assertEqual(status, 404)
            self.assertEqual(answer_headers.get("x-error-code"), "RepoNotFound")
        self.assertEqual(self.node.request("GET", "/api/models/bob/open")[0], 404)
        self.assertEqual(json.loads(self.node.request("GET", "/api/models?author=bob")[2]), [])
        self.assertEqual(self.hub.stats()["other_requests"], before)
        # The name stays taken.
        self.assertEqual(admin(self.node, "POST", "users", {"name": "bob"})[0], 409)
        self.assertEqual(admin(self.node, "POST", "orgs", {"name": "bob"})[0], 409)
        status, users = admin(self.node, "GET", "users")
        [listed] = [u for u in users["users"] if u["name"] == "bob"]
        self.assertIsNotNone(listed["deleted"])
        self.assertIn("deleted", self.node_cli("user", "list").stdout)

        done = self.node_cli("user", "restore", "bob")
        self.assertIn("restored user bob", done.stdout)
        self.assertEqual(Browser(self.node).sign_in("bob")[0], 200)
        self.assertEqual(self.node.request("GET", "/api/whoami-v2", bearer(self.keys["bob"]))[0], 401)  # still revoked
        self.assertEqual(self.resolve("bob/open", "weights.bin")[0], 200)
        status, users = admin(self.node, "GET", "users")
        self.assertIsNone([u for u in users["users"] if u["name"] == "bob"][0]["deleted"])
        status, exported = admin(self.node, "GET", "users/bob/export")
        events = [e["event"] for e in exported["audit"]]
        self.assertLess(events.index("deletion_requested"), events.index("restored"))

    def test_the_admin_deletes_and_restores_through_the_api(self):
        status, deleted = admin(self.node, "DELETE", "users/dave")
        self.assertEqual(status, 200, deleted)
        self.assertIsNotNone(deleted["deleted"])
        self.assertIn("purge_after", deleted)
        self.assertEqual(Browser(self.node).sign_in("dave")[0], 401)
        self.assertEqual(admin(self.node, "DELETE", "users/nobody")[0], 404)
        status, restored = admin(self.node, "POST", "users/dave/restore")
        self.assertEqual(status, 200, restored)
        self.assertIsNone(restored["deleted"])
        self.assertEqual(admin(self.node, "POST", "users/dave/restore")[0], 409)
        self.assertEqual(Browser(self.node).sign_in("dave")[0], 200)

    def test_an_operator_restores_an_account_from_the_console(self):
        self.assertEqual(admin(self.node, "POST", "users/carol/admin", {"admin": True})[0], 200)
        operator = Browser(self.node)
        self.assertEqual(operator.sign_in("carol")[0], 200)
        add_user(self.node, "olga")
        self.assertEqual(admin(self.node, "DELETE", "users/olga")[0], 200)
        status, restored, _ = operator.call("POST", "operator/users/olga/restore", {})
        self.assertEqual(status, 200, restored)
        self.assertIsNone(restored["deleted"])
        self.assertEqual(operator.call("POST", "operator/users/olga/restore", {})[0], 409)
        self.assertEqual(operator.call("POST", "operator/users/nobody/restore", {})[0], 404)

    def test_the_purge_removes_every_trace_and_frees_the_name(self):
        content = b"carol's weights, to be erased\n"
        create_repo_with_file(self.node, self.keys["carol"], "carol/gone", "weights.bin", content)
        self.assertEqual(self.resolve("carol/gone", "weights.bin", bearer(self.keys["carol"]))[0], 200)
        self.assertEqual(admin(self.node, "POST", "orgs", {"name": "acme"})[0], 201)
        self.assertEqual(admin(self.node, "PUT", "orgs/acme/members/carol", {"role": "write"})[0], 200)
        self.assertEqual(len(chunks_holding(self.node.data_dir, content)), 1)

        done = self.node_cli("user", "delete", "carol")
        self.assertIn("deleted user carol", done.stdout)
        self.assertEqual(admin(self.node, "POST", "purge", {}), (200, {"purged": []}))  # within the grace
        self.assertEqual(admin(self.node, "POST", "purge", {"older_than_days": 31})[0], 400)
        self.assertEqual(admin(self.node, "POST", "purge", {"older_than_days": 0, "user": "carol"}),
                         (200, {"purged": ["carol"]}))

        status, users = admin(self.node, "GET", "users")
        self.assertNotIn("carol", [u["name"] for u in users["users"]])
        self.assertEqual(admin(self.node, "GET", "users/carol/export")[0], 404)
        self.assertEqual(admin(self.node, "GET", "orgs/acme/members"), (200, {"name": "acme", "members": []}))
        self.assertEqual(chunks_holding(self.node.data_dir, content), [])
        with open(self.node.log_path, errors="replace") as log:
            self.assertIn("purged user carol", log.read())
        # The name is free: a new carol starts with nothing of the old one.
        self.assertEqual(admin(self.node, "POST", "users", {"name": "carol"})[0], 201)
        status, fresh = admin(self.node, "GET", "users/carol/export")
        self.assertEqual(status, 200)
        self.assertEqual((fresh["repos"], fresh["usage"], fresh["keys"], fresh["organizations"], fresh["audit"]),
                         ([], [], [], [], [{"event": "exported", "by": "admin", "time": fresh["audit"][0]["time"]}]))
        self.assertEqual(self.resolve("carol/gone", "weights.bin")[0], 404)


    def test_a_user_renames_themselves_in_the_console_and_everything_follows(self):
        key = add_user(self.node, "erin")
        set_password(self.node, "erin")
        content = b"erin's weights, under whatever name she goes by\n"
        create_repo_with_file(self.node, key, "erin/tiny", "weights.bin", content)
        self.assertEqual(self.resolve("erin/tiny", "weights.bin", bearer(key))[0], 200)
        here, elsewhere = Browser(self.node), Browser(self.node)
        self.assertEqual(here.sign_in("erin")[0], 200)
        self.assertEqual(elsewhere.sign_in("erin")[0], 200)

        status, answer, _ = here.call("POST", "rename", {"name": "erin-r", "password": "not the password at all"})
        self.assertEqual(status, 403, answer)
        status, answer, _ = here.call("POST", "rename", {"name": "alice", "password": PASSWORD})
        self.assertEqual(status, 409, answer)
        status, answer, _ = here.call("POST", "rename", {"name": "no spaces", "password": PASSWORD})
        self.assertEqual(status, 400, answer)
        status, answer, _ = here.call("POST", "rename", {"name": "erin-r"}, csrf=False)
        self.assertEqual(status, 403, answer)  # a change needs the CSRF header, this one too
        status, answer, _ = here.call("POST", "rename", {"name": "erin-r", "password": PASSWORD})
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["user"]["name"], "erin-r")
        self.assertEqual(len([c for c in here.last_set_cookie if "Max-Age=0" not in c]), 2)  # a new session

        # This browser goes on under the new name; the others of the old name are signed out.
        status, me, _ = here.call("GET", "me")
        self.assertEqual((status, me["user"]["name"], len(me["sessions"])), (200, "erin-r", 1))
        self.assertEqual(elsewhere.call("GET", "me")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("erin")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("erin-r")[0], 200)
        # The key, the usage and the repo follow; the old names answer 404 and never reach the Hub.
        status, _, whoami = self.node.request("GET", "/api/whoami-v2", bearer(key))
        self.assertEqual((status, json.loads(whoami)["name"]), (200, "erin-r"))
        self.assertTrue(usage(self.node, key))
        self.assertTrue(all(row["user"] == "erin-r" for row in usage(self.node, key)))
        status, _, body = self.resolve("erin-r/tiny", "weights.bin", bearer(key))
        self.assertEqual((status, body), (200, content))
        before = self.hub.stats()["other_requests"]
        status, headers, _ = self.resolve("erin/tiny", "weights.bin")
        self.assertEqual((status, headers.get("x-error-code")), (404, "RepoNotFound"))
        self.assertEqual(self.node.request("GET", "/api/models/erin/tiny")[0], 404)
        self.assertEqual(self.hub.stats()["other_requests"], before)
        # The old name stays hers: no user or organisation takes it.
        self.assertEqual(admin(self.node, "POST", "users", {"name": "erin"})[0], 409)
        self.assertEqual(admin(self.node, "POST", "orgs", {"name": "erin"})[0], 409)
        status, exported, _ = here.call("GET", "export")
        self.assertEqual(exported["repos"][0]["repo"], "model/erin-r/tiny")
        [renamed] = [e for e in exported["audit"] if e["event"] == "renamed"]
        self.assertEqual((renamed["detail"], renamed["by"]), ("erin", "user"))
        # She may take it back.
        status, answer, _ = here.call("POST", "rename", {"name": "erin", "password": PASSWORD})
        self.assertEqual(status, 200, answer)
        self.assertEqual(self.resolve("erin/tiny", "weights.bin", bearer(key))[0], 200)

    def test_the_admin_renames_a_user_with_the_cli_and_the_api(self):
        key = add_user(self.node, "frank")
        create_repo_with_file(self.node, key, "frank/model", "weights.bin", b"frank's\n", private=True)
        self.assertEqual(admin(self.node, "POST", "orgs", {"name": "makers"})[0], 201)
        self.assertEqual(admin(self.node, "PUT", "orgs/makers/members/frank", {"role": "write"})[0], 200)

        done = self.node_cli("user", "rename", "frank", "franklin")
        self.assertIn("renamed user frank to franklin", done.stdout)
        self.assertIn("franklin", self.node_cli("user", "list").stdout)
        self.assertEqual(admin(self.node, "GET", "orgs/makers/members"),
                         (200, {"name": "makers", "members": [{"user": "franklin", "role": "write"}]}))
        self.assertEqual(self.resolve("franklin/model", "weights.bin", bearer(key))[0], 200)
        self.assertEqual(self.resolve("franklin/model", "weights.bin")[0], 404)  # still private
        failed = cli("user", "rename", "frank", "frankie", "--node", self.node.url, env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
        self.assertEqual(failed.returncode, 1)
        self.assertIn("no user named", failed.stderr)

        self.assertEqual(admin(self.node, "POST", "users/franklin/rename", {"name": "alice"})[0], 409)
        self.assertEqual(admin(self.node, "POST", "users/franklin/rename", {"name": "-bad"})[0], 400)
        status, renamed = admin(self.node, "POST", "users/franklin/rename", {"name": "frank"})
        self.assertEqual((status, renamed["name"]), (200, "frank"))
        status, exported = admin(self.node, "GET", "users/frank/export")
        self.assertEqual([e["by"] for e in exported["audit"] if e["event"] == "renamed"], ["admin", "admin"])


class DataDirectoryRightsTest(unittest.TestCase):
    """The same commands on a data directory no node runs on."""

    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="inferllama-rights-cli-")

    def tearDown(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = cli(*args, "--data-dir", self.data_dir)
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    def test_export_delete_and_restore_without_a_node(self):
        self.run_cli("user", "add", "erin", "--email", "erin@example.org")
        self.run_cli("key", "create", "erin", "--label", "ci")
        exported = json.loads(self.run_cli("user", "export", "erin").stdout)
        self.assertEqual(exported["user"]["email"], "erin@example.org")
        self.assertEqual([k["label"] for k in exported["keys"]], ["ci"])
        self.assertEqual([e["event"] for e in exported["audit"]], ["key_created", "exported"])
        self.assertIn("deleted user erin", self.run_cli("user", "delete", "erin").stdout)
        self.assertIn("deleted", self.run_cli("user", "list").stdout)
        self.assertIn("erin is deleted", self.run_cli("key", "create", "erin", code=1).stderr)
        self.run_cli("user", "restore", "erin")
        exported = json.loads(self.run_cli("user", "export", "erin").stdout)
        self.assertIsNone(exported["user"]["deleted"])
        self.assertIsNotNone(exported["keys"][0]["revoked"])
        self.assertIn("no user named", self.run_cli("user", "export", "nobody", code=1).stderr)

    def test_rename_without_a_node(self):
        self.run_cli("user", "add", "gus")
        self.run_cli("key", "create", "gus", "--label", "ci")
        self.assertIn("renamed user gus to gustav", self.run_cli("user", "rename", "gus", "gustav").stdout)
        self.assertEqual([k["label"] for k in json.loads(self.run_cli("user", "export", "gustav").stdout)["keys"]],
                         ["ci"])
        self.assertIn("stays reserved", self.run_cli("user", "add", "gus", code=1).stderr)
        self.assertIn("no user named", self.run_cli("user", "rename", "nobody", "x", code=1).stderr)


if __name__ == "__main__":
    unittest.main()
