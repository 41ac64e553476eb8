"""qBittorrent 4.5 (qbittorrent-nox, libtorrent 2.0) against the node across namespaces, driven through its
Web API: the v1, hybrid and v2 torrents over the node's peer wire alone (its HTTP port unreachable: peers
from the UDP tracker), over its web seed alone (its peer wire unreachable), and as magnet links whose
metadata comes from the node's seed (BEP 9). Every file must equal the fake Hub's."""
from __future__ import annotations

import os
import sys

from bt_clients import NAME, EveryKindWorks, NodeOnNetworkTest, QBittorrent


class QBittorrentTest(EveryKindWorks, NodeOnNetworkTest):
    def qbittorrent(self, name: str) -> QBittorrent:
        client = QBittorrent(self.client_host(name), self.workdir(name)).start()
        if not getattr(type(self), "version_logged", False):
            type(self).version_logged = True
            # Every assertion here holds for any qBittorrent that takes all three torrent kinds: the version
            # (4.5 when the tests were written) is logged, not asserted.
            version = client.api("/api/v2/app/version")
            print(f"\n[qbittorrent] /api/v2/app/version: {version}", file=sys.stderr)
        return client

    def peer_wire(self, kind: str) -> None:
        torrent = self.torrent(kind)[0]
        client = self.qbittorrent("qbittorrent")
        self.block_http(client.host)
        before = self.sources()
        client.add_torrent(torrent)
        client.wait_complete(self.info_hash(kind))
        self.assert_snapshot(os.path.join(client.downloads, NAME))
        self.assert_came_from(before, "seed")

    def web_seed(self, kind: str) -> None:
        torrent = self.torrent(kind)[0]
        client = self.qbittorrent("qbittorrent")
        self.block_seed(client.host)
        before = self.sources()
        client.add_torrent(torrent)
        client.wait_complete(self.info_hash(kind))
        self.assert_snapshot(os.path.join(client.downloads, NAME))
        self.assert_came_from(before, "web seed")

    def magnet(self, kind: str) -> None:
        magnet = self.magnet_link(kind)
        client = self.qbittorrent("qbittorrent")
        client.add_magnet(magnet)
        client.wait_complete(self.info_hash(kind))
        self.assert_snapshot(os.path.join(client.downloads, NAME))


if __name__ == "__main__":
    import unittest
    unittest.main()
