"""Good manners toward the Hub. While the fake Hub throttles the node (429 with Retry-After and RateLimit), the
node sends it next to nothing: its clients (curl, the Python huggingface_hub client) get 503 with a Retry-After
that says when, what the node holds is still served, and after the window every file downloads; the metrics
count one episode and the log tells it once. With several node tokens (upstream_tokens_file) requests about
public repos are spread over them, one token per repo, and a token the Hub throttles is passed over until
every one is."""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, ROOT, clean_env, sha256, wait_until  # noqa: E402

MODEL = "acme/tiny-model"
WINDOW = 15  # seconds the fake Hub throttles the node
PYTHON = os.path.join(ROOT, ".venv", "hub1", "bin", "python")
WEIGHTS = "nested/deep/dir/weights.bin"

# huggingface_hub (1.x) during the window. It imports first and says "ready", then waits for a line on stdin,
# so the window is not spent starting Python. model_info does not retry: its 503 and Retry-After are reported.
# hf_hub_download retries a 503 after the Retry-After it was told (plus a second), which its log says: the
# waits are read from there, and the download must succeed once the window is over.
CLIENT_IN_WINDOW = r'''
import hashlib, json, logging, re, sys, time
from huggingface_hub import HfApi, hf_hub_download

waits = []
class Waits(logging.Handler):
    def emit(self, record):
        found = re.search(r"Waiting ([0-9.]+)s", record.getMessage())
        if found:
            waits.append(float(found.group(1)) - 1)  # the client sleeps Retry-After + 1 s
logging.getLogger("huggingface_hub").addHandler(Waits())
print("ready", flush=True)
sys.stdin.readline()

repo = sys.argv[1]
try:
    HfApi().model_info(repo)
    info = {"status": 200}
except Exception as error:
    response = getattr(error, "response", None)
    info = {"status": getattr(response, "status_code", None), "error": repr(error),
            "retry_after": response.headers.get("retry-after") if response is not None else None,
            "message": response.headers.get("x-error-message") if response is not None else None}
started = time.monotonic()
path = hf_hub_download(repo, "nested/deep/dir/weights.bin")
print(json.dumps({"info": info, "waits": waits, "download_seconds": time.monotonic() - started,
                  "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}))
'''


