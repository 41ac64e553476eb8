"""Minimal bencode (BEP 3) for tests: read a .torrent, change its outer keys, write it back."""
from __future__ import annotations


def decode(data: bytes):
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes at {end}")
    return value


def _decode(data: bytes, i: int):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c == b"l":
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if c == b"d":
        out, i = {}, i + 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            out[key], i = _decode(data, i)
        return out, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1:colon + 1 + length], colon + 1 + length


def encode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, str):
        return encode(value.encode())
    if isinstance(value, list):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(encode(k) + encode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(type(value))
