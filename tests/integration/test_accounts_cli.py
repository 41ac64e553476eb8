"""The account commands (user, key, usage): on a data directory no node runs on, through the admin
socket of the node that runs on it, and through a running node's admin API with --node and the admin key
(INFERLLAMA_ADMIN_KEY or --admin-key-file; never on the command line)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY, admin, bearer, usage_after  # noqa: E402
from harness import BINARY, FakeHub, Node, clean_env, wait_until  # noqa: E402

REPO = "acme/tiny-model"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def cli(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60, env=clean_env(env),
                          input=stdin)


def files_holding(data_dir: str, secret: str) -> list[str]:
    """The files under `data_dir` whose bytes contain `secret`."""
    found = []
    for root, _, names in os.walk(data_dir):
        for name in names:
            if not os.path.isfile(os.path.join(root, name)):
                continue  # a running node's admin socket
            with open(os.path.join(root, name), "rb") as f:
                if secret.encode() in f.read():
                    found.append(os.path.join(root, name))
    return found


def table(stdout: str) -> list[dict]:
    """The rows of an aligned table, each cell cut at its column's title: a misaligned cell breaks."""
    header, *lines = stdout.splitlines()
    titles = re.findall(r"\S+(?: \S+)*", header)
    starts = [header.index(t) for t in titles]
    rows = []
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        for a in starts[1:]:
            assert line[a - 2:a] == "  ", (line, a)
        rows.append(dict(zip(titles, cells)))
    return rows


