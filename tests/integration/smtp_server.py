"""A real SMTP server on loopback for the console's mail: Debian's aiosmtpd (for /usr/bin/python3), storing
every message it receives in a Maildir the tests read."""
from __future__ import annotations

import email
import email.utils
import email.policy
import mailbox
import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

from accounts import ADMIN_KEY
from harness import FakeHub, Node, free_port, wait_until

AIOSMTPD_PYTHON = "/usr/bin/python3"  # python3-aiosmtpd is Debian's, for Debian's Python


class SmtpServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="inferllama-smtp-")
        self.maildir = os.path.join(self.dir, "Maildir")
        self.port = 0
        self.proc = None
        self.log = None

    def start(self) -> "SmtpServer":
        # The port is taken from a socket just closed: aiosmtpd binds it itself, and the test waits until it
        # answers before any node uses it.
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "smtpd.log"), "ab")
        self.proc = subprocess.Popen(
            [AIOSMTPD_PYTHON, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}",
             "-c", "aiosmtpd.handlers.Mailbox", self.maildir],
            stdout=subprocess.DEVNULL, stderr=self.log)

        def answers():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    return s.recv(64).startswith(b"220")
            except OSError:
                return False
        wait_until(answers, what="the SMTP server's greeting")
        return self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def messages(self) -> list[email.message.EmailMessage]:
        if not os.path.isdir(self.maildir):
            return []
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]

    def mail_to(self, address: str, subject: str = "") -> email.message.EmailMessage:
        """The mail to `address` whose subject holds `subject`, once it has arrived (the only one: Date has
        whole seconds, so two mails of one second cannot be told apart by it)."""
        def arrived():
            mails = [m for m in self.messages() if address in str(m["To"]) and subject in str(m["Subject"])]
            assert len(mails) <= 1, [str(m["Subject"]) for m in mails]
            return mails[0] if mails else None
        return wait_until(arrived, what=f"a mail to {address} about {subject!r}")

    @staticmethod
    def link(message, route: str) -> str:
        """The token of the console link to `route` (verify, reset) in the message."""
        body = message.get_content()
        match = re.search(r"#/" + route + r"\?token=([A-Za-z0-9_-]+)", body)
        assert match, body
        return match.group(1)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.log:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class MailNodeCase(unittest.TestCase):
    """An SMTP server, a fake Hub and a node that mails through it (sign-up on), once per class;
    `node_args(cls)` adds flags (public_url is http://node.example unless given)."""

    @classmethod
    def node_args(cls) -> list[str]:
        return ["--public-url", "http://node.example"]

    @classmethod
    def setUpClass(cls):
        cls.smtp = SmtpServer().start()
        cls.hub = FakeHub().start()
        cls.node = None
        try:
            cls.node = Node(cls.hub.url, None, "--signup", "true", "--smtp-url", cls.smtp.url,
                            "--smtp-from", "node@inferllama.test", *cls.node_args(), admin_key=ADMIN_KEY).start()
        except BaseException:
            cls.tearDownClass()  # a server left running would hold the test's output open
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.node is not None:
            cls.node.stop()
            cls.node.cleanup()
        cls.hub.stop()
        cls.smtp.stop()
