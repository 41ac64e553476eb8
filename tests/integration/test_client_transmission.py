"""Transmission 3.00 (transmission-daemon, torrents added with transmission-remote, progress read over its
RPC) against the node across namespaces: the v1 torrent over the node's peer wire alone (its HTTP port
unreachable: peers from the UDP tracker), over its web seed alone (its peer wire unreachable) and as a
magnet link (metadata from the node's seed, BEP 9). Transmission 3.00 reads neither hybrid nor v2
torrents (nor the metadata of a hybrid magnet link); the tests show how it refuses them. Every file it
writes must equal the fake Hub's (it creates no empty file). The tests of those refusals skip with the
reason under another version of Transmission."""
from __future__ import annotations

import os

from bt_clients import DOWNLOAD_TIMEOUT, NAME, NodeOnNetworkTest, Transmission, client_version, poll, tail

PINNED = "3.00"  # the Transmission release whose refusals the negative tests assert


class TransmissionTest(NodeOnNetworkTest):
    @classmethod
    def setUpClass(cls):
        cls.versions = {name: client_version([name]) for name in ("transmission-daemon", "transmission-remote")}
        super().setUpClass()

    def require_pinned_version(self, what: str) -> None:
        """Skips the test unless transmission-daemon and transmission-remote are the release whose
        behaviour it asserts."""
        if any(version != PINNED for version in self.versions.values()):
            shown = ", ".join(f"{name} {version or '(no version)'}" for name, version in self.versions.items())
            self.skipTest(f"{what} is Transmission {PINNED}'s; --version says {shown}")

    def transmission(self, name: str) -> Transmission:
        return Transmission(self.client_host(name), self.workdir(name)).start()

    def download(self, client: Transmission, source: str, kind: str = "v1") -> None:
        added = client.add(source)
        self.assertEqual(added.returncode, 0, f"{added.stdout}{added.stderr}{client.logs()}")
        client.wait_complete(self.info_hash(kind))
        self.assert_snapshot(os.path.join(client.downloads, NAME), writes_pad_files=True, creates_empty_files=False)

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
        """Transmission 3.00's bencode parser rejects the empty keys of `file tree`."""
        self.require_pinned_version("refusing hybrid torrents")
        torrent = self.torrent_file("hybrid")
        client = self.transmission("transmission")
        added = client.add(torrent)
        self.assertNotEqual(added.returncode, 0, added.stdout)
        self.assertIn("invalid or corrupt torrent file", added.stdout + added.stderr)
        self.assertEqual(client.call("torrent-get", {"fields": ["hashString"]})["torrents"], [])

    def test_hybrid_magnet_gets_metadata_it_cannot_parse(self):
        """The metadata of the hybrid torrent's magnet link arrives from the node's seed and matches the
        v1 info-hash, but Transmission 3.00 cannot parse it and asks again, for ever."""
        self.require_pinned_version("failing to parse a hybrid torrent's metadata")
        magnet = self.magnet_link("hybrid")
        client = self.transmission("transmission")
        added = client.add(magnet)
        self.assertEqual(added.returncode, 0, f"{added.stdout}{added.stderr}{client.logs()}")
        refused = "magnet status: checksum passed 1, metainfo parsed 0"
        self.assertTrue(poll(lambda: refused in tail(client.log_path), DOWNLOAD_TIMEOUT),
                        f"no metadata arrived{client.logs()}")
        self.assertEqual(client.torrent(self.info_hash("hybrid"))["metadataPercentComplete"], 0)

    def test_v2_torrent_is_refused(self):
        self.require_pinned_version("refusing v2 torrents")
        torrent = self.torrent_file("v2")
        client = self.transmission("transmission")
        added = client.add(torrent)
        self.assertNotEqual(added.returncode, 0, added.stdout)
        self.assertIn("invalid or corrupt torrent file", added.stdout + added.stderr)

    def test_v2_magnet_is_refused(self):
        """A v2 magnet link names its torrent by a btmh hash only, which Transmission 3.00 does not know."""
        self.require_pinned_version("refusing v2 magnet links")
        magnet = self.magnet_link("v2")
        client = self.transmission("transmission")
        added = client.add(magnet)
        self.assertNotEqual(added.returncode, 0, added.stdout)
        self.assertIn("invalid or corrupt torrent file", added.stdout + added.stderr)

if __name__ == "__main__":
    import unittest
    unittest.main()