class DataDirectoryTest(unittest.TestCase):
    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="inferllama-accounts-cli-")

    def tearDown(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0, stdin: str = "") -> subprocess.CompletedProcess:
        done = cli(*args, "--data-dir", self.data_dir, stdin=stdin)
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    def test_users_are_added_listed_disabled_and_enabled(self):
        self.assertEqual(self.run_cli("user", "add", "alice", "--email", "alice@example.org").stdout,
                         "added user alice\n")
        self.run_cli("user", "add", "bob")
        taken = self.run_cli("user", "add", "alice", code=1)
        self.assertIn("alice exists", taken.stderr)
        self.assertIn("invalid user name", self.run_cli("user", "add", "no:colons", code=1).stderr)
        self.assertIn("invalid email", self.run_cli("user", "add", "carol", "--email", "nope", code=1).stderr)

        users = table(self.run_cli("user", "list").stdout)
        self.assertEqual([u["NAME"] for u in users], ["alice", "bob"])
        self.assertEqual(users[0]["EMAIL"], "alice@example.org")
        self.assertEqual((users[0]["STATUS"], users[0]["HUB TOKEN"]), ("enabled", "node's"))
        self.assertRegex(users[1]["CREATED"], TIME)
        self.assertRegex(users[1]["PASSKEY"], r"^[0-9a-f]{32}$")

        self.assertIn("disabled user bob", self.run_cli("user", "disable", "bob").stdout)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[1]["STATUS"], "disabled")
        self.assertIn("enabled user bob", self.run_cli("user", "enable", "bob").stdout)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[1]["STATUS"], "enabled")
        self.assertIn('no user named "nobody"', self.run_cli("user", "disable", "nobody", code=1).stderr)

        old = users[1]["PASSKEY"]
        fresh = re.search(r"new passkey of bob: ([0-9a-f]{32})", self.run_cli("user", "passkey", "bob").stdout).group(1)
        self.assertNotEqual(fresh, old)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[1]["PASSKEY"], fresh)

    def test_a_key_is_shown_once_and_stored_only_as_its_hash(self):
        self.run_cli("user", "add", "alice")
        created = self.run_cli("key", "create", "alice", "--label", "laptop").stdout
        secrets = [line for line in created.splitlines() if line.startswith("il_")]
        self.assertEqual(len(secrets), 1, created)
        secret = secrets[0]
        self.assertGreaterEqual(len(secret), 40)
        self.assertIn("will not be shown again", created)
        key_id = re.search(r"created key (key_[0-9a-f]{16}) for alice", created).group(1)
        self.assertEqual(files_holding(self.data_dir, secret), [])
        self.assertNotEqual(files_holding(self.data_dir, secret[:8]), [])  # its hint is stored, where we looked

        listed = self.run_cli("key", "list", "alice").stdout
        self.assertNotIn(secret, listed)
        keys = table(listed)
        self.assertEqual(len(keys), 1)
        self.assertEqual((keys[0]["ID"], keys[0]["LABEL"], keys[0]["HINT"], keys[0]["REVOKED"]),
                         (key_id, "laptop", secret[:8] + "...", "-"))

        self.assertEqual(self.run_cli("key", "revoke", key_id).stdout, f"revoked key {key_id} of alice\n")
        self.assertRegex(table(self.run_cli("key", "list", "alice").stdout)[0]["REVOKED"], TIME)
        self.assertIn("no key with id", self.run_cli("key", "revoke", "key_0000000000000000", code=1).stderr)
        self.assertIn('no user named "nobody"', self.run_cli("key", "create", "nobody", code=1).stderr)
        self.assertEqual(self.run_cli("key", "list", "alice").returncode, 0)
        self.run_cli("user", "add", "bob")
        self.assertEqual(self.run_cli("key", "list", "bob").stdout, "bob has no keys\n")

    def test_a_hub_token_is_read_from_stdin_and_sealed(self):
        self.run_cli("user", "add", "alice")
        done = self.run_cli("user", "hub-token", "alice", stdin="hf_from_stdin_0123\n")
        self.assertIn("their own Hub token", done.stdout)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["HUB TOKEN"], "own")
        self.assertEqual(files_holding(self.data_dir, "hf_from_stdin_0123"), [])
        self.assertIn("the node's Hub token", self.run_cli("user", "hub-token", "alice", stdin="\n").stdout)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["HUB TOKEN"], "node's")
        on_the_line = self.run_cli("user", "hub-token", "alice", "hf_on_the_line", code=2)
        self.assertIn("give it on stdin", on_the_line.stderr)
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["HUB TOKEN"], "node's")
        self.assertIn("visible ASCII", self.run_cli("user", "hub-token", "alice", stdin="has space\n", code=1).stderr)

    def test_a_password_is_read_from_stdin_and_stored_hashed(self):
        self.run_cli("user", "add", "alice")
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["PASSWORD"], "-")
        # The line as given is the password, spaces included; only its newline is dropped.
        done = self.run_cli("user", "password", "alice", stdin=" correct horse battery \n")
        self.assertEqual(done.stdout, "password set for alice\n")
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["PASSWORD"], "set")
        self.assertEqual(files_holding(self.data_dir, "correct horse battery"), [])
        self.assertNotEqual(files_holding(self.data_dir, "$argon2id$v=19$m=65536,t=2,p=1$"), [])
        self.assertIn("too short", self.run_cli("user", "password", "alice", stdin="short\n", code=1).stderr)
        self.assertIn('no user named "nobody"',
                      self.run_cli("user", "password", "nobody", stdin="correct horse battery\n", code=1).stderr)
        self.run_cli("user", "password", "alice", "on-the-command-line", code=2)

    def test_usage_of_an_empty_directory(self):
        # A directory without a node's data is no data directory: reading commands say so and create nothing.
        self.assertIn("no node data in", self.run_cli("usage", code=1).stderr)
        self.assertEqual(os.listdir(self.data_dir), [])
        self.run_cli("user", "add", "alice")  # a command that writes creates the data
        self.assertEqual(self.run_cli("usage").stdout, "no usage recorded\n")
        self.assertEqual(json.loads(self.run_cli("usage", "--format", "json").stdout),
                         {"usage": [], "token_size": 1 << 20})
        self.assertEqual(self.run_cli("usage", "--format", "csv").stdout,
                         "day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream\n")
        self.assertIn("YYYY-MM-DD", self.run_cli("usage", "--since", "last week", code=1).stderr)
        self.assertIn('no user named "nobody"', self.run_cli("usage", "nobody", code=1).stderr)
        self.assertEqual([u["NAME"] for u in table(self.run_cli("user", "list").stdout)], ["alice"])

    def test_usage_errors_exit_2(self):
        self.run_cli("usage", "--format", "xml", code=2)
        self.run_cli("user", code=2)
        self.run_cli("key", "create", code=2)
        done = cli("user", "list", "--node", "http://127.0.0.1:1", "--data-dir", self.data_dir)
        self.assertEqual(done.returncode, 2, done.stderr)

    def test_a_directory_in_use_by_a_running_node_is_asked_through_its_admin_socket(self):
        with FakeHub() as hub, Node(hub.url, self.data_dir):
            self.assertEqual(self.run_cli("user", "add", "uma").stdout, "added user uma\n")
            self.assertEqual([u["NAME"] for u in table(self.run_cli("user", "list").stdout)], ["uma"])
        # The node is gone (and its socket with it): the directory itself answers the same.
        self.assertEqual([u["NAME"] for u in table(self.run_cli("user", "list").stdout)], ["uma"])

    def test_a_directory_in_use_by_a_node_without_admin_socket_is_refused(self):
        with FakeHub() as hub, Node(hub.url, self.data_dir, "--admin-socket", "") as node:
            done = self.run_cli("user", "list", code=1)
            self.assertIn(f"a node (pid {node.proc.pid}) runs on {self.data_dir} without an admin socket "
                          "(admin_socket is off): ask it over HTTP(S) with --node URL and its admin key "
                          "(INFERLLAMA_ADMIN_KEY or --admin-key-file)", done.stderr)

    def test_reading_commands_create_no_data_directory(self):
        elsewhere = tempfile.mkdtemp(prefix="inferllama-elsewhere-")
        try:
            for command in (["user", "list"], ["key", "list", "alice"], ["usage"], ["ls"]):
                done = subprocess.run([BINARY, *command], capture_output=True, text=True, timeout=60,
                                      env=clean_env(), cwd=elsewhere)
                self.assertEqual(done.returncode, 1, (command, done.stdout, done.stderr))
                self.assertIn("no node data in ./data: run this in the folder the node runs in, or give its "
                              "--data-dir or --config", done.stderr)
            self.assertEqual(os.listdir(elsewhere), [])
        finally:
            shutil.rmtree(elsewhere, ignore_errors=True)

    def test_secrets_on_the_command_line_are_refused(self):
        done = cli("user", "list", "--node", "http://127.0.0.1:1", "--admin-key", ADMIN_KEY)
        self.assertEqual(done.returncode, 2)
        self.assertIn("--admin-key would show the key to every user of the machine (ps): give it as "
                      "--admin-key-file FILE or the environment variable INFERLLAMA_ADMIN_KEY", done.stderr)


