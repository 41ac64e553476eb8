"""The node's BitTorrent tracker over real sockets: HTTP announce/scrape through the node's listener and
BEP 15 over UDP (connect, announce, scrape, bad connection ids, short and malformed packets, IPv6), and its
bounds under a flood of peers, addresses and info-hashes."""
from __future__ import annotations

import os
import random
import socket
import struct
import unittest
import urllib.parse

from harness import FakeHub, Node

PROTOCOL_ID = 0x41727101980


def bdecode(data: bytes):
    """A small bencode reader (ints, byte strings, lists, dicts) that checks dict keys are sorted."""
    def parse(i: int):
        c = data[i:i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1:end]), end + 1
        if c in (b"l", b"d"):
            i += 1
            items, last = [], None
            while data[i:i + 1] != b"e":
                v, i = parse(i)
                items.append(v)
            if c == b"l":
                return items, i + 1
            keys = items[0::2]
            assert keys == sorted(keys), f"unsorted keys {keys}"
            return dict(zip(keys, items[1::2])), i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        return data[colon + 1:colon + 1 + n], colon + 1 + n
    value, end = parse(0)
    assert end == len(data), "trailing bytes"
    return value


def compact_peers(blob: bytes, size: int = 6) -> set[tuple[str, int]]:
    out = set()
    for i in range(0, len(blob), size):
        raw = blob[i:i + size]
        family = socket.AF_INET if size == 6 else socket.AF_INET6
        out.add((socket.inet_ntop(family, raw[:-2]), struct.unpack(">H", raw[-2:])[0]))
    return out


def announce_query(info_hash: bytes, port: int, **extra) -> str:
    params = {"info_hash": info_hash, "peer_id": b"-IL0001-" + os.urandom(6).hex().encode()[:12],
              "port": str(port), "uploaded": "0", "downloaded": "0", "left": "100", "compact": "1"}
    params.update(extra)
    return "/announce?" + urllib.parse.urlencode(params)


class UdpClient:
    """One BEP 15 client socket."""

    def __init__(self, host: str, port: int, family=socket.AF_INET, source: str | None = None):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        if source:
            self.sock.bind((source, 0))  # another loopback address: another peer address
        self.sock.connect((host, port))

    def close(self):
        self.sock.close()

    def ask(self, packet: bytes, timeout: float = 3) -> bytes | None:
        self.sock.settimeout(timeout)
        self.sock.send(packet)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            return None

    def connect(self) -> int:
        tid = random.getrandbits(32)
        reply = self.ask(struct.pack(">QII", PROTOCOL_ID, 0, tid))
        action, got_tid, cid = struct.unpack(">IIQ", reply)
        assert (action, got_tid) == (0, tid)
        return cid

    @staticmethod
    def announce_packet(cid: int, info_hash: bytes, port: int, left: int = 100, event: int = 2,
                        numwant: int = -1, tid: int = 7) -> bytes:
        return struct.pack(">QII20s20sQQQIIIiH", cid, 1, tid, info_hash, os.urandom(20), 0, left, 0, event, 0,
                           0, numwant, port)


def error_message(reply: bytes | None) -> str | None:
    if reply is None or len(reply) < 8 or struct.unpack(">I", reply[:4])[0] != 3:
        return None
    return reply[8:].decode()


class OpenTrackerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url, None, "--tracker-open", "--tracker-udp", "127.0.0.1:0",
                        "--tracker-numwant", "30", "--tracker-full-scrape").start()
        cls.udp_port = cls.node.udp_tracker_port
        assert cls.udp_port, "the node printed no tracker line"

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def http(self, path: str):
        status, headers, body = self.node.request("GET", path)
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("content-type"), "text/plain")
        return bdecode(body)

    def test_http_announce_and_scrape(self):
        h = os.urandom(20)
        first = self.http(announce_query(h, 7001))
        self.assertEqual(first[b"incomplete"], 1)
        self.assertEqual(first[b"peers"], b"")
        self.assertEqual(first[b"interval"], 1800)
        self.assertEqual(first[b"min interval"], 300)
        second = self.http(announce_query(h, 7002, left="0", event="completed"))
        self.assertEqual(compact_peers(second[b"peers"]), {("127.0.0.1", 7001)})
        self.assertEqual((second[b"complete"], second[b"incomplete"], second[b"downloaded"]), (1, 1, 1))
        # Non-compact (dictionary model).
        third = self.http(announce_query(h, 7003, compact="0"))
        self.assertEqual({(p[b"ip"].decode(), p[b"port"]) for p in third[b"peers"]},
                         {("127.0.0.1", 7001), ("127.0.0.1", 7002)})
        # Scrape: several hashes, one unknown (open mode: zeros); then a full scrape.
        other = os.urandom(20)
        scrape = self.http("/scrape?" + urllib.parse.urlencode([("info_hash", h), ("info_hash", other)]))
        self.assertEqual(scrape[b"files"][h], {b"complete": 1, b"incomplete": 2, b"downloaded": 1})
        self.assertEqual(scrape[b"files"][other], {b"complete": 0, b"incomplete": 0, b"downloaded": 0})
        self.assertIn(h, self.http("/scrape")[b"files"])
        # Stopped leaves the swarm.
        self.http(announce_query(h, 7003, event="stopped"))
        self.assertEqual(self.http("/scrape?" + urllib.parse.urlencode({"info_hash": h}))[b"files"][h][b"incomplete"], 1)

    def test_http_bad_parameters_get_a_failure_reason(self):
        h = os.urandom(20)
        cases = {
            "/announce?info_hash=abc&peer_id=" + "x" * 20 + "&port=1": b"invalid info_hash",
            announce_query(h, 0): b"invalid port",
            announce_query(h, 70000): b"invalid port",
            announce_query(h, 1, numwant="lots"): b"invalid numwant",
            "/announce?" + urllib.parse.urlencode({"info_hash": h, "port": "1"}): b"missing peer_id",
            "/announce": b"missing info_hash",
            "/announce?info_hash=%zz": b"invalid info_hash",
        }
        for path, reason in cases.items():
            with self.subTest(path=path):
                self.assertEqual(self.http(path)[b"failure reason"], reason)
        status, _, _ = self.node.request("POST", announce_query(h, 1))
        self.assertEqual(status, 405)

    def test_keep_alive_connection_serves_many_announces(self):
        import http.client
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=10)
        h = os.urandom(20)
        try:
            for port in range(8000, 8020):
                conn.request("GET", announce_query(h, port))
                r = conn.getresponse()
                bdecode(r.read())
            conn.request("GET", announce_query(h, 9000, numwant="5"))
            self.assertEqual(len(compact_peers(bdecode(conn.getresponse().read())[b"peers"])), 5)
        finally:
            conn.close()

    def test_udp_connect_announce_scrape(self):
        h = os.urandom(20)
        a, b = UdpClient("127.0.0.1", self.udp_port), UdpClient("127.0.0.1", self.udp_port)
        try:
            cid_a, cid_b = a.connect(), b.connect()
            reply = a.ask(UdpClient.announce_packet(cid_a, h, 6001))
            action, tid, interval, leechers, seeders = struct.unpack(">IIIII", reply[:20])
            self.assertEqual((action, tid, interval, leechers, seeders), (1, 7, 1800, 1, 0))
            self.assertEqual(reply[20:], b"")
            reply = b.ask(UdpClient.announce_packet(cid_b, h, 6002, left=0, event=1))
            self.assertEqual(struct.unpack(">IIIII", reply[:20])[3:], (1, 1))
            self.assertEqual(compact_peers(reply[20:]), {("127.0.0.1", 6001)})
            reply = a.ask(struct.pack(">QII", cid_a, 2, 99) + h + os.urandom(20))
            self.assertEqual(struct.unpack(">II6I", reply), (2, 99, 1, 1, 1, 0, 0, 0))
            # The HTTP side sees the same swarm.
            scrape = bdecode(self.node.request("GET", "/scrape?" + urllib.parse.urlencode({"info_hash": h}))[2])
            self.assertEqual(scrape[b"files"][h][b"complete"], 1)
        finally:
            a.close()
            b.close()

    def test_udp_wrong_connection_id_short_and_malformed_packets(self):
        c = UdpClient("127.0.0.1", self.udp_port)
        try:
            h = os.urandom(20)
            # A bad connection id gets no answer at all: the source address is unproven (no amplification).
            self.assertIsNone(c.ask(UdpClient.announce_packet(12345, h, 1), timeout=0.3))
            for n in (0, 1, 8, 15):
                self.assertIsNone(c.ask(os.urandom(n), timeout=0.3), f"{n} bytes answered")
            cid = c.connect()
            self.assertEqual(error_message(c.ask(UdpClient.announce_packet(cid, h, 1)[:97])), "announce too short")
            self.assertEqual(error_message(c.ask(UdpClient.announce_packet(cid, h, 0))), "invalid port")
            self.assertEqual(error_message(c.ask(UdpClient.announce_packet(cid, h, 1, event=77))), "invalid event")
            self.assertEqual(error_message(c.ask(struct.pack(">QII", cid, 5, 1))), "unknown action")
            self.assertIsNone(c.ask(struct.pack(">QII", 1, 0, 1) + bytes(100), timeout=0.3), "not a connect")
            # Still serving afterwards.
            self.assertEqual(struct.unpack(">I", c.ask(UdpClient.announce_packet(cid, h, 1))[:4])[0], 1)
        finally:
            c.close()

    def test_metrics(self):
        c = UdpClient("127.0.0.1", self.udp_port)
        try:
            self.assertIsNone(c.ask(UdpClient.announce_packet(1, os.urandom(20), 1), timeout=0.3))
        finally:
            c.close()
        self.http(announce_query(os.urandom(20), 1))
        m = self.node.metrics()
        self.assertGreaterEqual(m['inferllama_tracker_announces_total{transport="http",result="ok"}'], 1)
        self.assertGreaterEqual(m['inferllama_tracker_errors_total{transport="udp",kind="bad_connection_id"}'], 1)
        self.assertGreaterEqual(m["inferllama_tracker_swarms"], 1)
        self.assertIn('inferllama_tracker_peers{kind="leechers"}', m)
        self.assertGreaterEqual(m['inferllama_http_requests_total{route="announce",status="200"}'], 1)


