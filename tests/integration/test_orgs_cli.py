"""The organisation commands (org add, remove, list, members, member add/remove) and the namespace rule
they share with `user add`: a user's name and an organisation's are namespaces the node hosts, so neither
takes the other's, nor a Hub namespace the node has cached repos of unless told to with --force. On a data
directory no node runs on, through the admin socket of the node that runs on it, and through a running
node's admin API with --node and the admin key."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY, admin  # noqa: E402
from harness import FakeHub, Node  # noqa: E402
from test_accounts_cli import cli, table  # noqa: E402

CACHED_NAMESPACE = "acme"  # every repo of the fake Hub is in it


class Commands:
    """The organisation commands and their refusals, however `run_cli` reaches the node's records."""

    http = False  # refusals name their HTTP status when asked over HTTP

    def run_cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def status(self, status: int) -> str:
        return f" (HTTP {status})" if self.http else ""

    def check_organisations_and_their_members(self):
        self.run_cli("user", "add", "alice")  # on a data directory: the first command that writes creates it
        self.run_cli("user", "add", "bob")
        self.assertEqual(self.run_cli("org", "list").stdout, "no organisations\n")
        self.assertEqual(self.run_cli("org", "add", "umbrella").stdout, "added organisation umbrella\n")
        self.assertEqual(self.run_cli("org", "add", "initech").stdout, "added organisation initech\n")
        self.assertIn("organisation umbrella exists" + self.status(409),
                      self.run_cli("org", "add", "umbrella", code=1).stderr)
        self.assertIn('invalid organisation name "bad:name"', self.run_cli("org", "add", "bad:name", code=1).stderr)
        self.assertEqual(self.run_cli("org", "members", "umbrella").stdout, "umbrella has no members\n")

        self.assertEqual(self.run_cli("org", "member", "add", "umbrella", "alice").stdout,
                         "alice is a member of umbrella with the role read\n")
        self.assertEqual(self.run_cli("org", "member", "add", "umbrella", "bob", "--role", "write").stdout,
                         "bob is a member of umbrella with the role write\n")
        self.assertEqual(self.run_cli("org", "member", "add", "umbrella", "alice", "--role", "admin").stdout,
                         "alice is a member of umbrella with the role admin\n")
        self.assertIn('no user named "nobody"' + self.status(404),
                      self.run_cli("org", "member", "add", "umbrella", "nobody", code=1).stderr)
        self.assertIn('no organisation named "nowhere"' + self.status(404),
                      self.run_cli("org", "member", "add", "nowhere", "alice", code=1).stderr)
        self.assertIn("--role", self.run_cli("org", "member", "add", "umbrella", "bob", "--role", "owner",
                                             code=2).stderr)

        members = table(self.run_cli("org", "members", "umbrella").stdout)
        self.assertEqual([(m["USER"], m["ROLE"]) for m in members], [("alice", "admin"), ("bob", "write")])
        orgs = table(self.run_cli("org", "list").stdout)
        self.assertEqual([(o["NAME"], o["MEMBERS"]) for o in orgs], [("initech", "0"), ("umbrella", "2")])

        self.assertEqual(self.run_cli("org", "member", "remove", "umbrella", "bob").stdout,
                         "removed bob from umbrella\n")
        self.assertIn('"bob" is no member of umbrella' + self.status(404),
                      self.run_cli("org", "member", "remove", "umbrella", "bob", code=1).stderr)
        self.assertEqual([m["USER"] for m in table(self.run_cli("org", "members", "umbrella").stdout)], ["alice"])

        self.assertEqual(self.run_cli("org", "remove", "umbrella").stdout, "removed organisation umbrella\n")
        self.assertIn('no organisation named "umbrella"' + self.status(404),
                      self.run_cli("org", "remove", "umbrella", code=1).stderr)
        self.assertIn('no organisation named "umbrella"', self.run_cli("org", "members", "umbrella", code=1).stderr)
        self.assertEqual([o["NAME"] for o in table(self.run_cli("org", "list").stdout)], ["initech"])

    def check_users_and_organisations_never_share_a_name(self):
        self.run_cli("user", "add", "ursula")
        for force in ([], ["--force"]):
            refused = self.run_cli("org", "add", "ursula", *force, code=1)
            self.assertIn('a user is named "ursula": a user\'s name is their own namespace' + self.status(409),
                          refused.stderr)
        self.run_cli("org", "add", "hooli")
        for force in ([], ["--force"]):
            refused = self.run_cli("user", "add", "hooli", *force, code=1)
            self.assertIn('an organisation is named "hooli": a user\'s name is their own namespace' +
                          self.status(409), refused.stderr)
        self.assertNotIn("hooli", [u["NAME"] for u in table(self.run_cli("user", "list").stdout)])
        self.assertNotIn("ursula", [o["NAME"] for o in table(self.run_cli("org", "list").stdout)])

    def check_a_cached_namespace_is_taken_only_with_force(self):
        """The node has cached repos of CACHED_NAMESPACE."""
        for command in (["org", "add", CACHED_NAMESPACE], ["user", "add", CACHED_NAMESPACE]):
            refused = self.run_cli(*command, code=1)
            self.assertIn(f"the node has cached repos of the Hub's namespace \"{CACHED_NAMESPACE}\": pass --force",
                          refused.stderr)
            self.assertIn("the cached repos of that namespace will no longer be served" + self.status(409),
                          refused.stderr)
        self.assertNotIn(CACHED_NAMESPACE, self.run_cli("org", "list").stdout)
        self.assertNotIn(CACHED_NAMESPACE, self.run_cli("user", "list").stdout)
        self.assertEqual(self.run_cli("org", "add", CACHED_NAMESPACE, "--force").stdout,
                         f"added organisation {CACHED_NAMESPACE}\n")
        self.assertIn(CACHED_NAMESPACE, [o["NAME"] for o in table(self.run_cli("org", "list").stdout)])
        # Now it is an organisation's: no user takes it, forced or not.
        self.assertIn(f'an organisation is named "{CACHED_NAMESPACE}"',
                      self.run_cli("user", "add", CACHED_NAMESPACE, "--force", code=1).stderr)


