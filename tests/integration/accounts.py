"""Helpers for tests of users, keys and limits: the admin API, and many requests at once with curl."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import FakeHub, Node, wait_until

ADMIN_KEY = "test-admin-key-0123456789"


def admin(node, method: str, path: str, body: dict | None = None, key: str = ADMIN_KEY):
    """(status, JSON answer) of the node's admin API."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    status, _, answer = node.request(method, "/api/inferllama/" + path, headers, data)
    return status, json.loads(answer or b"null")


def add_user(node, name: str, email: str = "") -> str:
    """Creates a user with one key; returns the key's secret."""
    status, user = admin(node, "POST", "users", {"name": name, "email": email})
    assert status == 201, (status, user)
    status, key = admin(node, "POST", "keys", {"user": name, "label": "test"})
    assert status == 201, (status, key)
    return key["key"]


class HostedNodeCase(unittest.TestCase):
    """A fake Hub and a node with `users` (their node keys in `keys`), once per class."""

    users: tuple[str, ...] = ("alice", "bob")
    hub_args: tuple[str, ...] = ()
    node_args: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-hosting-")
        cls.hub = FakeHub(*cls.hub_args).start()
        cls.node = None
        try:
            cls.node = Node(cls.hub.url, None, *cls.node_args, admin_key=ADMIN_KEY).start()
            cls.keys = {name: add_user(cls.node, name) for name in cls.users}
        except BaseException:
            cls.tearDownClass()  # a fake Hub or node left running would hold the test's output open
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.node is not None:
            cls.node.stop()
            cls.node.cleanup()
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def usage(node, key: str, query: str = "") -> list[dict]:
    status, _, body = node.request("GET", "/api/usage" + query, bearer(key))
    assert status == 200, (status, body)
    return json.loads(body)["usage"]


def usage_after(node, key: str, requests: int, query: str = "") -> list[dict]:
    """The usage rows once `requests` requests are in them: a request is recorded just after its answer."""
    def settled():
        rows = usage(node, key, query)
        return rows if totals(rows)["requests"] == requests else None
    return wait_until(settled, what=f"{requests} requests recorded")


def totals(rows: list[dict], who: str | None = None) -> dict:
    out = {"requests": 0, "tokens": 0, "bytes_from_cache": 0, "bytes_from_upstream": 0}
    for row in rows:
        if who is None or row["user"] == who:
            for k in out:
                out[k] += row[k]
    return out


def burst(urls: list[str], headers: dict | None = None, connections: int = 50) -> list[int]:
    """Fetches every URL with curl over `connections` parallel keep-alive connections; the statuses."""
    with tempfile.NamedTemporaryFile("w", suffix=".curl", delete=False) as f:
        for url in urls:
            f.write(f'url = "{url}"\noutput = "/dev/null"\n')
        config = f.name
    try:
        cmd = ["curl", "--silent", "--parallel", "--parallel-immediate", "--parallel-max", str(connections),
               "--config", config, "--write-out", "%{http_code}\\n"]
        for name, value in (headers or {}).items():
            cmd += ["--header", f"{name}: {value}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
        return [int(line) for line in out.split()]
    finally:
        os.unlink(config)


