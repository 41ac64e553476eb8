#!/usr/bin/env python3
"""Crash test in the spirit of RocksDB's: start the node, run parallel downloads with upstream faults,
kill -9 it at a random moment, restart it offline and check that every file it serves as cached hashes
to the Hub's etag; repeat. The test suite runs a few iterations (test_crash.py); run this script for
a long run:  python3 tests/integration/crash_loop.py --iterations 200 [--seed N]"""
import argparse
import concurrent.futures
import os
import random
import shutil
import signal
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256  # noqa: E402

MODELS = ["acme/tiny-model", "acme/big-model", "acme/new-name"]


def all_files(hub):
    out = []
    for repo in MODELS:
        commit = hub.commit(repo)
        for path, f in hub.files(repo).items():
            out.append((repo, commit, path, f["sha256"]))
    return out


def one_iteration(hub, data_dir, rng, counts):
    files = all_files(hub)
    faults = [{"match": f[3], "kind": rng.choice(["reset_after_bytes", "truncate"]), "bytes": rng.randint(0, 3 << 20),
               "times": rng.randint(1, 3)} for f in rng.sample(files, 2)]
    hub.faults(faults)
    node = Node(hub.url, data_dir, "--upstream-retries", "2", "--log-level", "warn").start()
    killer = threading.Timer(rng.uniform(0.05, 1.5), lambda: node.proc.send_signal(signal.SIGKILL))
    killer.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            def get(f):
                repo, commit, path, _ = f
                try:
                    node.request("GET", node.resolve_path(repo, "main" if rng.random() < 0.5 else commit, path))
                except Exception:  # the node dies under the clients: expected
                    pass
            list(pool.map(get, rng.sample(files, len(files))))
    finally:
        killer.cancel()
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
        node.stop()
    counts["killed"] += 1

    # Restart without the Hub's help: what it serves must be right, whatever the moment of the kill.
    check = Node(hub.url, data_dir, "--offline", "--log-level", "warn").start()
    try:
        for repo, commit, path, digest in files:
            status, _, body = check.request("GET", check.resolve_path(repo, commit, path))
            if status == 200:
                counts["cached_files_verified"] += 1
                if sha256(body) != digest:
                    raise AssertionError(f"{repo}@{commit}/{path} is listed as cached but does not hash to its etag")
            elif status != 504:
                raise AssertionError(f"{repo}/{path}: unexpected status {status} after restart")
    finally:
        code = check.stop()
    if code != 0:
        raise AssertionError(f"the restarted node exited with {code}")


def run(iterations: int, seed: int) -> dict:
    rng = random.Random(seed)
    counts = {"killed": 0, "cached_files_verified": 0}
    data_dir = tempfile.mkdtemp(prefix="inferllama-crash-")
    hub = FakeHub("--big-file-size", str(24 << 20), "--cdn-rate", str(32 << 20)).start()
    try:
        for i in range(iterations):
            if rng.random() < 0.2:  # sometimes start from nothing
                shutil.rmtree(data_dir, ignore_errors=True)
                os.makedirs(data_dir)
            one_iteration(hub, data_dir, rng, counts)
    finally:
        hub.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args()
    print(f"seed {args.seed}")
    result = run(args.iterations, args.seed)
    print(f"{result['killed']} kill -9s, {result['cached_files_verified']} cached files verified after restarts, "
          "0 inconsistencies")
