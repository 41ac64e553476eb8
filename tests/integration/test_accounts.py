"""Users, API keys, limits and usage records against the real node and the fake Hub."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
import unittest

import bencode
from accounts import ADMIN_KEY, add_user, admin, bearer, burst, totals, usage, usage_after
from harness import FakeHub, Node, sha256, wait_until

REPO = "acme/tiny-model"
BIG = "model.safetensors"


class IdentityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url, None, admin_key=ADMIN_KEY).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def get(self, key: str | None, path: str = "", repo: str = REPO):
        return self.node.request("GET", path or self.node.resolve_path(repo, "main", "config.json"),
                                 bearer(key) if key else {})

    def test_a_node_key_names_its_user_and_never_reaches_the_hub(self):
        key = add_user(self.node, "alice", "alice@example.org")
        self.assertTrue(key.startswith("il_") and len(key) >= 40, key)
        status, _, _ = self.get(key)
        self.assertEqual(status, 200)
        status, headers, body = self.get(key, self.node.resolve_path(REPO, "main", BIG))
        self.assertEqual((status, sha256(body)), (200, self.hub.files(REPO)[BIG]["sha256"]))
        by_auth = self.hub.stats()["requests_by_auth"]
        self.assertFalse([k for k in by_auth if k.startswith("il_")], by_auth)
        rows = usage_after(self.node, key, 2)
        self.assertEqual({r["user"] for r in rows}, {"alice"})
        self.assertEqual(totals(rows)["requests"], 2)

    def test_bad_keys_are_refused_and_revocation_is_immediate(self):
        key = add_user(self.node, "bob")
        status, headers, body = self.get("il_" + "x" * 43)
        self.assertEqual(status, 401, body)
        self.assertIn("Bearer", headers.get("www-authenticate", ""))
        self.assertEqual(self.get(key)[0], 200)
        _, keys = admin(self.node, "GET", "keys?user=bob")
        key_id = keys["keys"][0]["id"]
        status, revoked = admin(self.node, "POST", f"keys/{key_id}/revoke")
        self.assertEqual(status, 200, revoked)
        status, _, body = self.get(key)
        self.assertEqual(status, 401)
        self.assertIn("revoked", json.loads(body)["error"])
        # A disabled user's other keys stop working too.
        second = admin(self.node, "POST", "keys", {"user": "bob"})[1]["key"]
        self.assertEqual(self.get(second)[0], 200)
        self.assertEqual(admin(self.node, "POST", "users/bob/disable")[0], 200)
        self.assertEqual(self.get(second)[0], 401)

    def test_a_node_key_in_any_other_form_is_refused_and_never_passed_on(self):
        key = add_user(self.node, "kim")
        for header in (f"Bearer\t{key}", key, f"Token {key}", f"Basic {key}"):
            status, _, _ = self.node.request("GET", self.node.resolve_path(REPO, "main", "config.json"),
                                             {"Authorization": header})
            self.assertEqual(status, 401, header)
        # The admin key opens the admin API and is nobody's Hub token.
        self.assertEqual(self.get(ADMIN_KEY)[0], 200)
        by_auth = self.hub.stats()["requests_by_auth"]
        self.assertFalse([k for k in by_auth if "il_" in k or ADMIN_KEY in k], by_auth)

    def test_head_answers_carry_no_body(self):
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=30)
        try:
            for path in ("/api/usage", "/api/inferllama/users"):
                conn.request("HEAD", path, headers=bearer(ADMIN_KEY))
                r = conn.getresponse()
                self.assertEqual((r.status, r.read()), (200, b""), path)
                self.assertGreater(int(r.getheader("content-length")), 0)
            conn.request("GET", "/healthz")  # the same connection is still in step
            self.assertEqual(conn.getresponse().read(), b"ok\n")
        finally:
            conn.close()

    def test_made_up_repos_make_no_usage_rows(self):
        key = add_user(self.node, "lee")
        for i in range(5):
            self.assertEqual(self.get(key, repo=f"acme/no-such-repo-{i}")[0], 401)
        rows = usage_after(self.node, key, 5)
        self.assertEqual({r["repo"] for r in rows}, {""})
        self.assertEqual(totals(rows)["requests"], 5)

    def test_a_download_dropped_midway_is_still_charged(self):
        key = add_user(self.node, "mia")
        path = self.node.resolve_path(REPO, "main", BIG)
        self.assertEqual(self.get(key, path)[0], 200)  # stored now
        def sent_bytes(rows):  # from the store, or from the download if its commit is still on the way
            return totals(rows)["bytes_from_cache"] + totals(rows)["bytes_from_upstream"]
        before = sent_bytes(usage_after(self.node, key, 1))
        conn = socket.create_connection((self.node.host, self.node.port))
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        got = 0
        while got < 1024 * 1024:  # a megabyte of a 9 MiB file, then gone
            chunk = conn.recv(65536)
            self.assertTrue(chunk)
            got += len(chunk)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # a reset
        wait_until(lambda: totals(usage(self.node, key))["requests"] == 2, what="the dropped request recorded")
        sent = sent_bytes(usage(self.node, key)) - before
        self.assertGreaterEqual(sent, got - 1024)  # what arrived, less the response head
        self.assertLess(sent, self.hub.files(REPO)[BIG]["size"])

    def test_admin_api_needs_the_admin_key(self):
        status, _ = admin(self.node, "GET", "users", key="wrong-admin-key-000000")
        self.assertEqual(status, 401)
        key = add_user(self.node, "carol")
        status, _ = admin(self.node, "GET", "users", key=key)  # a user's key is not the admin's
        self.assertEqual(status, 401)
        self.assertEqual(admin(self.node, "POST", "users", {"name": "carol"})[0], 409)
        self.assertEqual(admin(self.node, "POST", "users", {"name": "no:colons"})[0], 400)

    def test_a_hub_token_is_passed_on_and_accounted_to_the_address(self):
        status, _, _ = self.get("hf_approved", repo="acme/gated-model")
        self.assertEqual(status, 200)
        status, _, _ = self.get("hf_unapproved", repo="acme/gated-model")
        self.assertEqual(status, 403)
        self.assertGreater(self.hub.stats()["requests_by_auth"].get("hf_approved", 0), 0)
        wait_until(lambda: totals(usage(self.node, ADMIN_KEY, "?user=anon:127.0.0.1"))["requests"] >= 2,
                   what="the address's requests recorded")

    def test_gated_repos_open_only_with_the_users_own_hub_token(self):
        key = add_user(self.node, "dave")
        # Without a Hub token of their own the user is anonymous to the Hub: the node's token never
        # opens a gated repo.
        self.assertEqual(self.get(key, repo="acme/gated-model")[0], 401)
        self.assertEqual(self.get(key, repo="acme/private-model")[0], 401)
        status, user = admin(self.node, "POST", "users/dave/hub-token", {"token": "hf_approved"})
        self.assertEqual((status, user["has_hub_token"]), (200, True))
        self.assertEqual(self.get(key, repo="acme/gated-model")[0], 200)
        admin(self.node, "POST", "users/dave/hub-token", {"token": "hf_unapproved"})
        self.assertEqual(self.get(key, repo="acme/gated-model")[0], 403)
        # The token is sealed at rest: it appears in no file of the data directory.
        for root, _, names in os.walk(self.node.data_dir):
            for name in names:
                if not os.path.isfile(os.path.join(root, name)):
                    continue  # the admin socket
                with open(os.path.join(root, name), "rb") as f:
                    self.assertNotIn(b"hf_unapproved", f.read(), name)


class NoAdminKeyTest(unittest.TestCase):
    def test_without_an_admin_key_no_tcp_caller_administers_even_from_loopback(self):
        with FakeHub() as hub, Node(hub.url) as node:
            for path, body in (("users", b'{"name": "x"}'), ("gc", b"{}")):
                status, _, answer = node.request("POST", "/api/inferllama/" + path,
                                                 {"Content-Type": "application/json"}, body)
                self.assertEqual(status, 403, answer)
                self.assertIn(b"admin_key", answer)


class RequireAuthTest(unittest.TestCase):
    def test_anonymous_and_hub_token_callers_are_refused(self):
        with FakeHub() as hub, Node(hub.url, None, "--require-auth", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "erin")
            path = node.resolve_path(REPO, "main", "config.json")
            self.assertEqual(node.request("GET", path)[0], 401)
            self.assertEqual(node.request("GET", path, bearer("hf_approved"))[0], 401)
            self.assertEqual(node.request("GET", f"/api/models/{REPO}/revision/main")[0], 401)
            self.assertEqual(node.request("GET", path, bearer(key))[0], 200)
            self.assertEqual(node.request("GET", "/healthz")[0], 200)
            self.assertGreaterEqual(node.metric("inferllama_http_unauthorized_total"), 3)


def statuses(node, key: str | None, count: int, path: str) -> list[int]:
    return burst([node.url + path] * count, bearer(key) if key else None, connections=50)


class LimitTest(unittest.TestCase):
    def test_2000_requests_over_50_connections_admit_exactly_100(self):
        with FakeHub() as hub, Node(hub.url, None, "--limit-default",
                                    "requests=100/1m", "--limit-anonymous", "requests=100/1m", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "frank")
            path = node.resolve_path(REPO, "main", "config.json")
            got = statuses(node, key, 2000, path)
            self.assertEqual(len(got), 2000)
            self.assertEqual(set(got), {200, 429})
            self.assertLessEqual(abs(got.count(200) - 100), 1, got.count(200))
            # Anonymous callers are limited per address, apart from the user.
            got = statuses(node, None, 2000, path)
            self.assertLessEqual(abs(got.count(200) - 100), 1, got.count(200))
            usage_after(node, key, 2000)  # refused requests are in the records too

    def test_429_says_which_limit_in_headers_and_body(self):
        with FakeHub() as hub, Node(hub.url, None, "--limit-default",
                                    "requests=5/1m tokens=1000/1h concurrent=3", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "gina")
            path = node.resolve_path(REPO, "main", "config.json")
            status, headers, _ = node.request("GET", path, bearer(key))
            self.assertEqual(status, 200)
            self.assertEqual(headers["ratelimit-policy"],
                             '"requests";q=5;w=60, "tokens";q=1048576000;w=3600;qu="content-bytes", '
                             '"concurrent";q=3;qu="concurrent-requests"')
            self.assertTrue(headers["ratelimit"].startswith('"requests";r=4;t='), headers["ratelimit"])
            for _ in range(4):
                node.request("GET", path, bearer(key))
            status, headers, body = node.request("GET", path, bearer(key))
            self.assertEqual(status, 429)
            retry = int(headers["retry-after"])
            self.assertTrue(1 <= retry <= 12, retry)  # one request comes back every 12 s
            self.assertTrue(headers["ratelimit"].startswith('"requests";r=0;t='), headers["ratelimit"])
            self.assertEqual((headers["ratelimit-limit"], headers["ratelimit-remaining"]), ("5", "0"))
            self.assertLessEqual(int(headers["ratelimit-reset"]), 60)
            answer = json.loads(body)
            self.assertEqual((answer["limit"], answer["quota"], answer["window_seconds"]), ("requests", 5, 60))
            self.assertEqual(answer["identity"], "gina")
            self.assertIn("5 requests per 60 s", answer["error"])
            self.assertEqual(headers["x-error-message"], answer["error"])
            status, headers, body = node.request("HEAD", path, bearer(key))
            self.assertEqual((status, body), (429, b""))
            self.assertIn("retry-after", headers)
            self.assertGreaterEqual(node.metric("inferllama_http_rate_limited_total"), 2)

    def test_a_download_is_never_cut_and_its_debt_refuses_the_next(self):
        with FakeHub() as hub, Node(hub.url, None, "--limit-default",
                                    "tokens=2/1h", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "hank")
            big = hub.files(REPO)[BIG]
            self.assertGreater(big["size"], 4 * 1024 * 1024)
            for attempt in ("miss", "hit"):
                # The first download fetches upstream, the second is refused: the debt of the first.
                status, _, body = node.request("GET", node.resolve_path(REPO, "main", BIG), bearer(key))
                if attempt == "miss":
                    self.assertEqual((status, sha256(body)), (200, big["sha256"]))
                else:
                    self.assertEqual(status, 429)
                    self.assertEqual(json.loads(body)["limit"], "tokens")
            rows = usage_after(node, key, 2)
            self.assertEqual(totals(rows)["bytes_from_upstream"] + totals(rows)["bytes_from_cache"], big["size"])
            self.assertEqual(totals(rows)["tokens"], (big["size"] + (1 << 20) - 1) >> 20)

    def test_concurrent_downloads(self):
        with FakeHub() as hub, Node(hub.url, None, "--limit-default",
                                    "concurrent=1", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "ivan")
            path = node.resolve_path(REPO, "main", BIG)
            self.assertEqual(node.request("GET", path, bearer(key))[0], 200)  # cached now

            def slow_download():
                """A download that does not read: its slot stays taken while the node waits on the socket."""
                s = socket.create_connection((node.host, node.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
                head = b""
                while len(head) < 12:
                    chunk = s.recv(12 - len(head))
                    self.assertTrue(chunk)
                    head += chunk
                if head.startswith(b"HTTP/1.1 200"):
                    return s
                s.close()  # the slot of the download before was not given back yet: it is, within moments
                return None

            slow = wait_until(slow_download, what="a download slot")
            status, _, body = node.request("GET", path, bearer(key))
            self.assertEqual(status, 429, body)
            self.assertEqual(json.loads(body)["limit"], "concurrent")
            # Metadata is not a download.
            self.assertEqual(node.request("GET", f"/api/models/{REPO}/revision/main", bearer(key))[0], 200)
            slow.close()
            wait_until(lambda: node.request("GET", path, bearer(key))[0] == 200, what="the slot freed")


class UsageTest(unittest.TestCase):
    def test_usage_is_per_user_and_survives_a_restart(self):
        data = tempfile.mkdtemp(prefix="inferllama-usage-")
        try:
            with FakeHub() as hub:
                node = Node(hub.url, data, admin_key=ADMIN_KEY).start()
                alice = add_user(node, "alice")
                bob = add_user(node, "bob")
                for key, n in ((alice, 3), (bob, 2)):
                    for _ in range(n):
                        node.request("GET", node.resolve_path(REPO, "main", "config.json"), bearer(key))
                node.request("GET", node.resolve_path(REPO, "main", BIG), bearer(alice))
                before = usage_after(node, ADMIN_KEY, 6)
                self.assertEqual(totals(usage(node, alice))["requests"], 4)
                self.assertEqual({r["user"] for r in usage(node, alice)}, {"alice"})
                status, _, _ = node.request("GET", "/api/usage?user=bob", bearer(alice))
                self.assertEqual(status, 403)
                self.assertEqual(totals(before, "alice")["bytes_from_upstream"] +
                                 totals(before, "alice")["bytes_from_cache"],
                                 hub.files(REPO)[BIG]["size"] + hub.files(REPO)["config.json"]["size"] * 3)
                self.assertEqual(node.request("GET", "/api/usage")[0], 401)
                status, headers, csv = node.request("GET", "/api/usage?format=csv", bearer(ADMIN_KEY))
                self.assertEqual(status, 200)
                self.assertTrue(headers["content-type"].startswith("text/csv"))
                self.assertTrue(csv.decode().startswith("day,user,repo,requests,tokens,"), csv)
                node.stop()
                node = Node(hub.url, data, admin_key=ADMIN_KEY).start()
                after = usage(node, ADMIN_KEY)
                node.stop()
            self.assertEqual(before, after)
        finally:
            shutil.rmtree(data, ignore_errors=True)


class PrivateTrackerTest(unittest.TestCase):
    def test_announces_need_a_passkey_and_torrents_carry_it(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-private", admin_key=ADMIN_KEY) as node:
            key = add_user(node, "jane")
            passkey = next(u for u in admin(node, "GET", "users")[1]["users"] if u["name"] == "jane")["passkey"]
            status, _, body = node.request("GET", f"/api/models/{REPO}/torrent/main", bearer(key))
            self.assertEqual(status, 200, body)
            meta = bencode.decode(body)
            self.assertEqual(meta[b"announce"].decode(), f"{node.url}/announce/{passkey}")
            self.assertNotIn(b"udp://", body)
            seed = meta[b"url-list"]
            seed = (seed[0] if isinstance(seed, list) else seed).decode()
            self.assertTrue(seed.startswith(f"{node.url}/p/{passkey}/api/models/{REPO}/webseed/"), seed)
            info_hash = node.request("GET", f"/api/models/{REPO}/torrent/main", bearer(key))[1]["x-inferllama-info-hash"]
            query = ("info_hash=" + "".join(f"%{b:02x}" for b in bytes.fromhex(info_hash)) +
                     "&peer_id=-XX0001-000000000000&port=6881&uploaded=0&downloaded=0&left=1&compact=1")
            _, _, refused = node.request("GET", "/announce?" + query)
            self.assertIn(b"failure reason", refused)
            self.assertIn(b"private", refused)
            _, _, answer = node.request("GET", f"/announce/{passkey}?" + query)
            self.assertIn(b"peers", answer)
            self.assertNotIn(b"failure reason", answer)
            _, _, unknown = node.request("GET", "/announce/" + "0" * 32 + "?" + query)
            self.assertIn(b"unknown passkey", unknown)
            # The web seed answers under the passkey, with no Authorization header.
            status, _, body = node.request("GET", seed[len(node.url):] + "tiny-model/config.json")
            self.assertEqual(status, 200)
            self.assertEqual(node.request("GET", "/p/" + "0" * 32 + seed[len(node.url) + 35:] +
                                          "tiny-model/config.json")[0], 401)
            rows = usage_after(node, key, 4)  # two torrents, the announce, the web seed
            self.assertIn("", {r["repo"] for r in rows})  # the announce, about no repo
            # Scrapes need the passkey too.
            scrape = "info_hash=" + "".join(f"%{b:02x}" for b in bytes.fromhex(info_hash))
            self.assertIn(b"private", node.request("GET", "/scrape?" + scrape)[2])
            self.assertIn(b"files", node.request("GET", f"/scrape/{passkey}?" + scrape)[2])
            # A new passkey: the old one is refused at once, the new one works.
            status, user = admin(node, "POST", "users/jane/passkey")
            self.assertEqual(status, 200, user)
            self.assertNotEqual(user["passkey"], passkey)
            self.assertIn(b"unknown passkey", node.request("GET", f"/announce/{passkey}?" + query)[2])
            self.assertNotIn(b"failure reason", node.request("GET", f"/announce/{user['passkey']}?" + query)[2])


if __name__ == "__main__":
    unittest.main()
