#!/usr/bin/env python3
"""What a console session check costs on the request path: the same node answering the same user's usage
rows, once authenticated by the console's cookies (inferllama_session JWT: base64url, HMAC-SHA256 of the
header and claims, a JSON parse, a look-up of the session) and once by the user's API key (Bearer il_...:
one SHA-256 and a look-up). Both requests then take the same path (the rows are read on the blocking pool).

Load: wrk -t2 -c32 for --duration seconds, cookie and key alternately, --reps times; the median requests/s
of each. Anchor: the key. Printed: cookie/key (1.0 = a session check costs no more than a key check).
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import urllib.request

import common as c

ADMIN_KEY = "bench-admin-key-0123456789"
PASSWORD = "bench passphrase 0123"


def admin_call(node, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(node.url + "/api/inferllama/" + path,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def sign_in(node) -> str:
    """The Cookie header of a fresh console session."""
    conn = http.client.HTTPConnection("127.0.0.1", int(node.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("POST", "/api/inferllama/console/sign-in", json.dumps({"user": "bench", "password": PASSWORD}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"sign-in answered {r.status}")
    cookies = [v.split(";", 1)[0] for k, v in r.getheaders() if k.lower() == "set-cookie"]
    return "; ".join(cookies)


def wrk(url: str, header: str, duration: int) -> float:
    out = c.run(["wrk", "-t2", "-c32", f"-d{duration}s", "-H", header, url], timeout=duration + 60)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"refused requests under load:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    c.check_binary()
    with c.node("http://127.0.0.1:9", "--offline", "--cookie-secure", "false", admin_key=ADMIN_KEY) as node:
        admin_call(node, "POST", "users", {"name": "bench"})
        admin_call(node, "POST", "users/bench/password", {"password": PASSWORD})
        key = admin_call(node, "POST", "keys", {"user": "bench"})["key"]
        results = {"cookie": [], "key": []}
        for rep in range(args.reps):
            # The session's JWT is good for 15 minutes: a fresh one each repetition.
            cookie = sign_in(node)
            results["cookie"].append(wrk(node.url + "/api/inferllama/console/usage", f"Cookie: {cookie}", args.duration))
            results["key"].append(wrk(node.url + "/api/usage", f"Authorization: Bearer {key}", args.duration))
            print(f"# rep {rep + 1}: cookie {results['cookie'][-1]:.0f} req/s, key {results['key'][-1]:.0f} req/s",
                  flush=True)
    cookie_rps, key_rps = c.median(results["cookie"]), c.median(results["key"])
    print()
    c.table(["authenticated by", "requests/s"], [["console cookies", f"{cookie_rps:.0f}"], ["API key", f"{key_rps:.0f}"]])
    print()
    c.ratio("console_cookie_vs_key_rps", cookie_rps / key_rps, "cookie/key, higher is better, 1.0 = same cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
