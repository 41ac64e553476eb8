"""Model files scanned on ingest, through the real binary: the fake Hub serves files made here (a pickle whose
__reduce__ names os.system, a torch.save-style zip with such a data.pkl, a truncated and an overlapping
safetensors, a clean safetensors and a clean pickle of numpy's globals). Under scan_policy warn every file is
served with its verdict in X-InferLlama-Scan, `inferllama ls` and the admin API show the findings; under deny the
files with findings answer 403 ScanFindings and never their bytes. picklescan (PyPI, .venv/scan) scans the same
files, and where the two disagree is printed; where they must agree is asserted."""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import types
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, ROOT, FakeHub, Node, clean_env, wait_until  # noqa: E402

REPO = "acme/scanned"
ADMIN_KEY = "admin-key-of-the-scanning-test"
PICKLESCAN = os.path.join(ROOT, ".venv", "scan", "bin", "python")
HUB1_PYTHON = os.path.join(ROOT, ".venv", "hub1", "bin", "python")
# huggingface_hub downloads each file and prints what it got, or the error it raised.
HF_DOWNLOAD = """
import sys
from huggingface_hub import hf_hub_download
for name in sys.argv[2:]:
    try:
        path = hf_hub_download(sys.argv[1], name)
        print(name, "ok", open(path, "rb").read().hex())
    except Exception as e:
        print(name, "error", type(e).__name__, str(e).replace("\\n", " "))
"""


class RunsOsSystem:
    """Unpickling it calls os.system: what a malicious model file does."""

    def __reduce__(self):
        return (os.system, ("echo the node served a pickle that runs commands",))


