"""Repo rules with the real binary and the fake Hub: a denied repo is the Hub's 404 RepoNotFound naming the rule on
every route and the fake Hub never hears of it; an allow before a deny wins; a pass repo streams its files (through
the Python client too) and nothing lands in the chunk store, nor in a torrent; the rules file is read again on SIGHUP
and on the admin API (and `inferllama rules`); a repo cached and seeded that a new rule denies is refused at once and
its torrent leaves the tracker; a reload with a bad rule keeps the rules in force."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
import bencode  # noqa: E402
from harness import BINARY, ROOT, HubAndNodeTest, clean_env, sha256, wait_until  # noqa: E402

ADMIN_KEY = "repo-rules-admin-key-0123456789"
MODEL = "acme/tiny-model"
PASSED = "acme/new-name"  # one LFS file, model.safetensors
GATED = "acme/gated-model"
DATASET = "acme/tiny-dataset"

# Runs in a huggingface_hub environment: downloads one file through the node, or reports the error it got.
CLIENT_SCRIPT = r'''
import hashlib, json, sys
from huggingface_hub import hf_hub_download
try:
    path = hf_hub_download(sys.argv[1], sys.argv[2])
    print(json.dumps({"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
'''


class RepoRulesTest(HubAndNodeTest):
    admin_key = ADMIN_KEY

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-rules-")
        cls.rules_file = os.path.join(cls.tmp, "repo-rules")
        cls.write_rules("")
        cls.node_args = ("--repo-rules-file", cls.rules_file)
        super().setUpClass()

    @classmethod
    def write_rules(cls, text: str) -> None:
        with open(cls.rules_file + ".new", "w") as f:
            f.write(text)
        os.replace(cls.rules_file + ".new", cls.rules_file)

    def admin(self, method: str, action: str, body: dict | None = None):
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        data = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            data = json.dumps(body or {}).encode()
        status, _, data = self.node.request(method, f"/api/inferllama/{action}", headers, data)
        return status, json.loads(data)

    def use_rules(self, text: str) -> dict:
        """The rules file holds `text`, and the node has read it (through the admin API)."""
        self.write_rules(text)
        status, shown = self.admin("POST", "rules/reload")
        self.assertEqual(status, 200, shown)
        return shown

    def hub_requests_naming(self, repo: str) -> list[str]:
        return [r for r in self.hub.stats()["hub_requests"] if repo in urllib.parse.unquote(r)]

    def chunk_files(self) -> set[str]:
        root = os.path.join(self.node.data_dir, "chunks")
        return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}

    def run_client(self, repo: str, path: str) -> dict:
        python = os.path.join(ROOT, ".venv", "hub1", "bin", "python")
        self.assertTrue(os.path.exists(python), f"{python} is missing: run scripts/install-deps.sh --test")
        home = tempfile.mkdtemp(dir=self.tmp)
        done = subprocess.run([python, "-c", CLIENT_SCRIPT, repo, path], capture_output=True, text=True, timeout=300,
                              env=clean_env({"HF_ENDPOINT": self.node.url, "HF_HOME": home,
                                             "HF_HUB_DISABLE_TELEMETRY": "1"}))
        self.assertEqual(done.returncode, 0, done.stderr[-4000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    def assert_refused(self, status: int, headers: dict, rule: str):
        self.assertEqual(status, 404)
        self.assertEqual(headers.get("x-error-code"), "RepoNotFound")
        self.assertIn(rule, headers.get("x-error-message", ""))

    def test_a_denied_repo_is_repo_not_found_naming_the_rule_and_the_hub_never_hears_of_it(self):
        self.use_rules(f"# the operator's list\ndeny models:{GATED}\n")
        self.hub.reset()
        rule = f"deny models:{GATED}"
        for method, path in [("HEAD", self.node.resolve_path(GATED, "main", "model.safetensors")),
                             ("GET", self.node.resolve_path(GATED, "main", "config.json")),
                             ("GET", f"/api/models/{GATED}"), ("GET", f"/api/models/{GATED}/revision/main"),
                             ("GET", f"/api/models/{GATED}/tree/main?recursive=true"),
                             ("GET", f"/api/models/{GATED}/torrent/main"), ("GET", f"/api/models/{GATED}/magnet/main"),
                             ("GET", f"/api/models/{GATED}/discussions"), ("GET", f"/{GATED}/raw/main/config.json")]:
            with self.subTest(method=method, path=path):
                status, headers, body = self.node.request(method, path)
                self.assert_refused(status, headers, rule)
                if method == "GET":
                    self.assertIn(rule, json.loads(body)["error"])
        status, headers, _ = self.node.request("POST", f"/api/models/{GATED}/paths-info/main",
                                               {"Content-Type": "application/x-www-form-urlencoded"},
                                               b"paths=config.json")
        self.assert_refused(status, headers, rule)
        # The Python client sees the Hub's own error for a missing repo.
        got = self.run_client(GATED, "config.json")
        self.assertEqual(got.get("error"), "RepositoryNotFoundError", got)
        self.assertIn(rule, got["message"])
        self.assertEqual(self.hub_requests_naming(GATED), [], "a denied repo is never asked upstream")
        self.assertGreaterEqual(self.node.metric(f'inferllama_repo_rule_refusals_total{{rule="{rule}"}}'), 11)
        # Other repos go on as before.
        status, _, _ = self.node.request("GET", self.node.resolve_path(MODEL, "main", "config.json"))
        self.assertEqual(status, 200)

    def test_an_allow_before_a_deny_wins_the_first_matching_rule_decides(self):
        self.use_rules(f"allow models:{MODEL}\ndeny models:acme/*\n")
        self.hub.reset()
        status, _, body = self.node.request("GET", self.node.resolve_path(MODEL, "main", "config.json"))
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), self.hub.files(MODEL)["config.json"]["sha256"])
        status, headers, _ = self.node.request("HEAD", self.node.resolve_path(PASSED, "main", "model.safetensors"))
        self.assert_refused(status, headers, "deny models:acme/*")
        status, _, _ = self.node.request("GET", f"/datasets/{DATASET}/resolve/main/README.md")
        self.assertEqual(status, 200, "a dataset no rule names is allowed")
        self.assertEqual(self.hub_requests_naming(PASSED), [])

    def test_a_pass_repo_streams_its_files_and_nothing_lands_in_the_store_or_a_torrent(self):
        self.use_rules(f"pass models:{PASSED}\n")
        expected = self.hub.files(PASSED)["model.safetensors"]
        chunks_before = self.chunk_files()
        bytes_before = self.node.metric("inferllama_pass_through_bytes_total")
        path = self.node.resolve_path(PASSED, "main", "model.safetensors")
        status, headers, body = self.node.request("GET", path)
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), expected["sha256"])
        self.assertEqual(headers.get("x-linked-etag", headers.get("etag", "")).strip('"'), expected["sha256"])
        status, headers, body = self.node.request("GET", path, {"Range": "bytes=1000-1999"})
        self.assertEqual(status, 206)
        self.assertEqual(len(body), 1000)
        self.assertEqual(headers["content-range"], f"bytes 1000-1999/{expected['size']}")
        # The Python client downloads it the same way.
        self.assertEqual(self.run_client(PASSED, "model.safetensors"), {"sha256": expected["sha256"]})
        self.assertEqual(self.chunk_files(), chunks_before, "a pass repo's bytes never enter the chunk store")
        staging = os.path.join(self.node.data_dir, "staging")
        self.assertEqual(os.listdir(staging) if os.path.isdir(staging) else [], [])
        self.assertGreaterEqual(self.node.metric("inferllama_pass_through_bytes_total") - bytes_before,
                                2 * expected["size"] + 1000)
        # Nothing is kept, so nothing is seeded, pinned or served from the store: each read asks the upstream.
        status, _, body = self.node.request("GET", f"/api/models/{PASSED}/torrent/main")
        self.assertEqual(status, 403)
        self.assertIn(b"without being kept", body)
        cdn_before = self.hub.stats()["requests"]["cdn_get"]
        status, _, body = self.node.request("GET", path)
        self.assertEqual((status, sha256(body)), (200, expected["sha256"]))
        self.assertGreater(self.hub.stats()["requests"]["cdn_get"], cdn_before)
        status, answer = self.admin("POST", "pin", {"repo": PASSED})
        self.assertEqual(status, 403, answer)
        self.assertIn(f"pass models:{PASSED}", answer["error"])

    def test_sighup_reads_the_rules_file_again(self):
        self.use_rules("")
        status, _, _ = self.node.request("GET", f"/datasets/{DATASET}/resolve/main/README.md")
        self.assertEqual(status, 200)
        reloads = self.node.metric('inferllama_repo_rules_reloads_total{result="ok"}')
        self.write_rules(f"deny datasets:{DATASET}\n")
        self.node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.node.metric('inferllama_repo_rules_reloads_total{result="ok"}') > reloads,
                   what="the rules read again after SIGHUP")
        self.assertEqual(self.node.metric("inferllama_repo_rules"), 1)
        status, headers, _ = self.node.request("GET", f"/datasets/{DATASET}/resolve/main/README.md")
        self.assert_refused(status, headers, f"deny datasets:{DATASET}")

    def test_the_admin_api_and_the_cli_show_and_reload_the_rules(self):
        shown = self.use_rules("allow models:acme/* scan=warn\npass datasets:*\n")
        self.assertEqual([r["rule"] for r in shown["rules"]], ["allow models:acme/* scan=warn", "pass datasets:*"])
        self.assertEqual(shown["rules"][0]["scan"], "warn")
        self.assertEqual(shown["rules"][1]["source"], f"repo_rules_file {self.rules_file} line 2")
        status, again = self.admin("GET", "rules")
        self.assertEqual((status, again["rules"]), (200, shown["rules"]))
        status, _, _ = self.node.request("GET", "/api/inferllama/rules")
        self.assertIn(status, (401, 403), "the rules are the admin's")
        # The CLI, beside the node through its admin socket.
        cli = subprocess.run([BINARY, "rules", "show", "--data-dir", self.node.data_dir], capture_output=True,
                             text=True, timeout=60, env=clean_env())
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertIn("allow models:acme/* scan=warn", cli.stdout)
        self.assertIn("pass datasets:*", cli.stdout)
        self.write_rules("deny spaces:*\n")
        cli = subprocess.run([BINARY, "rules", "reload", "--data-dir", self.node.data_dir, "--json"],
                             capture_output=True, text=True, timeout=60, env=clean_env())
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual([r["rule"] for r in json.loads(cli.stdout)["rules"]], ["deny spaces:*"])

    def test_a_cached_and_seeded_repo_a_new_rule_denies_stops_at_once(self):
        self.use_rules("")
        status, headers, _ = self.node.request("GET", f"/api/models/{MODEL}/torrent/main")
        self.assertEqual(status, 200)
        info_hash = bytes.fromhex(headers["x-inferllama-info-hash"])
        self.assertNotIn(b"failure reason", self.announce(info_hash))
        path = self.node.resolve_path(MODEL, "main", "config.json")
        self.assertEqual(self.node.request("HEAD", path)[0], 200)
        chunks_cached = self.chunk_files()

        self.use_rules(f"deny models:{MODEL}\n")
        status, headers, _ = self.node.request("HEAD", path)
        self.assert_refused(status, headers, f"deny models:{MODEL}")
        self.assert_refused(*self.node.request("GET", path)[:2], f"deny models:{MODEL}")
        self.assertIn(b"failure reason", self.announce(info_hash), "its torrent left the tracker")
        self.assertLess(len(self.chunk_files()), len(chunks_cached), "its stored files were released")

        # Allowed again: fetched from the Hub once more, and served.
        self.use_rules("")
        status, _, body = self.node.request("GET", path)
        self.assertEqual((status, sha256(body)), (200, self.hub.files(MODEL)["config.json"]["sha256"]))

    def announce(self, info_hash: bytes) -> dict:
        query = urllib.parse.urlencode({"info_hash": info_hash, "peer_id": b"-TT0001-abcdefghijkl", "port": 51413,
                                        "uploaded": 0, "downloaded": 0, "left": 100, "compact": 1})
        status, _, body = self.node.request("GET", f"/announce?{query}")
        self.assertEqual(status, 200)
        return bencode.decode(body)

    def test_a_reload_with_a_bad_rule_keeps_the_rules_in_force(self):
        self.use_rules(f"deny models:{GATED}\n")
        failed = self.node.metric('inferllama_repo_rules_reloads_total{result="failed"}')
        self.write_rules(f"deny models:{GATED}\nallow modls:acme/x\n")
        status, answer = self.admin("POST", "rules/reload")
        self.assertEqual(status, 400)
        self.assertIn("rule 2 (line 2, column 7): unknown repo type \"modls\"", answer["error"])
        self.assertIn("the 1 rules in force stay", answer["error"])
        self.assertEqual([r["rule"] for r in answer["rules"]["rules"]], [f"deny models:{GATED}"])
        self.assertEqual(self.node.metric('inferllama_repo_rules_reloads_total{result="failed"}'), failed + 1)
        status, headers, _ = self.node.request("HEAD", self.node.resolve_path(GATED, "main", "config.json"))
        self.assert_refused(status, headers, f"deny models:{GATED}")
        with open(self.node.log_path, errors="replace") as f:
            self.assertIn("repo rules not reloaded", f.read())
        cli = subprocess.run([BINARY, "rules", "reload", "--data-dir", self.node.data_dir], capture_output=True,
                             text=True, timeout=60, env=clean_env())
        self.assertEqual(cli.returncode, 1)
        self.assertIn("unknown repo type", cli.stderr)


class RepoRulesAtStartTest(unittest.TestCase):
    def test_a_bad_rule_stops_the_start_and_names_the_rule(self):
        with tempfile.TemporaryDirectory() as data:
            done = subprocess.run([BINARY, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
                                   "--repo-rules", "allow models:acme/*, deny acme/x/y"],
                                  capture_output=True, text=True, timeout=60, env=clean_env())
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("repo_rules rule 2 (line 1, column 33): a repo name is owner/name", done.stderr)


if __name__ == "__main__":
    unittest.main()