class RestrictedTrackerTest(unittest.TestCase):
    def test_unknown_torrents_are_refused_on_both_transports(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-udp", "127.0.0.1:0") as node:
            h = os.urandom(20)
            status, _, body = node.request("GET", announce_query(h, 1))
            self.assertEqual(status, 200)
            self.assertIn(b"unknown torrent", bdecode(body)[b"failure reason"])
            self.assertIn(b"full scrape is disabled", bdecode(node.request("GET", "/scrape")[2])[b"failure reason"])
            c = UdpClient("127.0.0.1", node.udp_tracker_port)
            try:
                self.assertEqual(error_message(c.ask(UdpClient.announce_packet(c.connect(), h, 1))), "unknown torrent")
            finally:
                c.close()

    def test_no_udp_line_without_a_udp_tracker(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-udp", "") as node:
            self.assertIsNone(node.udp_tracker_port)
            self.assertEqual(node.request("GET", "/healthz")[0], 200)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class BoundedTrackerTest(unittest.TestCase):
    """Open mode under a flood: distinct info-hashes, addresses (127.0.0.0/8 is all loopback) and ports."""
    SWARMS, PER_SWARM, PER_ADDRESS = 100, 50, 4

    def test_a_flood_stays_under_the_bounds(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-open",
                                    "--tracker-max-swarms", str(self.SWARMS),
                                    "--tracker-max-peers-per-swarm", str(self.PER_SWARM),
                                    "--tracker-max-peers-per-address", str(self.PER_ADDRESS)) as node:
            port = node.udp_tracker_port
            c = UdpClient("127.0.0.1", port)
            clients = [c]
            try:
                cid = c.connect()
                rss_before = rss_bytes(node.proc.pid)
                # 1. Many swarms: the first SWARMS are tracked, every later one gets an error.
                answered = refused = 0
                for _ in range(20000):
                    reply = c.ask(UdpClient.announce_packet(cid, os.urandom(20), 6881))
                    action = struct.unpack(">I", reply[:4])[0]
                    answered += action == 1
                    refused += action == 3 and "too many swarms" in error_message(reply)
                self.assertEqual((answered, refused), (self.SWARMS, 20000 - self.SWARMS))
                status, _, body = node.request("GET", announce_query(os.urandom(20), 1))
                self.assertIn(b"too many swarms", bdecode(body)[b"failure reason"])

                # 2. The same from many addresses and ports: still no swarm beyond the cap.
                for last in range(2, 42):
                    peer = UdpClient("127.0.0.1", port, source=f"127.0.0.{last}")
                    clients.append(peer)
                    peer_cid = peer.connect()
                    for peer_port in range(7000, 7010):
                        reply = peer.ask(UdpClient.announce_packet(peer_cid, os.urandom(20), peer_port))
                        self.assertIn("too many swarms", error_message(reply))
                m = node.metrics()
                self.assertLessEqual(m["inferllama_tracker_swarms"], self.SWARMS)
                self.assertLessEqual(m["inferllama_tracker_open_swarms"], self.SWARMS)
                peers = m['inferllama_tracker_peers{kind="seeders"}'] + m['inferllama_tracker_peers{kind="leechers"}']
                self.assertLessEqual(peers, self.SWARMS * self.PER_SWARM)
                self.assertEqual(m['inferllama_tracker_refusals_total{reason="too_many_swarms"}'],
                                 20000 - self.SWARMS + 1 + 40 * 10)
                rss_after = rss_bytes(node.proc.pid)
                self.assertLess(rss_after - rss_before, 16 << 20, f"RSS {rss_before} -> {rss_after}")
            finally:
                for client in clients:
                    client.close()

    def test_caps_of_one_swarm_over_http_and_udp(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-open",
                                    "--tracker-max-peers-per-swarm", str(self.PER_SWARM),
                                    "--tracker-max-peers-per-address", str(self.PER_ADDRESS)) as node:
            hot = os.urandom(20)
            # One address, many ports: PER_ADDRESS of them are stored, the rest still get peers.
            for port in range(7000, 7020):
                reply = bdecode(node.request("GET", announce_query(hot, port))[2])
                self.assertNotIn(b"failure reason", reply)
            scrape = bdecode(node.request("GET", "/scrape?" + urllib.parse.urlencode({"info_hash": hot}))[2])
            self.assertEqual(scrape[b"files"][hot][b"incomplete"], self.PER_ADDRESS)
            self.assertEqual(len(compact_peers(reply[b"peers"])), self.PER_ADDRESS)
            # Many addresses: the swarm fills up to PER_SWARM and no further.
            clients = []
            try:
                for last in range(2, 40):
                    peer = UdpClient("127.0.0.1", node.udp_tracker_port, source=f"127.0.1.{last}")
                    clients.append(peer)
                    cid = peer.connect()
                    for port in range(7000, 7004):
                        reply = peer.ask(UdpClient.announce_packet(cid, hot, port))
                        self.assertEqual(struct.unpack(">I", reply[:4])[0], 1)
            finally:
                for client in clients:
                    client.close()
            scrape = bdecode(node.request("GET", "/scrape?" + urllib.parse.urlencode({"info_hash": hot}))[2])
            self.assertEqual(scrape[b"files"][hot][b"incomplete"], self.PER_SWARM)
            m = node.metrics()
            self.assertEqual(m['inferllama_tracker_refusals_total{reason="address_full"}'], 20 - self.PER_ADDRESS)
            self.assertEqual(m['inferllama_tracker_refusals_total{reason="swarm_full"}'],
                             self.PER_ADDRESS + 38 * 4 - self.PER_SWARM)


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(ipv6_loopback_works(), "no IPv6 loopback")
class Ipv6TrackerTest(unittest.TestCase):
    def test_udp_over_ipv6_returns_18_byte_peers(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-open", "--tracker-udp", "[::1]:0") as node:
            h = os.urandom(20)
            a, b = UdpClient("::1", node.udp_tracker_port, socket.AF_INET6), \
                UdpClient("::1", node.udp_tracker_port, socket.AF_INET6)
            try:
                a.ask(UdpClient.announce_packet(a.connect(), h, 6001))
                reply = b.ask(UdpClient.announce_packet(b.connect(), h, 6002))
                self.assertEqual(len(reply), 20 + 18)
                self.assertEqual(compact_peers(reply[20:], 18), {("::1", 6001)})
            finally:
                a.close()
                b.close()

    def test_wildcard_ipv6_socket_serves_ipv4_clients_too(self):
        with FakeHub() as hub, Node(hub.url, None, "--tracker-open", "--tracker-udp", "[::]:0") as node:
            c = UdpClient("127.0.0.1", node.udp_tracker_port)
            try:
                reply = c.ask(UdpClient.announce_packet(c.connect(), os.urandom(20), 6001))
                self.assertEqual(struct.unpack(">I", reply[:4])[0], 1)
            finally:
                c.close()


if __name__ == "__main__":
    unittest.main()
