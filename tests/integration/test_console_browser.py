"""The web console in a real headless Chromium (Debian's `chromium`, driven by playwright-core from
tests/js): sign-up -> confirm the address -> sign-in -> create a key -> use it with the Python client -> see
the usage -> upload a model in the browser -> download it with the Python client -> change the user name ->
export -> delete the account, and an operator's pages (tests/js/console.mjs walks the pages). Screenshots of the main pages are
saved to docs/screenshots/, which the README links.

Needs node, playwright-core (npm ci in tests/js), /usr/bin/chromium and the hub2 virtual environment;
skipped otherwise.

Run:  cd tests/integration && python3 -m unittest -v test_console_browser
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

import harness
from accounts import admin
from harness import free_port
from smtp_server import MailNodeCase
from test_console_api import set_password

JS_DIR = os.path.join(harness.ROOT, "tests", "js")
CONSOLE_JS = os.path.join(JS_DIR, "console.mjs")
PLAYWRIGHT = os.path.join(JS_DIR, "node_modules", "playwright-core", "package.json")
CHROMIUM = "/usr/bin/chromium"
PYTHON = os.path.join(harness.ROOT, ".venv", "hub2", "bin", "python")
SHOTS = os.path.join(harness.ROOT, "docs", "screenshots")
NODEJS = shutil.which("node")


class ConsoleBrowserTest(MailNodeCase):
    @classmethod
    def node_args(cls) -> list[str]:
        # The node names itself as the browser reaches it: mailed links and upload URLs use public_url.
        # localhost, not 127.0.0.1: Chromium keeps Secure cookies for http://localhost (a secure context).
        port = free_port()
        cls.url = f"http://localhost:{port}"
        return ["--listen", f"127.0.0.1:{port}", "--public-url", cls.url, "--usage-flush-interval", "1s",
                "--tracker-open", "true"]

    @classmethod
    def setUpClass(cls):
        for needed, what in ((NODEJS, "node"), (os.path.exists(PLAYWRIGHT), "playwright-core (npm ci in tests/js)"),
                             (os.path.exists(CHROMIUM), CHROMIUM), (os.path.exists(PYTHON), PYTHON)):
            if not needed:
                raise unittest.SkipTest(f"{what} is missing")
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-console-")
        super().setUpClass()
        try:
            status, _ = admin(cls.node, "POST", "users", {"name": "olivia", "email": "olivia@example.org"})
            assert status == 201
            set_password(cls.node, "olivia", "operator passphrase 1")
            assert admin(cls.node, "POST", "users/olivia/admin", {"admin": True})[0] == 200
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_a_persons_whole_journey_and_the_operators_pages(self):
        os.makedirs(SHOTS, exist_ok=True)
        # A peer in a swarm, for the operator's page to list.
        query = urllib.parse.urlencode({"info_hash": bytes(range(20)), "peer_id": b"-XX0001-" + b"q" * 12,
                                        "port": 6881, "uploaded": 0, "downloaded": 0, "left": 10})
        self.assertEqual(self.node.request("GET", "/announce?" + query)[0], 200)
        url = self.url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "INFERLLAMA_"))}
        run = subprocess.run([NODEJS, CONSOLE_JS, "--url", url, "--user", "paula", "--maildir", self.smtp.maildir,
                              "--python", PYTHON, "--shots", SHOTS, "--work", self.tmp, "--model", "acme/tiny-model",
                              "--file", "config.json", "--operator", "olivia",
                              "--operator-password", "operator passphrase 1"],
                             capture_output=True, text=True, timeout=600, env=env, cwd=JS_DIR)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        self.assertEqual([c["name"] for c in seen["cookies"]], ["inferllama_csrf", "inferllama_session"])
        self.assertTrue(all(c["secure"] and c["sameSite"] == "Lax" for c in seen["cookies"]), seen["cookies"])
        self.assertEqual(seen["downloaded_sha256"], seen["uploaded_sha256"])
        self.assertEqual(seen["problems"], [])
        self.assertEqual(seen["after_delete_cookies"], 0)
        self.assertTrue(seen["key_refused_after_delete"])
        self.assertGreaterEqual(seen["operator_repos"], 1)
        for name in ("sign-in", "profile", "keys", "usage", "model", "settings", "operator"):
            self.assertTrue(os.path.getsize(os.path.join(SHOTS, f"{name}.png")) > 1000, name)
        # The rename: the model downloads under the new name only; the export names the account by it.
        self.assertTrue(seen["old_name_refused"])
        self.assertEqual(seen["renamed_sha256"], seen["uploaded_sha256"])
        self.assertEqual(seen["export"]["user"], "paula-renamed")
        # The operator sees the swarm announced above, with its peer.
        self.assertGreaterEqual(seen["operator_swarms"], 1)
        self.assertGreaterEqual(seen["operator_peers"], 1)


if __name__ == "__main__":
    unittest.main()
