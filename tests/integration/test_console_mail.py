"""The console's mail through a real SMTP server on loopback: sign-up confirmed by an emailed link, password
reset by link, an invitation, a changed address confirmed by a link to it; and, without SMTP, the node
saying so while an admin hands out reset links."""
from __future__ import annotations

import json
import subprocess
import unittest

from accounts import ADMIN_KEY, admin
from harness import BINARY, FakeHub, Node
from smtp_server import MailNodeCase, SmtpServer
from test_console_api import PASSWORD, Browser, set_password


class MailFlowsTest(MailNodeCase):
    def test_sign_up_needs_the_emailed_link_before_the_first_sign_in(self):
        b = Browser(self.node)
        status, answer, _ = b.call("GET", "config")
        self.assertEqual(answer, {"signup": True, "mail": True})
        status, answer, _ = b.call("POST", "sign-up", {"user": "gina", "email": "gina@example.org",
                                                        "password": PASSWORD}, csrf=False)
        self.assertEqual(status, 201, answer)
        status, answer, _ = b.sign_in("gina")
        self.assertEqual(status, 403, answer)
        self.assertIn("confirm your email", answer["error"])
        mail = self.smtp.mail_to("gina@example.org")
        self.assertEqual(mail["From"].addresses[0].addr_spec, "node@inferllama.test")
        self.assertIn("http://node.example/#/verify?token=", mail.get_content())
        token = SmtpServer.link(mail, "verify")
        status, answer, _ = b.call("POST", "verify-email", {"token": token}, csrf=False)
        self.assertEqual(status, 200, answer)
        self.assertTrue(answer["user"]["email_verified"])
        # The link works once.
        self.assertEqual(b.call("POST", "verify-email", {"token": token}, csrf=False)[0], 400)
        self.assertEqual(b.sign_in("gina")[0], 200)
        # A taken name is refused; a taken address gets the same answer as a free one, and no second account.
        status, _, _ = b.call("POST", "sign-up", {"user": "gina", "email": "x@example.org", "password": PASSWORD},
                              csrf=False)
        self.assertEqual(status, 409)
        status, _, _ = b.call("POST", "sign-up", {"user": "gina2", "email": "gina@example.org",
                                                   "password": PASSWORD}, csrf=False)
        self.assertEqual(status, 201)
        self.assertNotIn("gina2", [u["name"] for u in admin(self.node, "GET", "users")[1]["users"]])

    def test_a_password_reset_link_sets_a_new_password_and_signs_out_everywhere(self):
        status, _ = admin(self.node, "POST", "invite", {"name": "hank", "email": "hank@example.org"})
        self.assertEqual(status, 201)
        invite = self.smtp.mail_to("hank@example.org", "invited")
        self.assertIn("invited", invite["Subject"])
        b = Browser(self.node)
        status, answer, _ = b.call("POST", "reset", {"token": SmtpServer.link(invite, "reset"), "password": "short"},
                                   csrf=False)
        self.assertEqual(status, 400, answer)  # the policy first: the link is not spent on a bad password
        status, answer, _ = b.call("POST", "reset", {"token": SmtpServer.link(invite, "reset"),
                                                      "password": PASSWORD}, csrf=False)
        self.assertEqual(status, 200, answer)
        self.assertTrue(answer["user"]["email_verified"])
        signed_in = Browser(self.node)
        self.assertEqual(signed_in.sign_in("hank@example.org")[0], 200)  # by address too
        # Forgot: the same answer for an unknown account, and a mail only to the real one.
        self.assertEqual(b.call("POST", "forgot", {"user": "nobody"}, csrf=False)[:2], (200, {"sent": True}))
        self.assertEqual(b.call("POST", "forgot", {"user": "hank"}, csrf=False)[:2], (200, {"sent": True}))
        reset = self.smtp.mail_to("hank@example.org", "Reset")
        status, answer, _ = b.call("POST", "reset", {"token": SmtpServer.link(reset, "reset"),
                                                      "password": "a brand new password"}, csrf=False)
        self.assertEqual(status, 200, answer)
        self.assertEqual(signed_in.call("GET", "me")[0], 401)
        self.assertEqual(Browser(self.node).sign_in("hank", PASSWORD)[0], 401)
        self.assertEqual(Browser(self.node).sign_in("hank", "a brand new password")[0], 200)

    def test_a_new_address_counts_once_its_link_is_opened(self):
        status, _ = admin(self.node, "POST", "users", {"name": "ivy", "email": "ivy@example.org"})
        set_password(self.node, "ivy")
        b = Browser(self.node)
        self.assertEqual(b.sign_in("ivy")[0], 200)
        status, answer, _ = b.call("POST", "profile", {"email": "ivy@new.example.org"})
        self.assertEqual((status, answer), (200, {"verify": "sent"}))
        self.assertEqual(b.call("GET", "me")[1]["user"]["email"], "ivy@example.org")
        mail = self.smtp.mail_to("ivy@new.example.org")
        self.assertEqual(b.call("POST", "verify-email", {"token": SmtpServer.link(mail, "verify")})[0], 200)
        me = b.call("GET", "me")[1]["user"]
        self.assertEqual((me["email"], me["email_verified"]), ("ivy@new.example.org", True))

    def test_header_injection_through_an_address_is_refused(self):
        b = Browser(self.node)
        status, answer, _ = b.call("POST", "sign-up", {"user": "mallory", "email": "m@example.org\r\nBcc: x@evil",
                                                        "password": PASSWORD}, csrf=False)
        self.assertEqual(status, 400, answer)
        self.assertFalse([m for m in self.smtp.messages() if "evil" in str(m)])


class WithoutMailTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url, None, "--signup", "true", admin_key=ADMIN_KEY).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def test_the_node_says_it_sends_no_mail_and_admins_hand_out_links(self):
        b = Browser(self.node)
        self.assertEqual(b.call("GET", "config")[1], {"signup": False, "mail": False})
        status, answer, _ = b.call("POST", "forgot", {"user": "anyone"}, csrf=False)
        self.assertEqual(status, 503)
        self.assertIn("reset-link", answer["error"])
        status, answer, _ = b.call("POST", "sign-up", {"user": "x", "email": "x@example.org", "password": PASSWORD},
                                   csrf=False)
        self.assertEqual(status, 503)
        admin(self.node, "POST", "users", {"name": "jack"})
        # The CLI prints a link; opening it sets the password.
        out = subprocess.run([BINARY, "user", "reset-link", "jack", "--node", self.node.url],
                             input=ADMIN_KEY + "\n", capture_output=True, text=True, timeout=60,
                             env={"INFERLLAMA_ADMIN_KEY": ADMIN_KEY, "PATH": "/usr/bin:/bin"})
        self.assertEqual(out.returncode, 0, out.stderr)
        token = out.stdout.split("token=")[1].split()[0]
        status, answer, _ = b.call("POST", "reset", {"token": token, "password": PASSWORD}, csrf=False)
        self.assertEqual(status, 200, answer)
        self.assertEqual(Browser(self.node).sign_in("jack")[0], 200)


if __name__ == "__main__":
    unittest.main()
