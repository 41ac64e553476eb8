"""aria2c 1.36 against the node across namespaces: the v1 torrent over the node's peer wire alone (its HTTP
port unreachable: peers from the UDP tracker, which aria2 1.36 speaks only with DHT on), over its web seed
alone (its peer wire unreachable), and as a magnet link; the hybrid torrent, whose info-hash aria2 1.36 gets
wrong (it drops the empty keys of `file tree` before hashing), so that only its web seed serves it; and
the v2 torrent and magnet link, which aria2 cannot read. Every file must equal the fake Hub's, and aria2
writes the BEP 47 pad files to disk under `.pad/`. The tests of what aria2 1.36 gets wrong or refuses
(its exit codes, messages and info-hash bug) skip with the reason under another version of aria2c."""
from __future__ import annotations

import hashlib
import os
import subprocess

import bencode
from bt_clients import NAME, NodeOnNetworkTest, aria2c, client_version

PINNED = "1.36"  # the aria2 release whose refusals and bugs the negative tests assert


def without_empty_keys(value):
    """What aria2 1.36's bencode decoder keeps of a value: dictionaries lose their "" keys."""
    if isinstance(value, dict):
        return {k: without_empty_keys(v) for k, v in value.items() if k != b""}
    if isinstance(value, list):
        return [without_empty_keys(v) for v in value]
    return value


class Aria2Test(NodeOnNetworkTest):
    @classmethod
    def setUpClass(cls):
        cls.aria2_version = client_version(["aria2c"])  # "1.36.0"
        super().setUpClass()

    def require_pinned_version(self, what: str) -> None:
        """Skips the rest of the test unless aria2c is the release whose behaviour it asserts."""
        if self.aria2_version.split(".")[:2] != PINNED.split("."):
            self.skipTest(f"{what} is aria2 {PINNED}'s; `aria2c --version` says "
                          f"{self.aria2_version or 'no version'}")

    def download(self, source: str, block: str | None, *extra: str) -> str:
        """aria2c on `source` in a host of its own with the node's seed or HTTP port blocked (or neither);
        the folder it saved the snapshot in."""
        host = self.client_host("aria2")
        if block == "seed":
            self.block_seed(host)
        elif block == "http":
            self.block_http(host)
        directory = self.workdir("aria2")
        result = aria2c(host, source, directory, *extra)
        self.assertEqual(result.returncode, 0, f"aria2c failed:\n{result.stdout[-8000:]}{result.stderr[-2000:]}")
        return os.path.join(directory, NAME)

    def info_hash_of(self, torrent: str) -> str:
        """The info-hash aria2 computes for a .torrent (`aria2c --show-files`)."""
        shown = subprocess.run(["aria2c", "--show-files", torrent], capture_output=True, text=True, timeout=30)
        for line in shown.stdout.splitlines():
            if line.startswith("Info Hash: "):
                return line.split(": ", 1)[1].strip()
        raise AssertionError(f"aria2c --show-files printed no info-hash:\n{shown.stdout}{shown.stderr}")

    def test_v1_peer_wire(self):
        torrent = self.torrent_file("v1")
        before = self.sources()
        # aria2 1.36 sends UDP announces only with DHT on (without it: "udp is not supported yet"). No DHT
        # node is known, so the node's UDP tracker stays the only source of peers.
        saved = self.download(torrent, "http", "--enable-dht=true",
                              f"--dht-file-path={os.path.join(self.tmp, 'aria2-dht.dat')}")
        self.assert_snapshot(saved, writes_pad_files=True)
        self.assert_came_from(before, "seed")

    def test_v1_web_seed(self):
        torrent = self.torrent_file("v1")
        before = self.sources()
        saved = self.download(torrent, "seed")
        self.assert_snapshot(saved, writes_pad_files=True)
        self.assert_came_from(before, "web seed")

    def test_v1_magnet(self):
        saved = self.download(self.magnet_link("v1"), None)
        self.assert_snapshot(saved, writes_pad_files=True)

    def test_hybrid_info_hash_is_wrong(self):
        """aria2 1.36 hashes the info dict without the empty keys of `file tree` (fixed upstream after
        1.36): the hash it would announce and connect under (checked here as `--show-files` prints it) is
        not the node's."""
        self.require_pinned_version("the info-hash without the empty keys")
        torrent = self.torrent_file("hybrid")
        info = bencode.decode(self.torrent("hybrid")[0])[b"info"]
        computed = self.info_hash_of(torrent)
        self.assertNotEqual(computed, self.info_hash("hybrid"))
        self.assertEqual(computed, hashlib.sha1(bencode.encode(without_empty_keys(info))).hexdigest())

    def test_hybrid_web_seed(self):
        """The web seed is asked by path, not by info-hash: the hybrid torrent downloads from it."""
        torrent = self.torrent_file("hybrid")
        before = self.sources()
        saved = self.download(torrent, "seed")
        self.assert_snapshot(saved, writes_pad_files=True)
        self.assert_came_from(before, "web seed")

    def test_hybrid_magnet_gets_the_metadata_but_a_wrong_info_hash(self):
        """The metadata comes from the node's seed under the magnet's v1 info-hash (BEP 9), and then aria2
        1.36 hashes it again without the empty keys and would announce and connect under that hash."""
        host = self.client_host("aria2")
        directory = self.workdir("aria2")
        result = aria2c(host, self.magnet_link("hybrid"), directory, "--bt-metadata-only=true",
                        "--bt-save-metadata=true")
        self.assertEqual(result.returncode, 0, f"aria2c failed:\n{result.stdout[-8000:]}{result.stderr[-2000:]}")
        saved = os.path.join(directory, f"{self.info_hash('hybrid')}.torrent")
        info = bencode.decode(self.torrent("hybrid")[0])[b"info"]
        with open(saved, "rb") as f:
            self.assertEqual(bencode.decode(f.read())[b"info"], info)
        self.require_pinned_version("the info-hash without the empty keys")
        self.assertEqual(self.info_hash_of(saved), hashlib.sha1(bencode.encode(without_empty_keys(info))).hexdigest())

    def test_v2_torrent_is_refused(self):
        self.require_pinned_version("refusing v2 torrents (exit code 26)")
        torrent = self.torrent_file("v2")
        result = aria2c(self.client_host("aria2"), torrent, self.workdir("aria2"))
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 26, output[-4000:])  # aria2's "malformed torrent"
        self.assertIn("Missing pieces in torrent metainfo", output)

    def test_v2_magnet_is_refused(self):
        """A v2 magnet link names its torrent by a btmh hash only, which aria2 1.36 does not know."""
        self.require_pinned_version("refusing v2 magnet links (exit code 1)")
        magnet = self.magnet_link("v2")
        result = aria2c(self.client_host("aria2"), magnet, self.workdir("aria2"))
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output[-4000:])
        self.assertIn("Unrecognized URI or unsupported protocol", output)

if __name__ == "__main__":
    import unittest
    unittest.main()
