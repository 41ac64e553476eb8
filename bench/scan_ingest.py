#!/usr/bin/env python3
"""Scanning on ingest: a cold miss of the same large file through a node with scanning off and one with it on
(scan_policy warn), in one run, node against node.

The scanner is fed from the whole-file hash's in-order pass over each chunk (no second read of the bytes), so
what it costs is its own CPU: for safetensors only the header, for PyTorch's zip the local headers and data.pkl
(the tensors' entries are skipped by their size), for a plain pickle every opcode (a bytes payload is skipped
by its length). Files: a safetensors, a torch.save-style zip (archive/data.pkl and one large tensor entry) and
a plain pickle of 1 MiB bytes objects, each of --size bytes, made once into BENCH_HUB_DIR/scan-ingest and
served by the fake Hub (--files-from).

Measured per run: from the client's request to the file committed (curl's whole download, then the wait for
inferllama_downloads_total{result="completed"}), median of --reps runs per mode, off and on alternating and
which goes first alternating too. Line: `RATIO scan_ingest_<kind> = off time / on time` (1.00 = scanning costs
nothing; goal >= 0.95). The warn node must have scanned each file (inferllama_scan_files_total).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import struct
import sys
import time
import zipfile

import common as c

REPO = "acme/scan-ingest"
COMPLETED = 'inferllama_downloads_total{result="completed"}'
KINDS = {"safetensors": "model.safetensors", "torch_zip": "pytorch_model.bin", "pickle": "arrays.pkl"}


def pattern_block(size: int) -> bytes:
    return bytes((i * 2654435761 >> 13) & 0xff for i in range(size))


def write_safetensors(path: str, size: int) -> None:
    tensors, offset, n = {}, 0, 0
    block = 64 * c.MIB
    header_room = 4096
    data_size = size - 8 - header_room
    while offset < data_size:
        length = min(block, data_size - offset) // 4 * 4
        if length == 0:
            break
        tensors[f"layer.{n}.weight"] = {"dtype": "F32", "shape": [length // 4], "data_offsets": [offset, offset + length]}
        offset, n = offset + length, n + 1
    header = json.dumps(tensors).encode()
    header += b" " * (size - 8 - offset - len(header))
    chunk = pattern_block(c.MIB)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        for at in range(0, offset, len(chunk)):
            fh.write(chunk[:min(len(chunk), offset - at)])


def write_torch_zip(path: str, size: int) -> None:
    data_pkl = pickle.dumps({"weight": ("storage", "FloatStorage", "0", "cpu", size // 4)}, protocol=2)
    chunk = pattern_block(c.MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")
        with z.open("archive/data/0", "w", force_zip64=True) as out:
            left = size - 4096
            while left > 0:
                out.write(chunk[:min(len(chunk), left)])
                left -= len(chunk)


def write_pickle(path: str, size: int) -> None:
    chunk = pattern_block(c.MIB)
    with open(path, "wb") as fh:
        # A list of bytes objects, written as pickle would write it, one item at a time.
        fh.write(b"\x80\x04]\x94(")
        for _ in range(max(1, size // (c.MIB + 16))):
            fh.write(b"\x8e" + struct.pack("<Q", len(chunk)) + chunk + b"\x94")
        fh.write(b"e.")


def make_files(size: int) -> str:
    root = os.path.join(c.HUB_DIR, "scan-ingest", str(size))
    os.makedirs(root, exist_ok=True)
    for writer, name in ((write_safetensors, KINDS["safetensors"]), (write_torch_zip, KINDS["torch_zip"]),
                         (write_pickle, KINDS["pickle"])):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            writer(path + ".tmp", size)
            os.replace(path + ".tmp", path)
    return root


def fill(hub_url: str, name: str, size: int, policy: str) -> tuple[float, float]:
    """A cold miss through a fresh node: seconds from the request to the file committed, and the seconds the
    node says its scanner took (inferllama_scan_seconds_total)."""
    with c.node(hub_url, "--scan-policy", policy) as node:
        url = f"{node.url}/{REPO}/resolve/main/{name}"
        t0 = time.monotonic()
        r = c.curl_get(url, max_time=600)
        while node.metric(COMPLETED) < 1:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the node did not commit the file")
            time.sleep(0.005)  # polling the node's counter, bounded above
        took = time.monotonic() - t0
        if r["code"] != 200 or r["bytes"] < size * 0.99:
            raise RuntimeError(f"through the node: {r}")
        metrics = node.metrics()
        scanned = sum(v for k, v in metrics.items() if k.startswith("inferllama_scan_files_total{"))
        if (policy == "off") != (scanned == 0):
            raise RuntimeError(f"scan_policy {policy}: {scanned} files scanned")
        return took, metrics.get("inferllama_scan_seconds_total", 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    t0 = time.monotonic()
    root = make_files(size)
    print(f"# files of {c.fmt_size(size)} in {root} (made in {time.monotonic() - t0:.1f} s, once per size)")
    hub = c.harness.FakeHub("--files-from", f"{REPO}={root}")
    hub.start()
    try:
        rows = []
        for kind in args.kinds.split(","):
            name = KINDS[kind]
            actual = os.path.getsize(os.path.join(root, name))
            times: dict[str, list[float]] = {"off": [], "warn": []}
            scanner: list[float] = []
            for rep in range(args.reps):
                for policy in (("off", "warn") if rep % 2 == 0 else ("warn", "off")):
                    took, scan_seconds = fill(hub.url, name, actual, policy)
                    times[policy].append(took)
                    if policy == "warn":
                        scanner.append(scan_seconds)
            off, on = c.median(times["off"]), c.median(times["warn"])
            rows.append([kind, f"{off:.2f} s", f"{on:.2f} s", c.mbps(actual / off), c.mbps(actual / on),
                         f"{c.median(scanner) * 1000:.1f} ms"])
            c.ratio(f"scan_ingest_{kind}", off / on,
                    f"ingest time with scanning off / on, median of {args.reps}; goal >= 0.95")
        c.table(["file", "off", "on (warn)", "off rate", "on rate", "scanner time"], rows)
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
