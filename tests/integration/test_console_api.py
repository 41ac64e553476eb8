"""The web console's JSON API: sign-in with a password, the two cookies, CSRF, refresh-token rotation with
reuse detection, sign-out, keys and usage of one's own, and the sign-in guard. Driven over plain HTTP with
the cookies handled by hand, so every flag and every refusal is visible."""
from __future__ import annotations

import http.client
import json
import unittest
import urllib.parse

from accounts import HostedNodeCase, admin, bearer

PASSWORD = "correct horse battery staple"


class Browser:
    """A cookie jar of one: what a browser would send back to the node."""

    def __init__(self, node):
        self.node = node
        self.cookies: dict[str, str] = {}
        self.last_set_cookie: list[str] = []

    def call(self, method: str, action: str, body: dict | None = None, csrf: bool = True,
             headers: dict | None = None):
        send = dict(headers or {})
        if self.cookies:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and "inferllama_csrf" in self.cookies:
            send["X-CSRF-Token"] = self.cookies["inferllama_csrf"]
        # The console takes changes as JSON only (a cross-site form cannot send that).
        data = None if method == "GET" else json.dumps(body or {}).encode()
        if data is not None:
            send["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        try:
            conn.request(method, "/api/inferllama/console/" + action, body=data, headers=send)
            r = conn.getresponse()
            answer = r.read()
            self.last_set_cookie = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
            for line in self.last_set_cookie:
                name, _, rest = line.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in line:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            return r.status, json.loads(answer or b"null"), dict((k.lower(), v) for k, v in r.getheaders())
        finally:
            conn.close()

    def sign_in(self, user: str, password: str = PASSWORD):
        return self.call("POST", "sign-in", {"user": user, "password": password}, csrf=False)


def set_password(node, user: str, password: str = PASSWORD):
    status, answer = admin(node, "POST", f"users/{user}/password", {"password": password})
    assert status == 200, (status, answer)


class ConsoleApiTest(HostedNodeCase):
    users = ("alice", "bob", "carol", "dave")
    node_args = ("--tracker-open", "true")  # any swarm is tracked: the operator's page lists it

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for user in cls.users:
            set_password(cls.node, user)

    def test_sign_in_sets_exactly_two_cookies_with_the_policys_flags(self):
        b = Browser(self.node)
        status, answer, _ = b.sign_in("alice")
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["user"]["name"], "alice")
        self.assertEqual(sorted(c.split("=", 1)[0] for c in b.last_set_cookie),
                         ["inferllama_csrf", "inferllama_session"])
        for line in b.last_set_cookie:
            attrs = [a.strip() for a in line.split(";")[1:]]
            self.assertIn("SameSite=Lax", attrs)
            self.assertIn("Secure", attrs)
            session = line.startswith("inferllama_session=")
            # The session cookie goes to the console's API only; the CSRF token is read by the page at /.
            self.assertIn("Path=/api/inferllama/console/" if session else "Path=/", attrs)
            self.assertIn(f"Max-Age={30 * 24 * 3600}", attrs)
            self.assertEqual("HttpOnly" in attrs, line.startswith("inferllama_session="), line)
        self.assertEqual(answer["csrf"], b.cookies["inferllama_csrf"])
        # The session cookie is a JWT whose header names its algorithm and key.
        header = b.cookies["inferllama_session"].split(".")[0]
        decoded = json.loads(__import__("base64").urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        self.assertEqual(decoded["alg"], "HS256")
        self.assertIn("kid", decoded)
        status, me, _ = b.call("GET", "me")
        self.assertEqual(status, 200, me)
        self.assertEqual(me["user"]["name"], "alice")
        self.assertNotIn("$argon2", json.dumps(me))
        self.assertTrue(any(s["current"] for s in me["sessions"]))

    def test_a_form_from_another_site_cannot_sign_in_or_out(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("alice")[0], 200)
        cookie = "; ".join(f"{k}={v}" for k, v in b.cookies.items())
        for action, body in (("sign-in", b"user=alice&password=x"), ("sign-out", b""), ("refresh", b"")):
            status, _, _ = self.node.request("POST", "/api/inferllama/console/" + action,
                                             {"Cookie": cookie, "Content-Type": "text/plain"}, body)
            self.assertEqual(status, 415, action)
        self.assertEqual(b.call("GET", "me")[0], 200)
        # A refresh without the CSRF header is refused without signing anyone out.
        status, _, _ = b.call("POST", "refresh", csrf=False)
        self.assertEqual(status, 403)
        self.assertEqual(b.call("GET", "me")[0], 200)

    def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(self):
        b = Browser(self.node)
        wrong = b.sign_in("bob", "not the password")
        unknown = b.sign_in("nobody-here", "not the password")
        self.assertEqual(wrong[0], 401)
        self.assertEqual(wrong[:2], unknown[:2])
        self.assertEqual(b.cookies, {})

    def test_state_changes_need_the_csrf_header(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("carol")[0], 200)
        status, answer, _ = b.call("POST", "keys", {"label": "no csrf"}, csrf=False)
        self.assertEqual(status, 403, answer)
        self.assertIn("X-CSRF-Token", answer["error"])
        status, answer, _ = b.call("POST", "keys", {"label": "forged"}, csrf=False,
                                   headers={"X-CSRF-Token": "guessed"})
        self.assertEqual(status, 403, answer)
        status, answer, _ = b.call("GET", "keys")
        self.assertEqual(status, 200)
        self.assertNotIn("forged", json.dumps(answer))

    def test_a_key_made_in_the_console_works_with_the_hub_api_and_cookies_do_not(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("alice")[0], 200)
        status, created, _ = b.call("POST", "keys", {"label": "laptop"})
        self.assertEqual(status, 201, created)
        self.assertTrue(created["key"].startswith("il_"))
        status, _, body = self.node.request("GET", "/api/whoami-v2", bearer(created["key"]))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], "alice")
        # A cookie alone is nobody on the Hub's API.
        cookie = "; ".join(f"{k}={v}" for k, v in b.cookies.items())
        status, _, body = self.node.request("GET", "/api/whoami-v2", {"Cookie": cookie})
        self.assertNotEqual(status, 200, body)
        # The key can be revoked from the console, by its owner only.
        other = Browser(self.node)
        self.assertEqual(other.sign_in("bob")[0], 200)
        status, answer, _ = other.call("POST", f"keys/{created['id']}/revoke")
        self.assertEqual(status, 404, answer)
        status, revoked, _ = b.call("POST", f"keys/{created['id']}/revoke")
        self.assertEqual(status, 200, revoked)
        self.assertIsNotNone(revoked["revoked"])
        status, _, _ = self.node.request("GET", "/api/whoami-v2", bearer(created["key"]))
        self.assertEqual(status, 401)

    def test_refresh_rotates_and_a_replayed_token_closes_the_session(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("dave")[0], 200)
        stolen = dict(b.cookies)
        status, answer, _ = b.call("POST", "refresh")
        self.assertEqual(status, 200, answer)
        self.assertNotEqual(b.cookies["inferllama_session"], stolen["inferllama_session"])
        self.assertEqual(b.call("GET", "me")[0], 200)
        thief = Browser(self.node)
        thief.cookies = stolen
        status, answer, _ = thief.call("POST", "refresh")
        self.assertEqual(status, 401, answer)
        self.assertIn("closed", answer["error"])
        # The rightful holder is signed out too: one of the two is a thief, and the node cannot tell which.
        self.assertEqual(b.call("GET", "me")[0], 401)

    def test_sign_out_ends_the_session_and_clears_both_cookies(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("bob")[0], 200)
        kept = dict(b.cookies)
        status, _, _ = b.call("POST", "sign-out")
        self.assertEqual(status, 200)
        self.assertEqual(len([c for c in b.last_set_cookie if "Max-Age=0" in c]), 2)
        self.assertEqual(b.cookies, {})
        replay = Browser(self.node)
        replay.cookies = kept
        self.assertEqual(replay.call("GET", "me")[0], 401)
        self.assertEqual(replay.call("POST", "refresh")[0], 401)

    def test_changing_the_password_signs_out_the_other_sessions(self):
        set_password(self.node, "carol")
        here, elsewhere = Browser(self.node), Browser(self.node)
        self.assertEqual(here.sign_in("carol")[0], 200)
        self.assertEqual(elsewhere.sign_in("carol")[0], 200)
        status, answer, _ = here.call("POST", "password", {"current": "wrong one", "new": "another long password"})
        self.assertEqual(status, 403, answer)
        status, answer, _ = here.call("POST", "password", {"current": PASSWORD, "new": "another long password"})
        self.assertEqual(status, 200, answer)
        self.assertEqual(here.call("GET", "me")[0], 200)
        self.assertEqual(elsewhere.call("GET", "me")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("carol")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("carol", "another long password")[0], 200)
        set_password(self.node, "carol")

    def test_a_disabled_user_is_signed_out_at_the_next_request(self):
        status, _ = admin(self.node, "POST", "users", {"name": "erin"})
        self.assertEqual(status, 201)
        set_password(self.node, "erin")
        b = Browser(self.node)
        self.assertEqual(b.sign_in("erin")[0], 200)
        self.assertEqual(admin(self.node, "POST", "users/erin/disable")[0], 200)
        self.assertEqual(b.call("GET", "me")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("erin")[0], 401)

    def test_an_admin_setting_a_password_ends_the_console_sessions_and_their_keys(self):
        status, _ = admin(self.node, "POST", "users", {"name": "gail"})
        set_password(self.node, "gail")
        b = Browser(self.node)
        self.assertEqual(b.sign_in("gail")[0], 200)
        status, answer, _ = b.call("POST", "session-key")
        self.assertEqual(status, 201, answer)
        self.assertEqual(self.node.request("GET", "/api/whoami-v2", bearer(answer["key"]))[0], 200)
        set_password(self.node, "gail", "a password set by the admin")
        self.assertEqual(b.call("GET", "me")[0], 401)
        self.assertEqual(self.node.request("GET", "/api/whoami-v2", bearer(answer["key"]))[0], 401)

    def test_usage_shows_the_users_own_rows(self):
        b = Browser(self.node)
        self.assertEqual(b.sign_in("alice")[0], 200)
        status, answer, _ = b.call("GET", "usage")
        self.assertEqual(status, 200, answer)
        self.assertTrue(all(row["user"] == "alice" for row in answer["usage"]))

    def test_guessing_is_held_back_per_account(self):
        status, _ = admin(self.node, "POST", "users", {"name": "frank"})
        set_password(self.node, "frank")
        b = Browser(self.node)
        answers = [b.sign_in("frank", f"guess {i}")[0] for i in range(11)]
        self.assertEqual(answers[:10], [401] * 10)
        self.assertEqual(answers[10], 429)
        # The right password waits too: the account is held, not the guesser's luck.
        status, answer, headers = b.sign_in("frank")
        self.assertEqual(status, 429, answer)
        self.assertIn("retry-after", headers)
        samples = self.node.metrics()
        self.assertGreaterEqual(samples["inferllama_signin_failures_total"], 10)
        self.assertGreaterEqual(samples["inferllama_signin_blocked_total"], 2)

    def test_the_operator_sees_swarms_and_their_peers_and_nobody_else_does(self):
        info_hash = bytes(range(1, 21))
        query = urllib.parse.urlencode({"info_hash": info_hash, "peer_id": b"-XX0001-" + b"p" * 12, "port": 51413,
                                        "uploaded": 0, "downloaded": 0, "left": 0})
        status, _, answer = self.node.request("GET", "/announce?" + query)
        self.assertEqual(status, 200, answer)
        self.assertNotIn(b"failure reason", answer)
        status, _ = admin(self.node, "POST", "users/bob/admin", {"admin": True})
        self.assertEqual(status, 200)
        operator = Browser(self.node)
        self.assertEqual(operator.sign_in("bob")[0], 200)
        status, overview, _ = operator.call("GET", "operator/overview")
        self.assertEqual(status, 200, overview)
        [swarm] = [s for s in overview["tracker"]["busiest"] if s["info_hash"] == info_hash.hex()]
        self.assertEqual((swarm["seeders"], swarm["leechers"], swarm["own"]), (1, 0, False))
        self.assertEqual(swarm["peers"], [{"address": "127.0.0.1", "port": 51413, "seeder": True}])
        self.assertGreaterEqual(overview["tracker"]["peers"], 1)
        # The same view through the admin API; a user who is no operator gets none of it.
        status, from_admin = admin(self.node, "GET", "overview")
        self.assertEqual(status, 200, from_admin)
        self.assertIn(info_hash.hex(), json.dumps(from_admin["tracker"]["busiest"]))
        user = Browser(self.node)
        self.assertEqual(user.sign_in("dave")[0], 200)
        status, answer, _ = user.call("GET", "operator/overview")
        self.assertEqual(status, 403, answer)
        self.assertNotIn("127.0.0.1", json.dumps(answer))

    def test_the_password_never_reaches_the_log(self):
        Browser(self.node).sign_in("bob")
        Browser(self.node).sign_in("bob", "a wrong password that is long")
        with open(self.node.log_path, encoding="utf-8", errors="replace") as log:
            text = log.read()
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn("a wrong password that is long", text)


if __name__ == "__main__":
    unittest.main()
