"""libtorrent 2.0's Python bindings (lt_client.py, over TCP) against the node across namespaces: the v1,
hybrid and v2 torrents over the node's peer wire alone (its HTTP port unreachable: peers from the UDP
tracker), over its web seed alone (its peer wire unreachable), and as magnet links whose metadata comes
from the node's seed (BEP 9). Every file must equal the fake Hub's."""
from __future__ import annotations

import json
import os

from bt_clients import NAME, EveryKindWorks, NodeOnNetworkTest, libtorrent_client


class LibtorrentTest(EveryKindWorks, NodeOnNetworkTest):
    def download(self, source: str, block: str | None) -> str:
        host = self.client_host("libtorrent")
        if block == "seed":
            self.block_seed(host)
        elif block == "http":
            self.block_http(host)
        directory = self.workdir("libtorrent")
        result = libtorrent_client(host, source, directory)
        self.assertEqual(result.returncode, 0, f"lt_client.py failed:\n{result.stdout}{result.stderr[-8000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertTrue(report["ok"], report)
        return os.path.join(directory, NAME)

    def peer_wire(self, kind: str) -> None:
        torrent = self.torrent_file(kind)
        before = self.sources()
        self.assert_snapshot(self.download(torrent, "http"))
        self.assert_came_from(before, "seed")

    def web_seed(self, kind: str) -> None:
        torrent = self.torrent_file(kind)
        before = self.sources()
        self.assert_snapshot(self.download(torrent, "seed"))
        self.assert_came_from(before, "web seed")

    def magnet(self, kind: str) -> None:
        self.assert_snapshot(self.download(self.magnet_link(kind), None))


if __name__ == "__main__":
    import unittest
    unittest.main()
