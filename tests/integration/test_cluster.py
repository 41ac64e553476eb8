"""Several nodes on real network namespaces (cluster.py): parents in front of the fake Hub, edges in front of
the parents, clients pulling with curl, a shared Redis.

- One parent with a capped uplink and four edges pulling the same large file cold: the Hub sends it once and
  the parent's uplink carries at most two copies (the edges share what they get among themselves).
- Three parents: each file crosses from the Hub once; a parent killed mid-transfer is skipped and every
  client still gets the right bytes, with the Hub out of the edges' reach; with a fallback, edges whose
  parents are all gone fetch from the Hub.
- An edge's link cut mid-transfer and back: the transfer completes, and what the edge stored is right.
- Redis stopped mid-run: the edges decide locally (as documented), and once it is back the limit is one
  again across the edges.

Bounded in time: every wait polls an observable state with a deadline. Needs root (netns.require()).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import unittest

import netns
from accounts import add_user, bearer, burst
from cluster import MIB, Cluster, poll

DEADLINE = 120
_hub_blobs = ""


def setUpModule():
    global _hub_blobs
    netns.require()
    _hub_blobs = tempfile.mkdtemp(prefix="inferllama-cluster-blobs-")  # the fake Hub's files, made once


def tearDownModule():
    if _hub_blobs:
        shutil.rmtree(_hub_blobs, ignore_errors=True)


def sized(count: int, size: int) -> tuple[str, ...]:
    """The fake Hub's acme/sized-0..count-1, one model.safetensors of `size` bytes each."""
    return ("--sized-models", str(count), "--sized-model-size", str(size))


MODEL = "model.safetensors"


