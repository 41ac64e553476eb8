"""HTTPS on its own listener: TLS 1.2+ only, the same API and bytes as plain HTTP, HSTS on TLS answers."""
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest
import http.client

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeHub, Node, sha256  # noqa: E402

MODEL = "acme/tiny-model"


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-tls-")
        cls.cert, cls.key = os.path.join(cls.tmp, "cert.pem"), os.path.join(cls.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", cls.key, "-out", cls.cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        cls.hub = FakeHub().start()
        cls.node = Node(cls.hub.url, None, "--tls-listen", "127.0.0.1:0", "--tls-cert", cls.cert,
                        "--tls-key", cls.key).start()
        cls.tls_port = cls.node.tls_port  # from the "inferllama listening on https://" line

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def https(self, method, path, context=None):
        context = context or ssl.create_default_context(cafile=self.cert)
        conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, context=context, timeout=60)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def test_files_and_metadata_over_https(self):
        for path, f in self.hub.files(MODEL).items():
            status, h, body = self.https("GET", self.node.resolve_path(MODEL, "main", path))
            self.assertEqual((status, sha256(body)), (200, f["sha256"]), path)
            self.assertIn("max-age=", h["strict-transport-security"])
        status, _, _ = self.https("GET", f"/api/models/{MODEL}/tree/main?recursive=true")
        self.assertEqual(status, 200)
        # Plain HTTP keeps working, without HSTS.
        status, h, _ = self.node.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertNotIn("strict-transport-security", h)

    def test_old_protocols_are_refused(self):
        context = ssl.create_default_context(cafile=self.cert)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            context.set_ciphers("ALL:@SECLEVEL=0")
        except ssl.SSLError:
            pass
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.https("GET", "/healthz", context)
        status, _, _ = self.https("GET", "/healthz")
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main()
