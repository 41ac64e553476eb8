"""Two nodes share one set of limits through a real redis-server on loopback."""
from __future__ import annotations

import unittest

from accounts import burst
from harness import FakeHub, Node, Redis, wait_until

REPO = "acme/tiny-model"


class SharedLimitTest(unittest.TestCase):
    def test_two_nodes_admit_exactly_one_limit(self):
        with FakeHub() as hub, Redis() as redis:
            args = ("--ratelimit-backend", redis.url(), "--limit-anonymous", "requests=100/1m")
            with Node(hub.url, None, *args) as a, Node(hub.url, None, *args) as b:
                path = a.resolve_path(REPO, "main", "config.json")
                for node in (a, b):  # warm both caches outside the limit's count
                    self.assertEqual(node.request("GET", path)[0], 200)
                spent = 2
                urls = [(a if i % 2 else b).url + path for i in range(2000)]
                got = burst(urls, connections=50)
                self.assertEqual(len(got), 2000)
                self.assertLessEqual(abs(got.count(200) - (100 - spent)), 1, got.count(200))
                self.assertEqual(a.metric('inferllama_ratelimit_backend_up{backend="redis"}'), 1)
                refused_a = a.metric('inferllama_ratelimit_decisions_total{backend="redis",result="refused"}')
                refused_b = b.metric('inferllama_ratelimit_decisions_total{backend="redis",result="refused"}')
                self.assertGreater(refused_a, 0)
                self.assertGreater(refused_b, 0)

    def test_redis_down_falls_back_to_local_limits_or_refuses(self):
        with FakeHub() as hub, Redis() as redis:
            local = Node(hub.url, None, "--ratelimit-backend", redis.url(), "--ratelimit-timeout", "100ms",
                         "--limit-anonymous", "requests=1000/1m").start()
            refusing = Node(hub.url, None, "--ratelimit-backend", redis.url(), "--ratelimit-timeout", "100ms",
                            "--ratelimit-fallback", "refuse", "--limit-anonymous", "requests=1000/1m").start()
            try:
                path = local.resolve_path(REPO, "main", "config.json")
                self.assertEqual(local.request("GET", path)[0], 200)
                self.assertEqual(refusing.request("GET", path)[0], 200)
                redis.stop()
                wait_until(lambda: local.request("GET", path)[0] == 200 and
                           local.metric('inferllama_ratelimit_backend_up{backend="redis"}') == 0,
                           what="the local fallback")
                self.assertGreater(local.metric('inferllama_ratelimit_fallback_decisions_total{backend="redis"}'), 0)
                status, headers, _ = refusing.request("GET", path)
                self.assertEqual(status, 503)
                self.assertEqual(headers["retry-after"], "1")
                with open(local.log_path) as f:
                    self.assertIn("deciding locally", f.read())
                # Redis back on the same port: decisions are shared again.
                redis.start()
                wait_until(lambda: local.request("GET", path)[0] == 200 and
                           local.metric('inferllama_ratelimit_backend_up{backend="redis"}') == 1,
                           what="Redis again")
                wait_until(lambda: refusing.request("GET", path)[0] == 200, what="the refusing node recovers")
            finally:
                local.stop()
                local.cleanup()
                refusing.stop()
                refusing.cleanup()


if __name__ == "__main__":
    unittest.main()