def curl(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET with curl: status, headers (lower-case names) and body."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = os.path.join(tmp, "head"), os.path.join(tmp, "body")
        done = subprocess.run(["curl", "-sS", "--max-time", "60", "-D", head, "-o", body, url],
                              capture_output=True, text=True, timeout=90)
        if done.returncode != 0:
            raise AssertionError(f"curl failed: {done.stderr}")
        with open(head, errors="replace") as f:
            lines = [line.rstrip("\r\n") for line in f]
        with open(body, "rb") as f:
            data = f.read()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers, data


class ReadyClient:
    """CLIENT_IN_WINDOW started and imported, waiting for go()."""

    def __init__(self, repo: str, endpoint: str, home: str):
        self.proc = subprocess.Popen([PYTHON, "-c", CLIENT_IN_WINDOW, repo], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=clean_env({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": home,
                                                    "HF_ENDPOINT": endpoint}))
        watchdog = threading.Timer(120, self.proc.kill)
        watchdog.start()
        try:
            line = self.proc.stdout.readline().strip()
        finally:
            watchdog.cancel()
        if line != "ready":
            self.proc.kill()
            raise AssertionError(f"the client did not start: {line!r} {self.proc.stderr.read()[-4000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def go(self) -> dict:
        out, err = self.proc.communicate("go\n", timeout=120)
        if self.proc.returncode != 0:
            raise AssertionError(f"the client failed:\n{out[-2000:]}\n{err[-4000:]}")
        return json.loads(out.strip().splitlines()[-1])


@unittest.skipUnless(shutil.which("curl"), "curl missing")
class ThrottledHubTest(unittest.TestCase):
    def setUp(self):
        self.hub = FakeHub().start()
        self.node = Node(self.hub.url, None, "--access-log", "-").start()
        self.home = tempfile.mkdtemp(prefix="inferllama-throttle-home-")

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()
        self.hub.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def url(self, path: str) -> str:
        return self.node.url + self.node.resolve_path(MODEL, "main", path)

    def test_a_throttled_node_waits_says_when_and_serves_what_it_holds(self):
        self.assertTrue(os.path.exists(PYTHON), f"{PYTHON} is missing: run scripts/install-deps.sh --test")
        files = self.hub.files(MODEL)
        # Held before the window: a file and the revision info.
        self.assertEqual(curl(self.url("config.json"))[0], 200)
        info_path = f"/api/models/{MODEL}/revision/main"
        self.assertEqual(self.node.request("GET", info_path)[0], 200)
        client = ReadyClient(MODEL, self.node.url, self.home)
        self.addCleanup(client.close)

        started = time.monotonic()
        self.hub.throttle(WINDOW)  # 429 with Retry-After and RateLimit, to every credential
        # The first miss meets the 429; every request after it waits, unsent.
        answers = [curl(self.url("model.safetensors"))]
        misses = ["model.safetensors", WEIGHTS, "README.md", "empty.txt", "with space/naïve – file.txt",
                  "model.safetensors"]
        with concurrent.futures.ThreadPoolExecutor(len(misses) + 1) as pool:
            python = pool.submit(client.go)
            answers += list(pool.map(lambda path: curl(self.url(path)), misses))
            # What the node holds is still served.
            status, _, body = curl(self.url("config.json"))
            self.assertEqual((status, sha256(body)), (200, files["config.json"]["sha256"]))
            self.assertEqual(self.node.request("GET", info_path)[0], 200)
            self.assertLess(time.monotonic() - started, WINDOW, "the clients took longer than the window")
            # The Python client waits out the window as told, then downloads.
            got = python.result()
        # Every request the Hub saw in the window it answered 429, and counted.
        sent = sum(self.hub.stats()["throttled_by_auth"].values())
        # In the window: the curls, the two held answers, model_info and each HEAD the Python client was told
        # to repeat later.
        asked = len(answers) + 2 + 1 + len(got["waits"])
        print(f"\nthe node sent the throttling Hub {sent} requests in its {WINDOW} s window, for {asked} "
              f"requests of its clients in it", file=sys.stderr)
        self.assertGreaterEqual(sent, 1)
        self.assertLessEqual(sent, 2)

        for status, headers, body in answers:
            self.assertEqual(status, 503, body)
            self.assertIn("throttling", headers["x-error-message"])
            self.assertIn("throttling", json.loads(body)["error"])
            self.assertTrue(1 <= int(headers["retry-after"]) <= WINDOW, headers["retry-after"])
        self.assertEqual(got["info"]["status"], 503, got)
        self.assertTrue(1 <= int(got["info"]["retry_after"]) <= WINDOW, got)
        self.assertIn("throttling", got["info"]["message"])
        self.assertTrue(got["waits"], f"hf_hub_download was never told to wait: {got}")
        for wait in got["waits"]:
            self.assertTrue(1 <= wait <= WINDOW, got)
        self.assertEqual(got["sha256"], files[WEIGHTS]["sha256"])
        self.assertGreaterEqual(got["download_seconds"], got["waits"][0], "the client did not wait as told")

        # The node's back-off ended with the Hub's window: everything downloads.
        wait_until(lambda: self.node.metric('inferllama_upstream_throttled{identity="anonymous"}') == 0,
                   timeout=WINDOW + 10, what="the end of the back-off")
        self.assertGreaterEqual(time.monotonic() - started, WINDOW - 1, "the back-off ended before the window")
        for path in set(misses):
            status, _, body = curl(self.url(path))
            self.assertEqual((status, sha256(body)), (200, files[path]["sha256"]), path)

        metrics = self.node.metrics()
        self.assertEqual(metrics['inferllama_upstream_throttle_episodes_total{identity="anonymous"}'], 1)
        self.assertEqual(metrics['inferllama_upstream_throttling_answers_total{identity="anonymous"}'], sent)
        self.assertGreaterEqual(metrics['inferllama_upstream_held_back_total{identity="anonymous"}'], len(answers) + 1)
        with open(self.node.log_path, errors="replace") as f:
            log = f.read()
        self.assertEqual(log.count("the upstream is throttling anonymous"), 1, log[-3000:])
        self.assertEqual(log.count("the upstream throttled anonymous for"), 1, log[-3000:])
        self.assertIn("requests were held back", log)

    def test_a_503_with_a_ratelimit_header_alone_is_a_throttle_too(self):
        self.hub.throttle(WINDOW, status=503, headers=["ratelimit"])
        status, headers, _ = curl(self.url("model.safetensors"))
        self.assertEqual(status, 503)
        self.assertTrue(1 <= int(headers["retry-after"]) <= WINDOW, headers)
        sent = self.hub.stats()["total_requests"]
        for path in ("README.md", "empty.txt", "config.json"):
            self.assertEqual(curl(self.url(path))[0], 503)
        self.assertEqual(self.hub.stats()["total_requests"], sent, "requests went out during the back-off")
        self.assertEqual(self.node.metric('inferllama_upstream_throttled{identity="anonymous"}'), 1)


class NodeTokensTest(unittest.TestCase):
    REPOS = [f"acme/sized-{i}" for i in range(9)]
    TOKENS = ["hf_node_alpha", "hf_node_bravo", "hf_node_charlie"]

    def setUp(self):
        self.hub = FakeHub("--sized-models", str(len(self.REPOS)), "--sized-model-size", "4096").start()
        self.tmp = tempfile.mkdtemp(prefix="inferllama-tokens-")
        tokens = os.path.join(self.tmp, "tokens")
        with open(os.open(tokens, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("# the node's Hub tokens\n" + "\n".join(self.TOKENS) + "\n")
        # Branch names asked every time: each request below reaches the Hub unless the node holds it back.
        self.node = Node(self.hub.url, None, "--upstream-tokens-file", tokens, "--ref-ttl", "0").start()

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()
        self.hub.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def by_auth(self) -> dict[str, int]:
        return self.hub.stats()["requests_by_auth"]

    def info(self, repo: str) -> int:
        return self.node.request("GET", f"/api/models/{repo}/revision/main")[0]

    def test_requests_spread_over_the_tokens_by_repo_past_a_throttled_one(self):
        token_of = {}
        for repo in self.REPOS:
            before = self.by_auth()
            self.assertEqual(self.info(repo), 200)
            status, _, _ = self.node.request("GET", self.node.resolve_path(repo, "main", "config.json"))
            self.assertEqual(status, 200)
            self.assertEqual(self.info(repo), 200)
            after = self.by_auth()
            used = {auth for auth, n in after.items() if n > before.get(auth, 0)}
            self.assertEqual(len(used), 1, f"{repo} went with {used}")
            token_of[repo] = used.pop()
        self.assertTrue(set(token_of.values()) <= set(self.TOKENS), token_of)
        self.assertGreaterEqual(len(set(token_of.values())), 2, f"the repos were not spread: {token_of}")
        metrics = self.node.metrics()
        for i, token in enumerate(self.TOKENS):
            self.assertEqual(metrics.get(f'inferllama_upstream_node_token_requests_total{{token="{i + 1}"}}', 0),
                             self.by_auth().get(token, 0), token)
        text = self.node.metrics_request()[2].decode()
        for token in self.TOKENS:
            self.assertNotIn(token, text)

        # Gated repos never see the node's tokens: the file is asked for with the client's credentials.
        before = self.hub.stats()["requests_by_kind_and_auth"]
        status, _, _ = self.node.request("GET", self.node.resolve_path("acme/gated-model", "main", "config.json"))
        self.assertEqual(status, 401)
        heads = {k: n for k, n in self.hub.stats()["requests_by_kind_and_auth"].items()
                 if k.startswith("resolve_") and n > before.get(k, 0)}
        self.assertEqual(list(heads), ["resolve_head anonymous"], heads)

        # The token of the first repo is throttled: the request that learns it goes again with another.
        repo = self.REPOS[0]
        throttled = token_of[repo]
        self.hub.throttle(120, auth=[throttled])
        before = self.by_auth()
        self.assertEqual(self.info(repo), 200)
        after = self.by_auth()
        self.assertEqual(after[throttled] - before[throttled], 1)
        self.assertEqual(sum(after.values()) - sum(before.values()), 2)
        # From then on no request goes with it, for any repo, and every one is answered.
        for other in self.REPOS:
            self.assertEqual(self.info(other), 200)
        self.assertEqual(self.by_auth()[throttled], after[throttled])
        self.assertEqual(self.hub.stats()["throttled_by_auth"], {throttled: 1})
        index = self.TOKENS.index(throttled) + 1
        self.assertEqual(self.node.metric(f'inferllama_upstream_node_token_throttled{{token="{index}"}}'), 1)
        self.assertEqual(self.node.metric('inferllama_upstream_throttled{identity="node"}'), 1)

        # Every token throttled: what the node holds is still answered, a miss is a 503 that says when.
        self.hub.throttle(120, auth=self.TOKENS)
        status, headers, body = self.node.request("GET", f"/api/models/{repo}/revision/main")
        self.assertEqual(status, 200, body)
        self.assertIn("throttling", headers["x-inferllama-stale"])
        status, headers, body = self.node.request("GET", self.node.resolve_path(repo, "main", "model.safetensors"))
        self.assertEqual(status, 503, body)
        self.assertTrue(1 <= int(headers["retry-after"]) <= 120, headers)
        self.assertIn("throttling", headers["x-error-message"])
        sent = self.hub.stats()["total_requests"]
        status, _, _ = self.node.request("GET", self.node.resolve_path(self.REPOS[1], "main", "model.safetensors"))
        self.assertEqual(status, 503)
        self.assertEqual(self.hub.stats()["total_requests"], sent, "nothing goes out while every token backs off")
        self.assertEqual(self.node.metric('inferllama_upstream_throttled{identity="node"}'), len(self.TOKENS))


if __name__ == "__main__":
    unittest.main()
