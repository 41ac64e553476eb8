"""What the node writes, and where: the access log on stdout ("-") or in a file of its own, one JSON object a
line (RFC 3339 times with whole microseconds, identity, hit/miss/stream, the user agent sanitised), the
node's own log on stderr, and no signed CDN URL's credential in any of them, also at debug level while
transfers fail, lie, are retried and have their signed URLs refreshed."""
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import unittest
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from accounts import ADMIN_KEY, add_user, bearer  # noqa: E402
from harness import FakeHub, Node, access_lines, sha256, wait_until  # noqa: E402

FIELDS = ["time", "remote", "identity", "method", "target", "route", "status", "bytes", "duration_us", "cache",
          "user_agent"]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SIZE = 1024 * 1024 + 4321  # each acme/sized-N model.safetensors: an LFS file behind a signed CDN URL
START_LINE = re.compile(r"^inferllama (listening on|metrics on|admin socket at|bittorrent on|tracker on) ")


def sized(i: int) -> str:
    return f"acme/sized-{i}"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def fetch(node, method, path, headers=None):
    """(status, body, complete): a body the node cut short is returned as far as it came."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=120)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        try:
            return r.status, r.read(), True
        except http.client.IncompleteRead as e:
            return r.status, e.partial, False
    finally:
        conn.close()


class AccessLogOnStdoutTest(unittest.TestCase):
    """`--access-log -` with `--log-level debug`: misses, a stream, hits, failing and lying transfers, users,
    the admin and anonymous clients. The node is stopped before the tests look, so every line is written."""

    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub("--sized-models", "8", "--sized-model-size", str(SIZE)).start()
        cls.files = {i: cls.hub.files(sized(i))["model.safetensors"] for i in range(8)}
        try:
            cls.node = Node(cls.hub.url, None, "--access-log", "-", "--log-level", "debug", "--upstream-retries", "3",
                            admin_key=ADMIN_KEY).start()
        except BaseException:
            cls.hub.stop()
            raise
        cls.started = datetime.now(timezone.utc)
        try:
            cls.run_requests()
        finally:
            cls.node.stop()
        cls.ended = datetime.now(timezone.utc)
        cls.stdout = cls.node.stdout_text()
        with open(cls.node.log_path, errors="replace") as f:
            cls.stderr = f.read()
        cls.entries = access_lines(cls.stdout)

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()
        cls.hub.stop()

    @classmethod
    def path(cls, i: int) -> str:
        return cls.node.resolve_path(sized(i), "main", "model.safetensors")

    @classmethod
    def get(cls, i: int, headers=None, method="GET"):
        return fetch(cls.node, method, cls.path(i), headers)

    @classmethod
    def run_requests(cls):
        node, hub = cls.node, cls.hub
        cls.alice_key = add_user(node, "alice")
        cls.alice = bearer(cls.alice_key)
        # A user agent with a tab (a control character Beast lets through), a byte that is no UTF-8, and
        # more than 256 bytes, the last of them cut inside a two-byte character.
        cls.user_agent = b"probe/1.0\t\xff" + "\u00e9".encode() * 200
        cls.outcomes = {}
        # Miss, then hit (GET and HEAD), anonymous.
        cls.outcomes["miss"] = cls.get(0, {"User-Agent": cls.user_agent})
        wait_until(lambda: node.metric("inferllama_downloads_in_flight") == 0, what="sized-0 stored")
        cls.outcomes["hit"] = cls.get(0, cls.alice)
        cls.outcomes["hit_head"] = cls.get(0, method="HEAD")
        # A HEAD of a file not stored asks the Hub and starts nothing: a miss.
        cls.outcomes["head_miss"] = cls.get(1, method="HEAD")
        # A slow CDN transfer that alice starts and an anonymous client joins while it runs: miss, stream.
        hub.faults([{"match": cls.files[2]["sha256"], "kind": "slow_body", "bps": 256 * 1024, "times": 1}])
        first = {}
        starter = threading.Thread(target=lambda: first.update(result=cls.get(2, cls.alice)))
        starter.start()
        wait_until(lambda: node.metric("inferllama_downloads_in_flight") >= 1, what="sized-2 in flight")
        cls.outcomes["stream"] = cls.get(2)
        starter.join()
        cls.outcomes["stream_starter"] = first["result"]
        # Failing transfers: the CDN refuses the signed URL once (the node asks the Hub for a new one),
        # and resets a connection midway (the node resumes with a Range request).
        hub.faults([{"match": cls.files[3]["sha256"], "kind": "status", "status": 403, "times": 1},
                    {"match": cls.files[4]["sha256"], "kind": "reset_after_bytes", "bytes": 300000, "times": 1}])
        cls.outcomes["refused_once"] = cls.get(3)
        cls.outcomes["reset_once"] = cls.get(4)
        # Lying transfers: a flipped byte (the hash fails: the client gets a short body) and a size that is
        # larger than the file (the CDN refuses the range past its end).
        hub.faults([{"match": cls.files[5]["sha256"], "kind": "corrupt_byte", "times": 1}])
        cls.outcomes["corrupt"] = cls.get(5)
        hub.lies([{"match": f"{sized(6)}/model.safetensors", "kind": "size", "size": SIZE + 4096}])
        cls.outcomes["lying_size"] = cls.get(6)
        hub.lies([])
        # A signed URL that expired, then a redirect the node follows itself, then the CDN.
        hub.control("POST", "/_fake/hostile", {"lfs_locations": ["hub-expired", "hub-redirect", "cdn"]})
        cls.outcomes["expired_redirect"] = cls.get(7)
        hub.control("POST", "/_fake/hostile", {})
        wait_until(lambda: node.metric("inferllama_downloads_in_flight") == 0, what="downloads to end")
        # The admin, a refused key, the metrics listener.
        status, _, _ = node.request("GET", "/api/inferllama/users", bearer(ADMIN_KEY))
        cls.outcomes["admin"] = (status, b"", True)
        status, _, _ = node.request("GET", "/api/models/acme/tiny-model", bearer("il_" + "x" * 43))
        cls.outcomes["bad_key"] = (status, b"", True)
        node.metrics_request()
        cls.signed = hub.stats()["signed_queries"]

    def entry(self, target, **match):
        found = [e for e in self.entries if e["target"] == target and all(e[k] == v for k, v in match.items())]
        self.assertEqual(len(found), 1, f"{target} {match}: {found}")
        return found[0]

    def test_the_transfers_did_what_they_should(self):
        for name in ("miss", "hit", "stream", "stream_starter", "refused_once", "reset_once", "expired_redirect"):
            status, body, complete = self.outcomes[name]
            self.assertEqual((status, complete), (200, True), name)
        self.assertEqual(sha256(self.outcomes["miss"][1]), self.files[0]["sha256"])
        self.assertEqual(sha256(self.outcomes["stream"][1]), self.files[2]["sha256"])
        self.assertEqual(sha256(self.outcomes["refused_once"][1]), self.files[3]["sha256"])
        self.assertEqual(sha256(self.outcomes["reset_once"][1]), self.files[4]["sha256"])
        self.assertEqual(sha256(self.outcomes["expired_redirect"][1]), self.files[7]["sha256"])
        self.assertFalse(self.outcomes["corrupt"][2], "a file that failed its hash looked complete")
        self.assertFalse(self.outcomes["lying_size"][2], "a file shorter than its claim looked complete")
        self.assertEqual(self.outcomes["admin"][0], 200)
        self.assertEqual(self.outcomes["bad_key"][0], 401)
        # The node really did meet refused, reset and refreshed URLs (else this test proves little).
        self.assertIn("the Hub names http://", self.stderr)
        self.assertIn("retry 1", self.stderr)
        self.assertIn("redirects to http://", self.stderr)
        self.assertGreaterEqual(len(self.signed), 8)

    def test_no_signed_url_credential_in_any_output(self):
        outputs = {"stdout (the access log)": self.stdout, "stderr (the node's log)": self.stderr}
        cdn = self.hub.cdn
        for name, text in outputs.items():
            for query in self.signed:
                sig = query.rpartition("sig=")[2]
                self.assertNotIn(sig, text, f"a CDN signature is in {name}")
                self.assertNotIn(query, text, f"a signed query is in {name}")
            self.assertNotIn("sig=", text, name)
            self.assertNotIn("expires=", text, name)
            self.assertIsNone(re.search(re.escape(cdn) + r"/blobs/[0-9a-f]+\?", text), name)
        # Debug logging did name the CDN URLs, without their query.
        self.assertRegex(self.stderr, re.escape(cdn) + r"/blobs/[0-9a-f]{64}(\s|$)")

    def test_stdout_carries_the_start_lines_and_access_lines_only_and_stderr_none(self):
        for line in self.stdout.splitlines():
            if not START_LINE.match(line):
                self.assertEqual(list(json.loads(line)), FIELDS, line)
        self.assertGreaterEqual(len(self.entries), 15)
        for line in self.stderr.splitlines():
            self.assertFalse(line.startswith("{"), f"an access log line on stderr: {line}")
        self.assertIn("[debug]", self.stderr)

    def test_times_are_rfc3339_utc_microseconds_and_durations_whole_microseconds(self):
        for e in self.entries:
            self.assertRegex(e["time"], TIME)
            at = parse_time(e["time"])
            self.assertGreaterEqual(at, self.started - timedelta(seconds=1))
            self.assertLessEqual(at + timedelta(microseconds=e["duration_us"]), self.ended + timedelta(seconds=1))
            self.assertIsInstance(e["duration_us"], int)
            self.assertGreaterEqual(e["duration_us"], 0)
        # Not all on a whole millisecond: the microseconds are real.
        self.assertTrue(any(parse_time(e["time"]).microsecond % 1000 for e in self.entries))

    def test_hit_miss_and_stream(self):
        miss = self.entry(self.path(0), cache="miss")
        hit = self.entry(self.path(0), method="GET", cache="hit")
        self.entry(self.path(0), method="HEAD", cache="hit")
        self.entry(self.path(1), method="HEAD", cache="miss")
        for e in (miss, hit):
            self.assertEqual((e["status"], e["bytes"], e["route"]), (200, SIZE, "resolve"))
        # The slow download: alice started it, the anonymous client joined it while it ran.
        started = self.entry(self.path(2), cache="miss")
        joined = self.entry(self.path(2), cache="stream")
        self.assertEqual((started["identity"], joined["identity"]), ("alice", "anon"))
        self.assertLess(parse_time(started["time"]), parse_time(joined["time"]))
        self.assertEqual((joined["status"], joined["bytes"]), (200, SIZE))
        # Retried and refreshed transfers are still this request's misses.
        for i in (3, 4, 7):
            self.assertEqual(self.entry(self.path(i))["cache"], "miss")
        # A body cut short by a failed hash says how many bytes went out.
        corrupt = self.entry(self.path(5))
        self.assertEqual((corrupt["status"], corrupt["cache"]), (200, "miss"))
        self.assertLess(corrupt["bytes"], SIZE)
        # Routes that serve no file.
        for e in self.entries:
            if e["route"] != "resolve":
                self.assertEqual(e["cache"], "-", e)

    def test_identity_is_the_user_the_admin_or_anon_and_never_a_credential(self):
        self.assertEqual(self.entry(self.path(0), cache="miss")["identity"], "anon")
        self.assertEqual(self.entry(self.path(0), method="GET", cache="hit")["identity"], "alice")
        self.assertEqual(self.entry("/api/inferllama/users", method="GET")["identity"], "admin")
        self.assertEqual(self.entry("/api/models/acme/tiny-model")["identity"], "anon")
        self.assertEqual({e["identity"] for e in self.entries if e["route"] == "metrics"}, {"anon"})
        for e in self.entries:
            self.assertEqual(e["remote"], "127.0.0.1")
        for secret in (ADMIN_KEY, self.alice_key, "il_" + "x" * 43):
            self.assertNotIn(secret, self.stdout + self.stderr)

    def test_user_agent_is_sanitised_and_bounded(self):
        # 11 bytes, then 122 two-byte characters and the first byte of the 123rd: cut before it. The tab
        # becomes '?', the stray byte U+FFFD.
        miss = self.entry(self.path(0), cache="miss")
        self.assertEqual(miss["user_agent"], "probe/1.0?\ufffd" + "\u00e9" * 122)
        # http.client sends none of its own: an absent User-Agent is "".
        self.assertEqual(self.entry(self.path(0), method="HEAD")["user_agent"], "")


class AccessLogFileTest(unittest.TestCase):
    """`--access-log access.log`: a file of its own in the data directory, 0600, reopened on SIGHUP."""

    def setUp(self):
        self.hub = FakeHub().start()
        self.node = Node(self.hub.url, None, "--access-log", "access.log").start()
        self.log = os.path.join(self.node.data_dir, "access.log")

    def tearDown(self):
        self.node.stop()
        self.node.cleanup()
        self.hub.stop()

    def lines(self, path):
        with open(path) as f:
            return access_lines(f.read())

    def logged(self, path, target):
        """Waits for the line of a request to `target` (a line is written just after the answer)."""
        return wait_until(lambda: [e for e in self.lines(path) if e["target"] == target],
                          what=f"{target} in {path}")

    def test_a_relative_path_is_a_private_file_in_the_data_directory(self):
        self.assertEqual(self.node.request("GET", "/healthz", {"User-Agent": "probe"})[0], 200)
        entry = self.logged(self.log, "/healthz")[0]
        self.assertEqual((entry["route"], entry["status"], entry["cache"], entry["user_agent"], entry["identity"]),
                         ("healthz", 200, "-", "probe", "anon"))
        self.assertEqual(os.stat(self.log).st_mode & 0o777, 0o600)
        self.assertEqual(self.node.stop(), 0)
        for line in self.node.stdout_text().splitlines():
            self.assertRegex(line, START_LINE)

    def test_sighup_reopens_the_file_after_logrotate_moved_it(self):
        self.node.request("GET", "/healthz?before")
        self.logged(self.log, "/healthz?before")
        rotated = self.log + ".1"
        os.rename(self.log, rotated)
        self.node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: os.path.exists(self.log), what="the access log reopened")
        self.assertEqual(self.node.request("GET", "/healthz?after")[0], 200)
        self.logged(self.log, "/healthz?after")
        self.assertEqual([e["target"] for e in self.lines(rotated)], ["/healthz?before"])
        self.assertIsNone(self.node.proc.poll(), "SIGHUP stopped the node")
        with open(self.node.log_path) as f:
            self.assertIn("access log: reopened", f.read())


if __name__ == "__main__":
    unittest.main()
