"""Transmission 3.00 (transmission-daemon, torrents added with transmission-remote, progress read over its
RPC) against the node across namespaces: the v1 torrent over the node's peer wire alone (its HTTP port
unreachable: peers from the UDP tracker), over its web seed alone (its peer wire unreachable) and as a
magnet link (metadata from the node's seed, BEP 9). Transmission 3.00 reads neither hybrid nor v2
torrents; the tests show how it refuses them. Every file it writes must equal the fake Hub's."""
from __future__ import annotations

import os

from bt_clients import NAME, NodeOnNetworkTest, Transmission


class TransmissionTest(NodeOnNetworkTest):
    def transmission(self, name: str) -> Transmission:
        return Transmission(self.client_host(name), self.workdir(name)).start()

    def download(self, client: Transmission, source: str, kind: str = "v1") -> None:
        added = client.add(source)
        self.assertEqual(added.returncode, 0, f"{added.stdout}{added.stderr}{client.logs()}")
        client.wait_complete(self.info_hash(kind))
        # Transmission 3.00 creates no file for an empty file of a torrent.
        self.assert_snapshot(os.path.join(client.downloads, NAME), empty_files_created=False)

    def test_v1_peer_wire(self):
        torrent = self.torrent_file("v1")
        client = self.transmission("transmission")
        self.block_http(client.host)
        before = self.sources()
        self.download(client, torrent)
        self.assert_came_from(before, "seed")

    def test_v1_web_seed(self):
        torrent = self.torrent_file("v1")
        client = self.transmission("transmission")
        self.block_seed(client.host)
        before = self.sources()
        self.download(client, torrent)
        self.assert_came_from(before, "web seed")

    def test_v1_magnet(self):
        magnet = self.magnet_link("v1")
        client = self.transmission("transmission")
        self.download(client, magnet)

    def test_hybrid_torrent_is_refused(self):
        torrent = self.torrent_file("hybrid")
        client = self.transmission("transmission")
        added = client.add(torrent)
        self.assertNotEqual(added.returncode, 0, added.stdout)
        self.assertIn("invalid or corrupt torrent file", added.stdout + added.stderr)
        self.assertEqual(client.call("torrent-get", {"fields": ["hashString"]})["torrents"], [])

    def test_v2_torrent_is_refused(self):
        torrent = self.torrent_file("v2")
        client = self.transmission("transmission")
        added = client.add(torrent)
        self.assertNotEqual(added.returncode, 0, added.stdout)
        self.assertIn("invalid or corrupt torrent file", added.stdout + added.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