class DataDirectoryTest(Commands, unittest.TestCase):
    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="inferllama-orgs-cli-")

    def tearDown(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = cli(*args, "--data-dir", self.data_dir)
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    def test_organisations_and_their_members(self):
        self.check_organisations_and_their_members()

    def test_users_and_organisations_never_share_a_name(self):
        self.check_users_and_organisations_never_share_a_name()

    def test_reading_commands_create_no_data_directory(self):
        for command in (["org", "list"], ["org", "members", "umbrella"]):
            self.assertIn("no node data in", self.run_cli(*command, code=1).stderr)
        self.assertEqual(os.listdir(self.data_dir), [])

    def test_usage_errors_exit_2(self):
        self.run_cli("org", code=2)
        self.run_cli("org", "member", code=2)
        self.run_cli("org", "member", "add", "umbrella", code=2)
        self.run_cli("org", "add", code=2)

    def test_a_namespace_cached_by_the_node_and_its_admin_socket(self):
        with FakeHub() as hub, Node(hub.url, self.data_dir) as node:
            pulled = cli("pull", f"{CACHED_NAMESPACE}/tiny-model", "--node", node.url, "--quiet")
            self.assertEqual(pulled.returncode, 0, pulled.stderr)
            # Beside the node: through its admin socket.
            refused = self.run_cli("org", "add", CACHED_NAMESPACE, code=1)
            self.assertIn("pass --force", refused.stderr)
            self.assertIn("(HTTP 409)", refused.stderr)
            self.run_cli("org", "add", "umbrella")
            self.run_cli("user", "add", "alice")
            self.run_cli("org", "member", "add", "umbrella", "alice", "--role", "write")
        # The node is gone: the data directory itself answers the same.
        self.assertEqual([(m["USER"], m["ROLE"]) for m in table(self.run_cli("org", "members", "umbrella").stdout)],
                         [("alice", "write")])
        self.check_a_cached_namespace_is_taken_only_with_force()


class NodeTest(Commands, unittest.TestCase):
    """The same commands through a running node's admin API."""

    http = True

    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.data_dir = tempfile.mkdtemp(prefix="inferllama-orgs-node-")
        cls.node = Node(cls.hub.url, cls.data_dir, admin_key=ADMIN_KEY).start()
        pulled = cli("pull", f"{CACHED_NAMESPACE}/tiny-model", "--node", cls.node.url, "--quiet")
        assert pulled.returncode == 0, pulled.stderr

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.hub.stop()
        shutil.rmtree(cls.data_dir, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = cli(*args, "--node", self.node.url, env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    # One node for the class: each test uses names of its own.
    def test_1_organisations_and_their_members(self):
        self.check_organisations_and_their_members()

    def test_2_users_and_organisations_never_share_a_name(self):
        self.check_users_and_organisations_never_share_a_name()

    def test_3_a_cached_namespace_is_taken_only_with_force(self):
        self.check_a_cached_namespace_is_taken_only_with_force()

    def test_the_admin_api(self):
        self.assertEqual(admin(self.node, "POST", "orgs", {"name": "globex"})[0], 201)
        self.assertEqual(admin(self.node, "GET", "orgs/globex/members"), (200, {"name": "globex", "members": []}))
        status, _, _ = self.node.request("PUT", "/api/inferllama/orgs/globex/members/x",
                                         {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"},
                                         b'{"role": "read"}')
        self.assertEqual(status, 415)
        self.assertEqual(admin(self.node, "PATCH", "orgs")[0], 405)
        self.assertEqual(admin(self.node, "GET", "orgs", key="not-the-admin-key")[0], 401)
        self.assertEqual(admin(self.node, "DELETE", "orgs/globex"), (200, {"name": "globex"}))

    def test_the_admin_key_is_needed(self):
        done = cli("org", "list", "--node", self.node.url, env={"INFERLLAMA_ADMIN_KEY": "not-the-admin-key"})
        self.assertEqual(done.returncode, 1)
        self.assertIn("HTTP 401", done.stderr)


if __name__ == "__main__":
    unittest.main()