class ClusterTest(unittest.TestCase):
    def make(self, **kwargs) -> Cluster:
        cluster = Cluster(hub_data_dir=_hub_blobs, **kwargs).start()
        self.addCleanup(cluster.close)
        return cluster

    def assert_pulled(self, cluster: Cluster, pulls) -> None:
        """Every pull got the whole file with the right bytes."""
        for pull in pulls:
            repo = pull.url.split("/resolve/")[0].split("/", 3)[3]
            f = cluster.file(repo, MODEL)
            self.assertTrue(pull.ok, f"{pull.client} {pull.url}: exit {pull.exit_code}, status {pull.status}: "
                                     f"{pull.error}")
            self.assertEqual((pull.size, pull.sha256), (f["size"], f["sha256"]), f"{pull.client} {pull.url}")

    # -- a ---------------------------------------------------------------------------------------------

    def test_one_parent_four_edges_cold(self):
        size = 256 * MIB
        cluster = self.make(parents=1, edges=4, clients=4, hub_args=sized(1, size))
        parent = cluster.parents[0]
        parent.host.cap("400mbit")
        repo = "acme/sized-0"
        self.assertEqual(cluster.file(repo, MODEL)["size"], size)
        self.assertEqual(cluster.hub_bytes(repo, MODEL), 0)
        sent = parent.host.tx_bytes()
        started = time.monotonic()
        pulls = cluster.pull_together([(c, e, repo, MODEL) for c, e in zip(cluster.clients, cluster.edges)])
        elapsed = time.monotonic() - started
        uplink = parent.host.tx_bytes() - sent
        self.assert_pulled(cluster, pulls)

        hub_ratio = cluster.hub_bytes(repo, MODEL) / size
        uplink_ratio = uplink / size
        print(f"\n4 edges x {size // MIB} MiB cold behind 1 parent (400 Mbit/s up) in {elapsed:.1f} s: "
              f"Hub bytes / size {hub_ratio:.3f}, parent uplink / size {uplink_ratio:.2f}", flush=True)
        seeded = ((parent.cluster_state() or {}).get("bytes") or {}).get("to_peers", 0)
        print(f"  {parent.name}'s link sent {uplink / MIB:.0f} MiB, its seed {seeded / MIB:.0f} MiB", flush=True)
        for pull, edge in zip(pulls, cluster.edges):
            b = (edge.cluster_state() or {}).get("bytes", {})
            print(f"  {pull.client}: TTFB {pull.ttfb:.2f} s, total {pull.total:.2f} s; {edge.name} "
                  f"MiB from the parent {b.get('from_parents', 0) / MIB:.0f}, from peers "
                  f"{b.get('from_peers', 0) / MIB:.0f}, to peers {b.get('to_peers', 0) / MIB:.0f}", flush=True)
        self.assertAlmostEqual(hub_ratio, 1.0, delta=0.02)
        self.assertLessEqual(uplink_ratio, 2.0)

    # -- b ---------------------------------------------------------------------------------------------

    def test_three_parents_kill_one(self):
        size = 32 * MIB
        # Round one on e1..e3 (sized-0..2), round two on fresh edges e4..e6 (sized-3..5).
        cluster = self.make(parents=3, edges=3, clients=3, hub_args=sized(6, size), isolate_hub=True)
        for edge in cluster.edges:
            reach = edge.host.run(["curl", "-s", "-o", "/dev/null", "--max-time", "2", cluster.hub_url])
            self.assertNotEqual(reach.returncode, 0, f"{edge.name} reaches the Hub")

        # Round one: every edge pulls every file; each file crosses from the Hub once.
        first = [f"acme/sized-{i}" for i in range(3)]
        pulls = cluster.pull_together([(c, e, repo, MODEL) for c, e in zip(cluster.clients, cluster.edges)
                                       for repo in first])
        self.assert_pulled(cluster, pulls)
        stats = cluster.hub.stats()
        for repo in first:
            self.assertEqual(cluster.hub_bytes(repo, MODEL, stats=stats), size, repo)
        print("\nround one, parents' uplinks (MiB): " +
              ", ".join(f"{p.name} {p.host.tx_bytes() / MIB:.0f}" for p in cluster.parents), flush=True)

        # Round two: fresh edges and files; the first parent to send a few MiB of them is killed.
        for parent in cluster.parents:
            parent.host.cap("100mbit")  # so a transfer lasts long enough to be cut
        edges = [cluster.add_edge() for _ in range(3)]
        second = [f"acme/sized-{i}" for i in range(3, 6)]
        sent = {p.name: p.host.tx_bytes() for p in cluster.parents}
        jobs = cluster.start_pulls_together([(c, e, repo, MODEL) for c, e in zip(cluster.clients, edges)
                                             for repo in second])

        def sending():
            for p in cluster.parents:
                if p.host.tx_bytes() - sent[p.name] >= 6 * MIB:
                    return p
            return None
        victim = poll(sending, DEADLINE, "a parent to send part of a file")
        victim.kill()
        killed_at = time.monotonic()
        self.assertTrue(any(job.thread.is_alive() for job in jobs), "every pull was over before the kill")
        pulls = [job.wait(DEADLINE) for job in jobs]
        print(f"round two: {victim.name} killed; the last pull ended "
              f"{max(p.started + p.total for p in pulls) - killed_at:.1f} s later", flush=True)
        self.assert_pulled(cluster, pulls)
        stats = cluster.hub.stats()
        for repo in second:  # a file the killed parent was fetching may cross again, through another parent
            self.assertGreaterEqual(cluster.hub_bytes(repo, MODEL, stats=stats), size, repo)

        # The edges saw the killed parent fail and went on without it.
        failures = 0
        states = {edge.name: edge.cluster_state() for edge in edges}
        for name, state in states.items():
            self.assertIsNotNone(state, f"{name}: GET /api/inferllama/cluster")
            upstreams = {u["url"].rstrip("/"): u for u in state["upstreams"]}
            self.assertEqual(set(upstreams), {p.url for p in cluster.parents})
            self.assertTrue(all(u["kind"] in ("parent", "unknown") and not u["fallback"]
                                for u in upstreams.values()), state)
            failures += upstreams[victim.url]["failures"]
            for p in cluster.parents:
                if p is not victim and upstreams[p.url]["failures"] == 0:
                    self.assertTrue(upstreams[p.url]["healthy"], state)
        self.assertGreater(failures, 0)
        # Every byte came from a parent (the Hub is out of the edges' reach), and the route says so.
        for name, state in states.items():
            self.assertEqual(state["bytes"]["from_hub"], 0, f"{name} counts bytes as the Hub's: {state}")

    def test_three_parents_all_killed_edges_fall_back_to_the_hub(self):
        size = 32 * MIB
        cluster = self.make(parents=3, edges=2, clients=2, hub_args=sized(2, size), edge_fallback=True)
        for parent in cluster.parents:
            parent.host.cap("100mbit")
        files = ["acme/sized-0", "acme/sized-1"]
        sent = {p.name: p.host.tx_bytes() for p in cluster.parents}
        jobs = cluster.start_pulls_together([(c, e, repo, MODEL) for c, e in zip(cluster.clients, cluster.edges)
                                             for repo in files])
        poll(lambda: sum(p.host.tx_bytes() - sent[p.name] for p in cluster.parents) >= 6 * MIB, DEADLINE,
             "the parents to send part of the files")
        for parent in cluster.parents:
            parent.kill()
        pulls = [job.wait(DEADLINE) for job in jobs]
        self.assert_pulled(cluster, pulls)
        from_hub = 0
        for edge in cluster.edges:
            state = edge.cluster_state()
            self.assertIsNotNone(state, f"{edge.name}: GET /api/inferllama/cluster")
            fallback = [u for u in state["upstreams"] if u["fallback"]]
            self.assertEqual([u["url"].rstrip("/") for u in fallback], [cluster.hub_url], state)
            from_hub += state["bytes"]["from_hub"]
        self.assertGreater(from_hub, 0)
        print(f"\nall parents killed: the edges took {from_hub / MIB:.0f} MiB from the Hub", flush=True)

    # -- c ---------------------------------------------------------------------------------------------

    def test_edge_link_cut_and_back(self):
        size = 128 * MIB
        cluster = self.make(parents=1, edges=1, clients=1, hub_args=sized(1, size))
        parent, edge, client = cluster.parents[0], cluster.edges[0], cluster.clients[0]
        parent.host.cap("300mbit")
        edge.host.cap("200mbit")  # about 5 s for the client's copy: time to cut it
        repo = "acme/sized-0"
        job = cluster.start_pull(client, edge, repo, MODEL)
        poll(lambda: job.received() >= 24 * MIB, DEADLINE, "the client to receive part of the file")
        edge.host.set_link(False)
        at = job.received()
        time.sleep(3)  # the fault itself: the link stays down this long
        edge.host.set_link(True)
        pull = job.wait(DEADLINE)
        print(f"\nlink down at {at / MIB:.0f} MiB for 3 s: the pull took {pull.total:.1f} s", flush=True)
        self.assert_pulled(cluster, [pull])
        self.assertLess(at, size)

        # The edge stored the right bytes: a second GET is a hit, with nothing from the parent.
        wait_for_cached = lambda: edge.metric("inferllama_downloads_in_flight") == 0  # noqa: E731
        poll(wait_for_cached, DEADLINE, "the edge's download to finish")
        before = edge.metrics()
        parent_sent = parent.host.tx_bytes()
        pull = cluster.pull(client, edge, repo, MODEL)
        self.assert_pulled(cluster, [pull])
        after = edge.metrics()
        hit = after.get('inferllama_served_bytes_total{source="cache"}', 0) - \
            before.get('inferllama_served_bytes_total{source="cache"}', 0)
        self.assertEqual(hit, size)
        self.assertLess(parent.host.tx_bytes() - parent_sent, 1 * MIB)

    # -- d ---------------------------------------------------------------------------------------------

    def test_redis_stopped_mid_run(self):
        limit = 20
        cluster = self.make(parents=1, edges=0, redis=True)  # the edges need the Redis URL: added below
        backend = ("--ratelimit-backend", cluster.redis.url, "--limit-users", f"alice: requests={limit}/1h",
                   "--limit-anonymous", "requests=100000/1h")
        edges = [cluster.add_edge(*backend) for _ in range(4)]
        keys = {edge.name: add_user(edge.node, "alice") for edge in edges}
        path = edges[0].node.resolve_path("acme/tiny-model", "main", "config.json")
        for edge in edges:  # warm every edge outside the count (anonymous)
            self.assertEqual(edge.request("GET", path)[0], 200)

        def round_(per_edge: int) -> dict[str, list[int]]:
            """`per_edge` requests of alice's at every edge, all at once: the statuses per edge."""
            got: dict[str, list[int]] = {}

            def one(edge):
                got[edge.name] = burst([edge.url + path] * per_edge, bearer(keys[edge.name]), connections=8)
            threads = [threading.Thread(target=one, args=(e,)) for e in edges]
            for t in threads:
                t.start()
            for t in threads:
                t.join(DEADLINE)
            return got

        up = 'inferllama_ratelimit_backend_up{backend="redis"}'
        got = round_(limit)
        admitted = sum(s.count(200) for s in got.values())
        self.assertEqual(sorted(set(sum(got.values(), []))), [200, 429], got)
        self.assertEqual(admitted, limit, got)

        cluster.redis.stop()
        # Anonymous requests (limited too, so asked of Redis) show every edge when it notices.
        for edge in edges:
            poll(lambda: edge.request("GET", path)[0] == 200 and edge.metric(up) == 0, DEADLINE,
                 f"{edge.name} to decide without Redis")
        got = round_(2 * limit)
        print(f"\nRedis down, alice's admitted requests per edge: "
              f"{ {name: s.count(200) for name, s in got.items()} }", flush=True)
        for edge in edges:
            statuses = got[edge.name]
            self.assertEqual(len(statuses), 2 * limit)
            self.assertNotIn(503, statuses)
            # Each edge applies the limit by itself: its own count, from nothing.
            self.assertEqual(statuses.count(200), limit, statuses)
            self.assertEqual(statuses.count(429), limit, statuses)
            self.assertGreater(edge.metric('inferllama_ratelimit_fallback_decisions_total{backend="redis"}'), 0)
            self.assertIn("deciding locally", edge.log_text())
            limits = (edge.cluster_state() or {}).get("limits")
            self.assertEqual(limits, {"backend": "redis", "connected": False})

        # Redis again, at the same address (and empty: it keeps nothing): one limit across the edges again.
        cluster.redis.start()
        for edge in edges:
            poll(lambda: edge.request("GET", path)[0] == 200 and edge.metric(up) == 1, DEADLINE,
                 f"{edge.name} to use Redis again")
        got = round_(limit)
        self.assertEqual(sum(s.count(200) for s in got.values()), limit, got)
        for edge in edges:
            self.assertEqual(edge.cluster_state()["limits"], {"backend": "redis", "connected": True})


if __name__ == "__main__":
    unittest.main()
