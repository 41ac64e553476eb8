#!/usr/bin/env python3
"""Self-check for fake_hub.py: starts it as a subprocess and talks HTTP to it.

Run: python3 tests/fakes/test_fake_hub.py
"""

import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_HUB = os.path.join(HERE, "fake_hub.py")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


class FakeHubTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen([sys.executable, FAKE_HUB, "--tree-page-size", "3"],
                                    stdout=subprocess.PIPE, text=True)
        cls.ready = cls.proc.stdout.readline().strip()
        m = re.fullmatch(r"READY hub=(http://127\.0\.0\.1:\d+) cdn=(http://127\.0\.0\.1:\d+)", cls.ready)
        if not m:
            cls.proc.kill()
            raise RuntimeError(f"bad READY line: {cls.ready!r}")
        cls.hub, cls.cdn = m.group(1), m.group(2)
        cls.manifest = cls.get_json_cls(cls.hub + "/_fake/manifest")

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        rc = cls.proc.wait(timeout=10)
        cls.proc.stdout.close()
        assert rc == 0, f"fake hub exited with {rc}"

    def setUp(self):
        self.post("/_fake/reset", b"")

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def get_json_cls(url):
        with urllib.request.urlopen(url) as r:
            return json.load(r)

    def request(self, method, url, headers=None, data=None):
        """(status, headers, body) without following redirects or raising on errors."""
        req = urllib.request.Request(url if url.startswith("http") else self.hub + url,
                                     data=data, headers=headers or {}, method=method)
        try:
            with OPENER.open(req) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def post(self, path, data, ctype="application/json"):
        return self.request("POST", path, {"Content-Type": ctype}, data)

    def stats(self):
        return json.loads(self.request("GET", "/_fake/stats")[2])

    def repo_files(self, repo_id, rev="main"):
        repo = next(r for r in self.manifest["repos"] if r["id"] == repo_id)
        return {f["path"]: f for f in repo["files"][repo["revisions"][rev]]}

    # -- tests ----------------------------------------------------------------

    def test_ready_line(self):
        self.assertTrue(self.ready.startswith("READY hub=http://127.0.0.1:"))

    def test_lfs_resolve_redirects_to_cdn_with_matching_bytes(self):
        f = self.repo_files("acme/tiny-model")["nested/deep/dir/weights.bin"]
        status, h, _ = self.request("GET", "/acme/tiny-model/resolve/main/nested/deep/dir/weights.bin")
        self.assertEqual(status, 302)
        self.assertEqual(h["X-Linked-Etag"], f'"{f["sha256"]}"')
        self.assertEqual(int(h["X-Linked-Size"]), f["size"])
        self.assertTrue(h["Location"].startswith(self.cdn + "/blobs/" + f["sha256"] + "?"))
        self.assertIn("X-Xet-Hash", h)
        status, h2, body = self.request("GET", h["Location"])
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), f["sha256"])
        self.assertEqual(len(body), f["size"])
        # every MiB is distinct
        mibs = {body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)}
        self.assertEqual(len(mibs), (len(body) + (1 << 20) - 1) >> 20)
        # ranges on the CDN
        status, h3, part = self.request("GET", h["Location"], {"Range": "bytes=100-199"})
        self.assertEqual((status, part), (206, body[100:200]))
        self.assertEqual(h3["Content-Range"], f"bytes 100-199/{f['size']}")
        status, h4, _ = self.request("GET", h["Location"], {"Range": f"bytes={f['size']}-"})
        self.assertEqual((status, h4["Content-Range"]), (416, f"bytes */{f['size']}"))
        # tampered signature / leaked token
        tampered = h["Location"][:-1] + ("1" if h["Location"].endswith("0") else "0")  # always a different sig
        self.assertEqual(self.request("GET", tampered)[0], 403)
        self.request("HEAD", h["Location"], {"Authorization": "Bearer hf_approved"})
        s = self.stats()
        self.assertEqual(s["cdn_authorization_headers"], 1)
        self.assertEqual(s["requests"]["cdn_head"], 1)
        self.assertEqual(s["cdn_bytes"][f["sha256"]], f["size"] + 100)

    def test_regular_file_etag_and_unicode_path(self):
        files = self.repo_files("acme/tiny-model")
        path = "with space/naïve – file.txt"
        status, h, body = self.request("GET", "/acme/tiny-model/resolve/main/" + urllib.parse.quote(path))
        self.assertEqual(status, 200)
        git = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
        self.assertEqual(h["ETag"], f'"{git}"')
        self.assertEqual(git, files[path]["git_sha1"])
        status, h, body = self.request("GET", "/acme/tiny-model/resolve/main/config.json", {"Range": "bytes=-5"})
        self.assertEqual(status, 206)
        self.assertEqual(len(body), 5)
        self.assertEqual(self.request("HEAD", "/acme/tiny-model/resolve/main/empty.txt")[1]["Content-Length"], "0")

    def test_pr_revision_and_errors(self):
        main = self.request("GET", "/acme/tiny-model/resolve/main/config.json")
        pr = self.request("GET", "/acme/tiny-model/resolve/refs%2Fpr%2F1/config.json")
        self.assertEqual(pr[0], 200)
        self.assertNotEqual(main[2], pr[2])
        self.assertNotEqual(main[1]["X-Repo-Commit"], pr[1]["X-Repo-Commit"])
        sha = main[1]["X-Repo-Commit"]
        self.assertEqual(self.request("GET", f"/acme/tiny-model/resolve/{sha}/config.json")[2], main[2])
        self.assertEqual(self.request("GET", "/acme/tiny-model/resolve/v1.0/config.json")[2], main[2])
        status, h, _ = self.request("GET", "/acme/tiny-model/resolve/nope/config.json")
        self.assertEqual((status, h["X-Error-Code"]), (404, "RevisionNotFound"))
        status, h, _ = self.request("GET", "/acme/tiny-model/resolve/main/nope.json")
        self.assertEqual((status, h["X-Error-Code"]), (404, "EntryNotFound"))
        status, h, _ = self.request("GET", "/acme/nope/resolve/main/config.json")
        self.assertEqual((status, h["X-Error-Code"]), (401, "RepoNotFound"))
        status, h, _ = self.request("GET", "/api/models/acme/tiny-model", {"Authorization": "Bearer hf_bogus"})
        self.assertEqual(status, 401)
        self.assertEqual(h["X-Error-Message"], "Invalid credentials in Authorization header")
        self.assertIsNone(h["X-Error-Code"])

    def test_tree_pagination(self):
        url = self.hub + "/api/models/acme/tiny-model/tree/refs%2Fpr%2F1?recursive=true&expand=true"
        seen, pages = [], 0
        while url:
            status, h, body = self.request("GET", url)
            self.assertEqual(status, 200)
            entries = json.loads(body)
            self.assertLessEqual(len(entries), 3)
            seen += entries
            pages += 1
            link = h.get("Link")
            if link:
                m = re.fullmatch(r'<(http://127\.0\.0\.1:\d+/api/models/acme/tiny-model/tree/refs%2Fpr%2F1\?'
                                 r'recursive=true&expand=true&cursor=[^>]+)>; rel="next"', link)
                self.assertIsNotNone(m, link)
                url = m.group(1)
            else:
                url = None
        files = self.repo_files("acme/tiny-model", "refs/pr/1")
        self.assertEqual({e["path"] for e in seen if e["type"] == "file"}, set(files))
        self.assertEqual({e["path"] for e in seen if e["type"] == "directory"},
                         {"nested", "nested/deep", "nested/deep/dir", "with space"})
        self.assertEqual([e["path"] for e in seen], sorted(e["path"] for e in seen))
        self.assertGreater(pages, 3)
        lfs = next(e for e in seen if e["path"] == "model.safetensors")
        self.assertEqual(lfs["lfs"]["oid"], files["model.safetensors"]["sha256"])
        self.assertIn("lastCommit", lfs)
        # one level, sub-path
        status, _, body = self.request("GET", "/api/models/acme/tiny-model/tree/main/nested")
        self.assertEqual([e["path"] for e in json.loads(body)], ["nested/deep"])
        self.assertEqual(self.request("GET", "/api/models/acme/tiny-model/tree/main/nope")[0], 404)
        self.assertEqual(self.stats()["requests"]["api_tree"], pages + 2)

    def test_paths_info_json_and_form(self):
        body = json.dumps({"paths": ["nested", "missing", "config.json"], "expand": False}).encode()
        status, _, out = self.post("/api/models/acme/tiny-model/paths-info/main", body)
        self.assertEqual(status, 200)
        self.assertEqual([(e["type"], e["path"]) for e in json.loads(out)],
                         [("directory", "nested"), ("file", "config.json")])
        form = urllib.parse.urlencode([("paths", "model.safetensors"), ("expand", "true")]).encode()
        status, _, out = self.post("/api/models/acme/tiny-model/paths-info/main", form,
                                   "application/x-www-form-urlencoded")
        entry = json.loads(out)[0]
        self.assertIn("lfs", entry)
        self.assertIn("lastCommit", entry)

    def test_push_moves_the_branch_to_a_new_commit(self):
        before = json.loads(self.request("GET", "/api/spaces/acme/tiny-space/revision/main")[2])["sha"]
        body = json.dumps({"repo": "acme/tiny-space", "type": "space",
                           "files": {"app.py": "print('v2')\n", "model.bin": {"size": 70000},
                                     "requirements.txt": None}}).encode()
        status, _, answer = self.post("/_fake/push", body)
        self.assertEqual(status, 200, answer)
        pushed = json.loads(answer)
        self.assertEqual(pushed["parent"], before)
        self.assertNotEqual(pushed["commit"], before)
        self.assertEqual(json.loads(self.request("GET", "/api/spaces/acme/tiny-space/revision/main")[2])["sha"],
                         pushed["commit"])
        tree = json.loads(self.request("GET", f"/api/spaces/acme/tiny-space/tree/{pushed['commit']}")[2])
        by_path = {e["path"]: e for e in tree}
        self.assertEqual(set(by_path), {"app.py", "model.bin"})
        self.assertEqual(by_path["app.py"]["oid"], hashlib.sha1(b"blob 12\0print('v2')\n").hexdigest())
        self.assertEqual(by_path["model.bin"]["lfs"]["size"], 70000)
        # The new LFS blob is served through the CDN like every other, and the old commit stays readable.
        status, headers, _ = self.request("GET", "/spaces/acme/tiny-space/resolve/main/model.bin")
        self.assertEqual(status, 302)
        status, _, data = self.request("GET", headers["Location"])
        self.assertEqual((status, hashlib.sha256(data).hexdigest()), (200, by_path["model.bin"]["lfs"]["oid"]))
        status, _, data = self.request("GET", f"/spaces/acme/tiny-space/resolve/{before}/requirements.txt")
        self.assertEqual((status, data), (200, b"gradio\n"))
        manifest = json.loads(self.request("GET", "/_fake/manifest")[2])
        space = next(r for r in manifest["repos"] if r["id"] == "acme/tiny-space")
        self.assertEqual(space["revisions"]["main"], pushed["commit"])
        self.assertEqual({f["path"] for f in space["files"][pushed["commit"]]}, {"app.py", "model.bin"})
        for bad in ({"repo": "acme/nope", "type": "space", "files": {}},
                    {"repo": "acme/tiny-space", "type": "space", "files": {"../x": "y"}},
                    {"files": {}}):
            self.assertIn(self.post("/_fake/push", json.dumps(bad).encode())[0], (400, 404), bad)

    def test_refs_and_info(self):
        refs = json.loads(self.request("GET", "/api/models/acme/tiny-model/refs?include_prs=1")[2])
        self.assertEqual(refs["tags"][0]["targetCommit"], refs["branches"][0]["targetCommit"])
        self.assertNotEqual(refs["pullRequests"][0]["targetCommit"], refs["branches"][0]["targetCommit"])
        info = json.loads(self.request("GET", "/api/datasets/acme/tiny-dataset?blobs=true")[2])
        self.assertTrue(info["xetEnabled"])
        lfs = [s for s in info["siblings"] if "lfs" in s]
        self.assertEqual([s["rfilename"] for s in lfs], ["data/train-00000-of-00001.parquet"])
        info = json.loads(self.request("GET", "/api/models/acme/tiny-model/revision/refs%2Fpr%2F1?expand=sha")[2])
        self.assertEqual(set(info), {"_id", "id", "sha"})

    def test_gated_and_private(self):
        url = "/acme/gated-model/resolve/main/model.safetensors"
        status, h, _ = self.request("HEAD", url)
        self.assertEqual((status, h["X-Error-Code"]), (401, "GatedRepo"))
        status, h, _ = self.request("HEAD", url, {"Authorization": "Bearer hf_unapproved"})
        self.assertEqual((status, h["X-Error-Code"]), (403, "GatedRepo"))
        self.assertEqual(self.request("HEAD", url, {"Authorization": "Bearer hf_approved"})[0], 302)
        status, _, body = self.request("GET", "/api/models/acme/gated-model")
        self.assertEqual((status, json.loads(body)["gated"]), (200, "manual"))
        self.assertEqual(self.request("GET", "/api/models/acme/gated-model/tree/main")[0], 401)
        self.assertEqual(self.request("GET", "/api/models/acme/private-model",
                                      {"Authorization": "Bearer hf_unapproved"})[0], 401)
        self.assertEqual(self.request("GET", "/api/models/acme/private-model",
                                      {"Authorization": "Bearer hf_approved"})[0], 200)
        by_auth = self.stats()["requests_by_auth"]
        self.assertEqual(by_auth["hf_approved"], 2)
        self.assertEqual(by_auth["anonymous"], 3)

    def test_renamed_repo_relative_307(self):
        status, h, _ = self.request("HEAD", "/acme/old-name/resolve/main/config.json?x=1")
        self.assertEqual((status, h["Location"]), (307, "/acme/new-name/resolve/main/config.json?x=1"))
        status, h, _ = self.request("GET", "/api/models/acme/old-name/tree/main")
        self.assertEqual((status, h["Location"]), (307, "/api/models/acme/new-name/tree/main"))

    def test_xet_fileinfo_lure(self):
        status, h, body = self.request("GET", "/acme/tiny-model/resolve/main/model.safetensors",
                                       {"Accept": "application/vnd.xet-fileinfo+json"})
        self.assertEqual(status, 200)
        self.assertEqual(h["Content-Type"], "application/vnd.xet-fileinfo+json")
        self.assertEqual(json.loads(body)["hash"], h["X-Xet-Hash"])

    def test_reset_fault_then_recovery(self):
        f = self.repo_files("acme/tiny-model")["model.safetensors"]
        loc = self.request("HEAD", "/acme/tiny-model/resolve/main/model.safetensors")[1]["Location"]
        self.post("/_fake/faults", json.dumps([{"match": f["sha256"], "kind": "reset_after_bytes",
                                                "bytes": 100000}]).encode())
        u = urllib.parse.urlsplit(loc)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("GET", f"{u.path}?{u.query}")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        got = bytearray()
        with self.assertRaises((ConnectionResetError, http.client.IncompleteRead)):
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    raise http.client.IncompleteRead(bytes(got))
                got += chunk
        conn.close()
        # At most the 100000 bytes before the reset (fewer if a loaded machine delays the client's ACKs).
        self.assertGreater(len(got), 0)
        self.assertLessEqual(len(got), 100000)
        faults = json.loads(self.request("GET", "/_fake/faults")[2])
        self.assertEqual(faults[0]["times"], 0)
        status, _, body = self.request("GET", loc)  # fault used up: clean download
        self.assertEqual(hashlib.sha256(body).hexdigest(), f["sha256"])
        s = self.stats()
        self.assertEqual(s["requests"]["cdn_get"], 2)
        self.assertEqual(s["cdn_bytes"][f["sha256"]], f["size"] + 100000)

    def test_status_and_corrupt_faults(self):
        self.post("/_fake/faults", json.dumps([
            {"match": "config.json", "kind": "status", "status": 503},
            {"match": "README.md", "kind": "corrupt_byte", "offset": 3},
        ]).encode())
        self.assertEqual(self.request("GET", "/acme/tiny-model/resolve/main/config.json")[0], 503)
        self.assertEqual(self.request("GET", "/acme/tiny-model/resolve/main/config.json")[0], 200)
        bad = self.request("GET", "/acme/tiny-model/resolve/main/README.md")[2]
        good = self.request("GET", "/acme/tiny-model/resolve/main/README.md")[2]
        self.assertEqual(len(bad), len(good))
        self.assertEqual([i for i in range(len(good)) if bad[i] != good[i]], [3])

    def test_counters_reset(self):
        self.request("GET", "/api/models/acme/tiny-model")
        self.assertEqual(self.stats()["total_requests"], 1)
        self.post("/_fake/reset", b"")
        self.assertEqual(self.stats()["total_requests"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