class NodeTest(unittest.TestCase):
    """The same commands through a running node's admin API."""

    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.data_dir = tempfile.mkdtemp(prefix="inferllama-accounts-node-")
        cls.node = Node(cls.hub.url, cls.data_dir, admin_key=ADMIN_KEY).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.hub.stop()
        shutil.rmtree(cls.data_dir, ignore_errors=True)

    def run_cli(self, *args: str, code: int = 0, key: str = ADMIN_KEY) -> subprocess.CompletedProcess:
        done = cli(*args, "--node", self.node.url, env={"INFERLLAMA_ADMIN_KEY": key})
        self.assertEqual(done.returncode, code, (args, done.stdout, done.stderr))
        return done

    def test_users_keys_and_usage_through_the_node(self):
        self.assertEqual(self.run_cli("user", "add", "nina", "--email", "nina@example.org").stdout,
                         "added user nina\n")
        self.assertIn("nina exists (HTTP 409)", self.run_cli("user", "add", "nina", code=1).stderr)
        created = self.run_cli("key", "create", "nina", "--label", "ci").stdout
        secret = next(line for line in created.splitlines() if line.startswith("il_"))
        key_id = re.search(r"created key (key_[0-9a-f]{16})", created).group(1)
        self.assertEqual(self.node.request("GET", self.node.resolve_path(REPO, "main", "config.json"),
                                           bearer(secret))[0], 200)
        usage_after(self.node, secret, 1)  # recorded just after its answer

        rows = table(self.run_cli("usage", "nina").stdout.rsplit("\n", 2)[0])
        self.assertEqual([(r["USER"], r["REPO"], r["REQUESTS"]) for r in rows], [("nina", "model/" + REPO, "1")])
        as_json = json.loads(self.run_cli("usage", "nina", "--format", "json").stdout)
        self.assertEqual(as_json["token_size"], 1 << 20)
        self.assertEqual(as_json["usage"][0]["tokens"], 1)
        csv = self.run_cli("usage", "nina", "--format", "csv").stdout.splitlines()
        self.assertEqual(csv[0], "day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream")
        self.assertTrue(csv[1].endswith(f",nina,model/{REPO},1,1,{as_json['usage'][0]['bytes_from_cache']},"
                                        f"{as_json['usage'][0]['bytes_from_upstream']}"), csv)
        # A user's own key shows their own usage, and nobody else's.
        self.assertEqual(len(table(self.run_cli("usage", key=secret).stdout.rsplit("\n", 2)[0])), 1)
        self.assertIn("HTTP 403", self.run_cli("usage", "anon:127.0.0.1", key=secret, code=1).stderr)

        self.assertEqual(table(self.run_cli("key", "list", "nina").stdout)[0]["ID"], key_id)
        self.run_cli("key", "revoke", key_id)
        self.assertEqual(self.node.request("GET", self.node.resolve_path(REPO, "main", "config.json"),
                                           bearer(secret))[0], 401)
        self.run_cli("user", "disable", "nina")
        self.assertEqual(table(self.run_cli("user", "list").stdout)[0]["STATUS"], "disabled")

    def test_the_admin_key_is_needed_and_taken_from_the_environment_or_a_file(self):
        self.assertIn("HTTP 401", self.run_cli("user", "list", key="not-the-admin-key", code=1).stderr)
        done = cli("user", "add", "olga", env={"INFERLLAMA_NODE": self.node.url, "INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
        self.assertEqual(done.returncode, 0, done.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".key") as key_file:
            key_file.write(ADMIN_KEY + "\n")
            key_file.flush()
            done = cli("user", "list", "--node", self.node.url, "--admin-key-file", key_file.name)
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn("olga", [u["NAME"] for u in table(done.stdout)])
            twice = cli("user", "list", "--node", self.node.url, "--admin-key-file", key_file.name,
                        env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
            self.assertEqual(twice.returncode, 2)
            self.assertIn("the admin key is given twice", twice.stderr)

    def test_an_unreachable_node(self):
        done = cli("user", "list", "--node", "http://127.0.0.1:1", env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY})
        self.assertEqual(done.returncode, 1)
        self.assertIn("cannot reach the node at http://127.0.0.1:1", done.stderr)


class PasswordThroughTheNodeTest(unittest.TestCase):
    """`user password` against a running node that logs at debug level, with its access log on stdout."""

    def test_a_password_is_set_and_never_shown_or_logged(self):
        password, short = "correct horse battery staple", "tiny pass"
        key = {"INFERLLAMA_ADMIN_KEY": ADMIN_KEY}
        with FakeHub() as hub, Node(hub.url, None, "--log-level", "debug", "--access-log", "-",
                                    admin_key=ADMIN_KEY) as node:
            self.assertEqual(cli("user", "add", "alice", "--node", node.url, env=key).returncode, 0)
            done = cli("user", "password", "alice", "--node", node.url, env=key, stdin=password + "\n")
            self.assertEqual((done.returncode, done.stdout), (0, "password set for alice\n"), done.stderr)
            status, answer = admin(node, "GET", "users")
            self.assertEqual(status, 200)
            self.assertEqual(answer["users"][0]["has_password"], True)
            self.assertNotIn("argon2", json.dumps(answer))

            refused = cli("user", "password", "alice", "--node", node.url, env=key, stdin=short + "\n")
            self.assertEqual(refused.returncode, 1)
            self.assertIn("the password is too short: at least 10 bytes (HTTP 400)", refused.stderr)

            def both_logged():  # then whatever the node logs of the two requests has been written
                with open(node.stdout_path, errors="replace") as f:
                    return f.read().count("/api/inferllama/users/alice/password") == 2
            wait_until(both_logged, what="both password requests in the access log")
            for log in (node.log_path, node.stdout_path):
                with open(log, errors="replace") as f:
                    text = f.read()
                for secret in (password, short, "argon2"):
                    self.assertNotIn(secret, text, log)


class BothWaysTest(unittest.TestCase):
    def test_the_node_and_its_data_directory_answer_alike(self):
        data_dir = tempfile.mkdtemp(prefix="inferllama-accounts-both-")
        try:
            self.assertEqual(cli("user", "add", "pat", "--data-dir", data_dir).returncode, 0)
            with FakeHub() as hub, Node(hub.url, data_dir, admin_key=ADMIN_KEY) as node:
                remote = ["--node", node.url]
                key = {"INFERLLAMA_ADMIN_KEY": ADMIN_KEY}
                self.assertEqual(cli("user", "add", "quinn", *remote, env=key).returncode, 0)
                created = cli("key", "create", "quinn", *remote, env=key).stdout
                secret = next(line for line in created.splitlines() if line.startswith("il_"))
                node.request("GET", node.resolve_path(REPO, "main", "config.json"), bearer(secret))
                usage_after(node, secret, 1)  # recorded just after its answer
                through_node = [cli(*command, *remote, env=key).stdout for command in
                                (["user", "list"], ["key", "list", "quinn"], ["usage", "quinn"],
                                 ["usage", "--format", "csv"])]
            # The node flushed its usage when it stopped: the data directory shows the same.
            in_directory = [cli(*command, "--data-dir", data_dir).stdout for command in
                            (["user", "list"], ["key", "list", "quinn"], ["usage", "quinn"],
                             ["usage", "--format", "csv"])]
            self.assertEqual(through_node, in_directory)
            self.assertEqual([u["NAME"] for u in table(in_directory[0])], ["pat", "quinn"])
            self.assertEqual(files_holding(data_dir, secret), [])
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
