"""Two nodes keep their console sessions in one real redis-server: a sign-in on one holds on the other, a
sign-out or a reused refresh token ends it on both, Redis drops sessions after their 30 days, and while Redis is
down the console says so instead of signing anyone in or out."""
from __future__ import annotations

import os
import shutil
import tempfile
import unittest

from accounts import ADMIN_KEY, admin
from harness import FakeHub, Node, Redis, wait_until
from test_console_api import PASSWORD, Browser, set_password

THIRTY_DAYS = 30 * 24 * 3600


class SharedSessionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-sessions-")
        cls.hub = FakeHub().start()
        cls.redis = Redis().start()
        cls.nodes = []
        try:
            # Nodes that share sessions share the key their signing keys are sealed under, and their users.
            secret = os.path.join(cls.tmp, "secret.key")
            for _ in range(2):
                node = Node(cls.hub.url, None, "--ratelimit-backend", cls.redis.url(), "--secret-key-file", secret,
                            admin_key=ADMIN_KEY).start()
                cls.nodes.append(node)
                for user in ("alice", "bob", "dave"):
                    assert admin(node, "POST", "users", {"name": user})[0] == 201
                    set_password(node, user)
            cls.a, cls.b = cls.nodes
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for node in cls.nodes:
            node.stop()
            node.cleanup()
        cls.redis.stop()
        shutil.rmtree(cls.redis.dir, ignore_errors=True)
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def on(self, node, cookies: dict) -> Browser:
        """The same browser, its requests sent to `node` (a load balancer's choice)."""
        b = Browser(node)
        b.cookies = cookies
        return b

    def test_a_sign_in_on_one_node_refreshes_on_the_other_and_a_sign_out_there_ends_it(self):
        on_a = Browser(self.a)
        status, answer, _ = on_a.sign_in("alice")
        self.assertEqual(status, 200, answer)
        on_b = self.on(self.b, on_a.cookies)
        status, me, _ = on_b.call("GET", "me")
        self.assertEqual(status, 200, me)
        self.assertEqual(me["user"]["name"], "alice")
        self.assertEqual(len(me["sessions"]), 1)
        before = dict(on_a.cookies)
        status, answer, _ = on_b.call("POST", "refresh")
        self.assertEqual(status, 200, answer)
        self.assertNotEqual(on_b.cookies["inferllama_session"], before["inferllama_session"])
        # A state change on A with the cookies B renewed: the session and its CSRF token are one on both.
        status, answer, _ = self.on(self.a, on_b.cookies).call("POST", "keys", {"label": "made on A"})
        self.assertEqual(status, 201, answer)
        renewed = dict(on_b.cookies)
        status, _, _ = on_b.call("POST", "sign-out")
        self.assertEqual(status, 200)
        # Signed out on B: A refuses the session, with its renewed cookies as with its first ones.
        for cookies in (renewed, before):
            replay = self.on(self.a, dict(cookies))
            self.assertEqual(replay.call("GET", "me")[0], 401)
            self.assertEqual(replay.call("POST", "refresh")[0], 401)

    def test_a_refresh_token_reused_on_one_node_closes_the_session_on_the_other(self):
        holder = Browser(self.a)
        self.assertEqual(holder.sign_in("dave")[0], 200)
        stolen = dict(holder.cookies)
        self.assertEqual(holder.call("POST", "refresh")[0], 200)
        status, answer, _ = self.on(self.b, stolen).call("POST", "refresh")
        self.assertEqual(status, 401, answer)
        self.assertIn("closed", answer["error"])
        self.assertEqual(holder.call("GET", "me")[0], 401)

    def test_redis_keeps_each_session_no_longer_than_its_thirty_days(self):
        b = Browser(self.b)
        self.assertEqual(b.sign_in("bob")[0], 200)
        keys = self.redis.cli("--scan", "--pattern", "inferllama:session:{bob}*").split()
        self.assertGreaterEqual(len(keys), 2, keys)  # the session and the user's index
        for key in keys:
            ttl = int(self.redis.cli("TTL", key))
            self.assertLessEqual(ttl, THIRTY_DAYS, key)
            self.assertGreater(ttl, THIRTY_DAYS - 120, key)
        # Tokens are kept as their hashes, the signing keys sealed.
        self.assertNotIn(b.cookies["inferllama_csrf"], self.redis.cli("--scan"))
        for value in self.redis.cli("HVALS", "inferllama:session:signing-keys").split():
            self.assertFalse(value.isdigit() and len(value) == 64)
        self.assertIn("v1:", self.redis.cli("HVALS", "inferllama:session:signing-keys"))

    def test_while_redis_is_down_the_console_answers_503_and_signs_nobody_out(self):
        b = Browser(self.a)
        self.assertEqual(b.sign_in("alice")[0], 200)
        self.redis.stop()
        try:
            status, answer, headers = b.call("GET", "me")
            self.assertEqual(status, 503, answer)
            self.assertIn("Redis", answer["error"])
            self.assertIn("retry-after", headers)
            self.assertEqual(b.last_set_cookie, [])  # the cookies stay
            status, answer, _ = Browser(self.b).sign_in("bob")
            self.assertEqual(status, 503, answer)
            status, overview = admin(self.a, "GET", "overview")
            self.assertEqual(status, 200, overview)
            self.assertEqual(overview["health"]["sessions"], "unreachable")
        finally:
            self.redis.start()
        # Redis lost what it held (no persistence): a new sign-in works again once the nodes reconnect (each
        # tries again at most once a second), and the session of before is gone.
        wait_until(lambda: Browser(self.b).sign_in("bob")[0] == 200, what="sign-in on B with Redis back")
        wait_until(lambda: b.call("GET", "me")[0] == 401, what="A asking Redis again")
        self.assertEqual(admin(self.a, "GET", "overview")[1]["health"]["sessions"], "connected")
        self.assertEqual(Browser(self.a).sign_in("alice")[0], 200)


if __name__ == "__main__":
    unittest.main()