def numpy_like_pickle() -> bytes:
    """An array pickled as numpy pickles one (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype)
    inside an OrderedDict, without numpy: the globals are stand-ins registered under numpy's names."""
    multiarray = types.ModuleType("numpy.core.multiarray")
    numpy = types.ModuleType("numpy")

    def _reconstruct(cls, shape, dtype):
        return cls()

    _reconstruct.__module__, _reconstruct.__qualname__ = "numpy.core.multiarray", "_reconstruct"
    multiarray._reconstruct = _reconstruct

    class dtype:  # noqa: N801 - numpy's own name
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return (dtype, ("f4", False, True), (3, "<", None, None, None, -1, -1, 0))

        def __setstate__(self, state):
            self.state = state

    class ndarray:  # noqa: N801
        def __reduce__(self):
            return (_reconstruct, (ndarray, (0,), b"b"), (1, (2,), dtype("f4"), False, b"\0" * 8))

        def __setstate__(self, state):
            self.state = state

    for cls in (dtype, ndarray):
        cls.__module__, cls.__qualname__ = "numpy", cls.__name__
        setattr(numpy, cls.__name__, cls)
    saved = {name: sys.modules.get(name) for name in ("numpy", "numpy.core", "numpy.core.multiarray")}
    sys.modules.update({"numpy": numpy, "numpy.core": types.ModuleType("numpy.core"),
                        "numpy.core.multiarray": multiarray})
    try:
        return pickle.dumps(collections.OrderedDict(weight=ndarray(), step=3), protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def torch_zip(data_pkl: bytes) -> bytes:
    """PyTorch's format as torch.save lays it out: archive/data.pkl, the tensors in archive/data/N, stored."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", bytes(range(256)) * 64)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/.data/serialization_id", "1234567890")
    return out.getvalue()


def safetensors(tensors: dict, data: bytes) -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt"}, **tensors}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def make_files(root: str) -> dict[str, bytes]:
    two = {"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
           "b": {"dtype": "BF16", "shape": [32], "data_offsets": [64, 128]}}
    overlapping = {"a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
                   "b": {"dtype": "F32", "shape": [16], "data_offsets": [32, 96]}}
    files = {
        "evil.pkl": pickle.dumps(RunsOsSystem(), protocol=4),
        "evil/pytorch_model.bin": torch_zip(pickle.dumps(RunsOsSystem(), protocol=2)),
        "truncated.safetensors": safetensors(two, bytes(range(128)))[:-40],
        "overlap.safetensors": safetensors(overlapping, bytes(96)),
        "model.safetensors": safetensors(two, bytes(range(128))),
        "arrays.pkl": numpy_like_pickle(),
    }
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(data)
    return files


# What the node must find (its X-InferLlama-Scan once stored) and a piece of what it says.
EXPECTED = {
    "evil.pkl": ("findings=1", "posix.system (STACK_GLOBAL, called by REDUCE)"),
    "evil/pytorch_model.bin": ("findings=1", "archive/data.pkl: posix.system (GLOBAL, called by REDUCE)"),
    "truncated.safetensors": ("findings=1", "the file is cut short"),
    "overlap.safetensors": ("findings=", "overlap"),
    "model.safetensors": ("clean", None),
    "arrays.pkl": ("clean", None),
}


class ScanningTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="scan-files-")
        cls.files = make_files(cls.dir)
        cls.hub = FakeHub("--files-from", f"{REPO}={cls.dir}").start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start_node(self, *args):
        node = Node(self.hub.url, None, *args, admin_key=ADMIN_KEY).start()
        self.addCleanup(node.cleanup)
        self.addCleanup(node.stop)
        return node

    def start_node_on(self, data_dir, *args):
        """A node on another node's data directory (which that node removes)."""
        node = Node(self.hub.url, data_dir, *args, admin_key=ADMIN_KEY).start()
        self.addCleanup(node.stop)
        return node

    def get(self, node, name, method="GET"):
        return node.request(method, node.resolve_path(REPO, "main", name))

    def settled(self, node):
        wait_until(lambda: node.metric("inferllama_downloads_in_flight") == 0, what="downloads to be stored")

    def scan_api(self, node, name):
        status, _, body = node.request("GET", f"/api/inferllama/scan/{REPO}/resolve/main/{name}",
                                       {"Authorization": f"Bearer {ADMIN_KEY}"})
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_warn_serves_every_file_with_its_verdict(self):
        node = self.start_node()  # scan_policy's default: warn
        for name, data in self.files.items():
            status, headers, body = self.get(node, name)
            self.assertEqual((status, body), (200, data), name)
            # A cold miss answers before its pickle's end has arrived; a header format may be decided already.
            self.assertIn(headers.get("x-inferllama-scan", "").split("=")[0],
                          ("pending", "clean", "findings", EXPECTED[name][0].split("=")[0]), name)
        self.settled(node)
        for name, (header, says) in EXPECTED.items():
            with self.subTest(name=name):
                status, headers, _ = self.get(node, name, "HEAD")
                self.assertEqual(status, 200)
                self.assertTrue(headers["x-inferllama-scan"].startswith(header), headers)
                answer = self.scan_api(node, name)
                self.assertEqual(answer["scan_action"], "warn")
                self.assertEqual(answer["status"], headers["x-inferllama-scan"])
                self.assertEqual(answer["scan"]["scanner_version"], 1)
                if says:
                    self.assertIn(says, " | ".join(answer["scan"]["findings"]))
                else:
                    self.assertEqual(answer["scan"]["findings"], [])
                # A hit (from the memory of stored files) says the same.
                _, again, _ = self.get(node, name)
                self.assertEqual(again["x-inferllama-scan"], headers["x-inferllama-scan"])

        listing = subprocess.run([BINARY, "ls", "--data-dir", node.data_dir], capture_output=True, text=True,
                                 env=clean_env(), timeout=60)
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn("evil.pkl  [scan: findings=1]", listing.stdout)
        self.assertIn("! posix.system (STACK_GLOBAL, called by REDUCE)", listing.stdout)
        self.assertIn("model.safetensors  [scan: clean]", listing.stdout)

        metrics = node.metrics()
        self.assertEqual(metrics['inferllama_scan_files_total{kind="pickle",verdict="findings"}'], 1)
        self.assertEqual(metrics['inferllama_scan_files_total{kind="zip",verdict="findings"}'], 1)
        self.assertEqual(metrics['inferllama_scan_files_total{kind="safetensors",verdict="findings"}'], 2)
        self.assertEqual(metrics['inferllama_scan_files_total{kind="safetensors",verdict="clean"}'], 1)
        self.assertEqual(metrics["inferllama_scan_refusals_total"], 0)

    def test_deny_refuses_files_with_findings_and_serves_the_rest(self):
        node = self.start_node("--scan-policy", "deny")
        for name, (header, says) in EXPECTED.items():
            with self.subTest(name=name):
                # The first client of a cold miss: refused before any byte of the file, or served whole.
                status, headers, body = self.get(node, name)
                if header == "clean":
                    self.assertEqual((status, body), (200, self.files[name]))
                    self.assertEqual(headers["x-inferllama-scan"], "clean")
                    continue
                self.assertEqual(status, 403, body[:200])
                self.assertEqual(headers["x-error-code"], "ScanFindings")
                self.assertTrue(headers["x-inferllama-scan"].startswith("findings="))
                refusal = json.loads(body)
                self.assertEqual(refusal["scan"]["verdict"], "findings")
                self.assertIn(says, refusal["error"])
                self.assertNotIn(self.files[name][-16:], body)
        self.settled(node)
        # Stored now: hits and HEADs are refused the same way.
        for name in ("evil.pkl", "evil/pytorch_model.bin"):
            status, headers, _ = self.get(node, name, "HEAD")
            self.assertEqual((status, headers["x-error-code"]), (403, "ScanFindings"))
            status, _, _ = self.get(node, name)
            self.assertEqual(status, 403)
        self.assertGreaterEqual(node.metric("inferllama_scan_refusals_total"), 8)

    def test_a_rules_scan_action_overrides_the_nodes(self):
        """scan_policy warn for the node, scan=deny in the repo's rule: the rule decides; off in another rule."""
        node = self.start_node("--repo-rules", f"allow models:{REPO} scan=deny, allow *")
        status, headers, body = self.get(node, "evil.pkl")
        self.assertEqual((status, headers.get("x-error-code")), (403, "ScanFindings"), body[:200])
        self.settled(node)
        self.assertEqual(self.scan_api(node, "evil.pkl")["scan_action"], "deny")
        relaxed = self.start_node("--scan-policy", "deny", "--repo-rules", f"allow models:{REPO} scan=off")
        status, headers, body = self.get(relaxed, "evil.pkl")
        self.assertEqual((status, body), (200, self.files["evil.pkl"]))
        self.assertNotIn("x-inferllama-scan", headers)

    @unittest.skipUnless(os.path.exists(HUB1_PYTHON), ".venv/hub1 (scripts/install-deps.sh --test) is missing")
    def test_huggingface_hub_is_refused_a_file_with_findings_under_deny(self):
        node = self.start_node("--scan-policy", "deny")
        home = tempfile.mkdtemp(prefix="scan-hf-home-")
        self.addCleanup(shutil.rmtree, home, True)
        env = clean_env({"HF_ENDPOINT": node.url, "HF_HOME": home, "HF_HUB_DISABLE_TELEMETRY": "1",
                         "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        run = subprocess.run([HUB1_PYTHON, "-c", HF_DOWNLOAD, REPO, "model.safetensors", "evil.pkl"],
                             capture_output=True, text=True, env=env, timeout=180)
        self.assertEqual(run.returncode, 0, run.stderr)
        got = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in run.stdout.splitlines()}
        self.assertEqual(got["model.safetensors"], ["ok", self.files["model.safetensors"].hex()])
        self.assertEqual(got["evil.pkl"][0], "error")
        self.assertIn("403", got["evil.pkl"][1])
        self.assertIn("posix.system", got["evil.pkl"][1])
        # The client kept no byte of it: no file in its cache holds any part of the pickle.
        evil = self.files["evil.pkl"]
        for folder, _, names in os.walk(home):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and os.path.getsize(path) > 0:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    self.assertFalse(data and evil.startswith(data[:16]), path)

    def test_off_scans_nothing_and_what_it_stored_is_scanned_later(self):
        node = self.start_node("--scan-policy", "off")
        for name in ("evil.pkl", "evil/pytorch_model.bin"):
            status, headers, body = self.get(node, name)
            self.assertEqual((status, body), (200, self.files[name]))
            self.assertNotIn("x-inferllama-scan", headers)
        self.settled(node)
        self.assertEqual(self.scan_api(node, "evil.pkl")["status"], "unscanned")
        node.stop()

        # The same store under deny: a stored file without a verdict is scanned from its chunks before it is served.
        deny = self.start_node_on(node.data_dir, "--scan-policy", "deny")
        status, headers, _ = self.get(deny, "evil.pkl")
        self.assertEqual((status, headers["x-error-code"]), (403, "ScanFindings"))
        deny.stop()

        # Under warn it is served at once and scanned beside the answer.
        warn = self.start_node_on(node.data_dir)
        status, headers, body = self.get(warn, "evil/pytorch_model.bin")
        self.assertEqual((status, body), (200, self.files["evil/pytorch_model.bin"]))
        self.assertIn(headers["x-inferllama-scan"], ("unscanned", "findings=1"))
        wait_until(lambda: self.get(warn, "evil/pytorch_model.bin", "HEAD")[1]["x-inferllama-scan"] == "findings=1",
                   what="the stored file's scan")
        self.assertEqual(self.scan_api(warn, "evil.pkl")["status"], "findings=1")

    @unittest.skipUnless(os.path.exists(PICKLESCAN), "picklescan's venv (scripts/install-deps.sh --test) is missing")
    def test_picklescan_agrees_on_the_pickles(self):
        """picklescan on the same files: both flag os.system, both pass numpy's globals; the differences are
        printed (picklescan judges no safetensors structure; its --strict flags _codecs.encode)."""
        node = self.start_node()
        for name in self.files:
            self.get(node, name)
        self.settled(node)
        script = ("import json, sys\n"
                  "from picklescan.scanner import scan_file_path\n"
                  "out = {}\n"
                  "for path in sys.argv[1:]:\n"
                  "    r, s = scan_file_path(path), scan_file_path(path, strict=True)\n"
                  "    out[path] = {'scanned': r.scanned_files, 'dangerous': r.issues_count, 'error': r.scan_err,\n"
                  "                 'strict': s.issues_count, 'globals': sorted(f'{g.module}.{g.name}' for g in r.globals)}\n"
                  "print(json.dumps(out))\n")
        paths = {name: os.path.join(self.dir, name) for name in self.files}
        run = subprocess.run([PICKLESCAN, "-c", script, *paths.values()], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        theirs = json.loads(run.stdout)
        print("\nfile                      node                  picklescan (default / --strict)")
        for name, path in paths.items():
            ours = self.scan_api(node, name)["status"]
            ps = theirs[path]
            verdict = f"{ps['dangerous']} dangerous / {ps['strict']} strict" + (", error" if ps["error"] else "")
            flagged = ps["dangerous"] > 0 or ps["strict"] > 0
            differs = ours.startswith("findings") != flagged
            print(f"{name:25} {ours:21} {verdict}{'   <- differs' if differs else ''}")
        for name in ("evil.pkl", "evil/pytorch_model.bin"):
            self.assertGreater(theirs[paths[name]]["dangerous"], 0, name)
            self.assertTrue(self.scan_api(node, name)["status"].startswith("findings"), name)
            self.assertIn("posix.system", theirs[paths[name]]["globals"])
        # numpy's globals pass both (picklescan's --strict also flags _codecs.encode, which protocol 2 writes for
        # every bytes object and the node allows).
        self.assertEqual(theirs[paths["arrays.pkl"]]["dangerous"], 0)
        self.assertEqual(self.scan_api(node, "arrays.pkl")["status"], "clean")
        # The structure of safetensors is the node's own check: picklescan finds nothing wrong with either.
        for name in ("truncated.safetensors", "overlap.safetensors"):
            self.assertEqual((theirs[paths[name]]["dangerous"], theirs[paths[name]]["strict"]), (0, 0))
            self.assertTrue(self.scan_api(node, name)["status"].startswith("findings"))


if __name__ == "__main__":
    unittest.main()
