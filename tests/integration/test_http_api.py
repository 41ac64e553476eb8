"""The node's HTTP API as clients see it: headers, ranges, errors, Xet stripping, metadata routes,
access control, renamed repos, hostile paths. One fake Hub and one node for the whole class."""
import json
import os
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256  # noqa: E402

MODEL = "acme/tiny-model"


class HttpApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url).start()
        cls.files = cls.hub.files(MODEL)
        cls.commit = cls.hub.commit(MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()

    def get(self, path, **headers):
        return self.node.request("GET", path, headers)

    def head(self, path, **headers):
        return self.node.request("HEAD", path, headers)

    def resolve(self, path, rev="main", repo=MODEL, prefix=""):
        return self.node.resolve_path(repo, rev, path, prefix)

    def assert_no_xet(self, headers, body=b""):
        for name, value in headers.items():
            self.assertFalse(name.startswith("x-xet"), f"Xet header leaked: {name}")
            if name == "link":
                self.assertNotIn("xet", value)
        self.assertNotIn(b"xetHash", body)
        self.assertNotIn(b"xetEnabled", body)

    def test_lfs_file_head_then_get(self):
        f = self.files["model.safetensors"]
        status, h, body = self.head(self.resolve("model.safetensors"))
        self.assertEqual(status, 200)
        self.assertEqual(h["x-repo-commit"], self.commit)
        self.assertEqual(h["x-linked-etag"], f'"{f["sha256"]}"')
        self.assertEqual(h["etag"], f'"{f["sha256"]}"')
        self.assertEqual(int(h["x-linked-size"]), f["size"])
        self.assertEqual(int(h["content-length"]), f["size"])
        self.assertEqual(h["accept-ranges"], "bytes")
        self.assertNotIn("location", h)
        self.assert_no_xet(h)
        status, h, body = self.get(self.resolve("model.safetensors"))
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), f["sha256"])
        self.assert_no_xet(h)

    def test_regular_file_etag_is_git_sha1(self):
        f = self.files["config.json"]
        status, h, body = self.get(self.resolve("config.json"))
        self.assertEqual(status, 200)
        self.assertEqual(h["etag"], f'"{f["git_sha1"]}"')
        self.assertNotIn("x-linked-etag", h)
        self.assertEqual(sha256(body), f["sha256"])

    def test_byte_ranges(self):
        f = self.files["nested/deep/dir/weights.bin"]
        path = self.resolve("nested/deep/dir/weights.bin")
        _, _, whole = self.get(path)
        self.assertEqual(sha256(whole), f["sha256"])
        size = f["size"]
        status, h, body = self.get(path, Range="bytes=0-0")
        self.assertEqual((status, h["content-range"], body), (206, f"bytes 0-0/{size}", whole[:1]))
        status, h, body = self.get(path, Range="bytes=-100")
        self.assertEqual((status, h["content-range"], body), (206, f"bytes {size-100}-{size-1}/{size}", whole[-100:]))
        status, h, body = self.get(path, Range="bytes=4194300-")
        self.assertEqual((status, body), (206, whole[4194300:]))
        status, h, body = self.get(path, Range="bytes=100-199")
        self.assertEqual((status, int(h["content-length"]), body), (206, 100, whole[100:200]))
        status, h, _ = self.get(path, Range=f"bytes={size}-")
        self.assertEqual((status, h["content-range"]), (416, f"bytes */{size}"))

    def test_range_into_a_cold_file_is_answered(self):
        node = Node(self.hub.url).start()
        try:
            f = self.files["model.safetensors"]
            path = self.resolve("model.safetensors")
            status, h, body = node.request("GET", path, {"Range": "bytes=8388608-8388707"})
            self.assertEqual(status, 206)
            _, _, whole = self.get(path)
            self.assertEqual(body, whole[8388608:8388708])
            self.assertEqual(h["content-range"], f"bytes 8388608-8388707/{f['size']}")
        finally:
            node.stop()
            node.cleanup()

    def test_range_probe_of_an_empty_file(self):
        # @huggingface/hub probes every file with bytes=0-0 and fails on a 416.
        status, h, body = self.get(self.resolve("empty.txt"), Range="bytes=0-0")
        self.assertEqual((status, h["content-range"], h["content-length"], body), (200, "bytes */0", "0", b""))

    def test_if_none_match(self):
        f = self.files["config.json"]
        self.get(self.resolve("config.json"))
        status, h, body = self.get(self.resolve("config.json"), **{"If-None-Match": f'"{f["git_sha1"]}"'})
        self.assertEqual((status, body), (304, b""))
        status, _, _ = self.get(self.resolve("config.json"), **{"If-None-Match": '"other"'})
        self.assertEqual(status, 200)

    def test_xet_fileinfo_accept_gets_plain_bytes(self):
        f = self.files["model.safetensors"]
        status, h, body = self.get(self.resolve("model.safetensors"),
                                   Accept="application/vnd.xet-fileinfo+json, */*", Range="bytes=0-0")
        self.assertEqual(status, 206)
        self.assertEqual(h["content-range"], f"bytes 0-0/{f['size']}")
        self.assertEqual(len(body), 1)
        self.assertNotIn("xet", h.get("content-type", ""))
        self.assert_no_xet(h)

    def test_empty_nested_and_unicode_files(self):
        for path in ("empty.txt", "nested/deep/dir/weights.bin", "with space/naïve – file.txt"):
            status, h, body = self.get(self.resolve(path))
            self.assertEqual(status, 200, path)
            self.assertEqual(sha256(body), self.files[path]["sha256"], path)
            self.assertEqual(int(h["content-length"]), self.files[path]["size"])

    def test_encoded_revision_and_tag(self):
        pr = self.hub.files(MODEL, "refs/pr/1")["config.json"]
        status, h, body = self.get(self.resolve("config.json", rev="refs/pr/1"))
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), pr["sha256"])
        self.assertEqual(h["x-repo-commit"], self.hub.commit(MODEL, "refs/pr/1"))
        self.assertNotEqual(pr["sha256"], self.files["config.json"]["sha256"])
        status, h, body = self.get(self.resolve("config.json", rev="v1.0"))
        self.assertEqual((status, sha256(body)), (200, self.files["config.json"]["sha256"]))
        status, h, body = self.get(self.resolve("config.json", rev=self.commit))
        self.assertEqual((status, h["x-repo-commit"]), (200, self.commit))

    def test_dataset_and_space(self):
        ds = self.hub.files("acme/tiny-dataset")
        for path, f in ds.items():
            status, _, body = self.get(self.resolve(path, repo="acme/tiny-dataset", prefix="datasets/"))
            self.assertEqual((status, sha256(body)), (200, f["sha256"]), path)
        sp = self.hub.files("acme/tiny-space")
        for path, f in sp.items():
            status, _, body = self.get(self.resolve(path, repo="acme/tiny-space", prefix="spaces/"))
            self.assertEqual((status, sha256(body)), (200, f["sha256"]), path)

    def test_renamed_repo_redirects_relatively(self):
        status, h, _ = self.get(self.resolve("config.json", repo="acme/old-name"))
        self.assertEqual(status, 307)
        self.assertEqual(h["location"], "/acme/new-name/resolve/main/config.json")
        status, _, body = self.get(h["location"])
        self.assertEqual((status, sha256(body)), (200, self.hub.files("acme/new-name")["config.json"]["sha256"]))
        status, h, _ = self.get("/api/models/acme/old-name/revision/main")
        self.assertEqual((status, h["location"]), (307, "/api/models/acme/new-name/revision/main"))

    def test_hub_errors_keep_their_codes(self):
        status, h, _ = self.get(self.resolve("config.json", repo="acme/missing"))
        self.assertEqual((status, h.get("x-error-code")), (401, "RepoNotFound"))
        status, h, _ = self.get(self.resolve("nope.bin"))
        self.assertEqual((status, h.get("x-error-code")), (404, "EntryNotFound"))
        status, h, _ = self.head(self.resolve("config.json", rev="no-such-branch"))
        self.assertEqual((status, h.get("x-error-code")), (404, "RevisionNotFound"))
        self.assertIn("x-error-message", h)

    def test_hostile_paths_are_refused(self):
        for path in (f"/{MODEL}/resolve/main/..%2F..%2Fetc%2Fpasswd", f"/{MODEL}/resolve/main/a/../../b",
                     f"/{MODEL}/resolve/main/a%00b", f"/{MODEL}/resolve/main/%2Fetc%2Fpasswd",
                     f"/{MODEL}/resolve/main/bad%zzescape", "/acme/../resolve/main/x"):
            status, _, _ = self.get(path)
            self.assertEqual(status, 400, path)

    def test_tree_pages_link_back_to_the_node(self):
        path = f"/api/models/{MODEL}/tree/main?recursive=true"
        seen = []
        pages = 0
        while path:
            status, h, body = self.get(path)
            self.assertEqual(status, 200)
            self.assert_no_xet(h, body)
            seen += [e["path"] for e in json.loads(body) if e["type"] == "file"]
            pages += 1
            link = h.get("link")
            if not link:
                break
            url = link[link.index("<") + 1:link.index(">")]
            self.assertTrue(url.startswith(self.node.url + "/api/"), url)
            parts = urllib.parse.urlsplit(url)
            path = parts.path + "?" + parts.query
        self.assertGreater(pages, 1)
        self.assertEqual(sorted(seen), sorted(self.files))

    def test_revision_info_strips_xet(self):
        status, h, body = self.get(f"/api/models/{MODEL}/revision/main?blobs=true")
        self.assertEqual(status, 200)
        info = json.loads(body)
        self.assertEqual(info["sha"], self.commit)
        self.assert_no_xet(h, body)
        status, _, body = self.get(f"/api/models/{MODEL}")
        self.assertEqual((status, json.loads(body)["sha"]), (200, self.commit))
        status, _, body = self.get(f"/api/datasets/acme/tiny-dataset/revision/main")
        self.assertEqual(status, 200)

    def test_paths_info_json_and_form(self):
        path = f"/api/models/{MODEL}/paths-info/main"
        status, _, body = self.node.request("POST", path, {"Content-Type": "application/json"},
                                            json.dumps({"paths": ["config.json", "model.safetensors"],
                                                        "expand": True}).encode())
        self.assertEqual(status, 200)
        entries = json.loads(body)
        self.assertEqual([e["path"] for e in entries], ["config.json", "model.safetensors"])
        self.assertNotIn(b"xetHash", body)
        status, _, body = self.node.request("POST", path, {"Content-Type": "application/x-www-form-urlencoded"},
                                            b"paths=config.json&paths=empty.txt&expand=false")
        self.assertEqual(status, 200)
        self.assertEqual([e["path"] for e in json.loads(body)], ["config.json", "empty.txt"])

    def test_refs(self):
        status, _, body = self.get(f"/api/models/{MODEL}/refs")
        self.assertEqual(status, 200)
        refs = json.loads(body)
        self.assertEqual(refs["branches"][0]["targetCommit"], self.commit)

    def test_gated_repo_needs_an_approved_token(self):
        repo = "acme/gated-model"
        f = self.hub.files(repo)["model.safetensors"]
        path = self.resolve("model.safetensors", repo=repo)
        status, h, _ = self.get(path)
        self.assertEqual((status, h.get("x-error-code")), (401, "GatedRepo"))
        status, h, _ = self.get(path, Authorization="Bearer hf_unapproved")
        self.assertEqual((status, h.get("x-error-code")), (403, "GatedRepo"))
        status, _, body = self.get(path, Authorization="Bearer hf_approved")
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        # Now cached: the bytes still never reach a caller the Hub would refuse.
        status, h, body = self.get(path)
        self.assertEqual((status, h.get("x-error-code")), (401, "GatedRepo"))
        self.assertNotEqual(sha256(body), f["sha256"])
        status, h, _ = self.get(path, Authorization="Bearer hf_unapproved")
        self.assertEqual(status, 403)
        status, _, body = self.get(f"/api/models/{repo}/tree/main")
        self.assertEqual(status, 401)

    def test_private_repo(self):
        repo = "acme/private-model"
        f = self.hub.files(repo)["weights.bin"]
        path = self.resolve("weights.bin", repo=repo)
        status, h, _ = self.get(path)
        self.assertEqual((status, h.get("x-error-code")), (401, "RepoNotFound"))
        status, _, body = self.get(path, Authorization="Bearer hf_approved")
        self.assertEqual((status, sha256(body)), (200, f["sha256"]))
        for auth in (None, "Bearer hf_unapproved", "Bearer hf_bogus"):
            status, _, body = self.get(path, **({"Authorization": auth} if auth else {}))
            self.assertEqual(status, 401, auth)
            self.assertNotEqual(sha256(body), f["sha256"])
        status, _, _ = self.get(f"/api/models/{repo}/revision/main")
        self.assertEqual(status, 401)
        status, _, _ = self.get(f"/api/models/{repo}/revision/main", Authorization="Bearer hf_approved")
        self.assertEqual(status, 200)

    def test_credentials_never_reach_the_cdn(self):
        self.get(self.resolve("model.safetensors", repo="acme/new-name"), Authorization="Bearer hf_approved")
        self.assertEqual(self.hub.stats()["cdn_authorization_headers"], 0)

    def test_healthz_and_unknown_routes(self):
        status, _, body = self.get("/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        # A route the node does not know is the Hub's to answer; the node's own namespace is the node's.
        status, head, _ = self.get("/no/such/route")
        self.assertEqual((status, head.get("x-error-code")), (401, "RepoNotFound"))
        status, _, _ = self.get("/api/inferllama/no-such-route")
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
