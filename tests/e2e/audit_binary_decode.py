#!/usr/bin/env python3
"""Decodes a ContainerSSH binary audit log (`audit.format: binary`) as ContainerSSH's own
decoder (internal/auditlog/codec/binary/decode.go) does, and prints one JSON object per
message: {"connectionId", "timestamp", "type", "payload", "channelId"}, byte strings as
{"bytes": "<latin-1 text>"}.

Its rules: a 40-byte header (b"ContainerSSH-Auditlog" padded with zeros to 32 bytes, then the
version as a little-endian u64, at most 2); then a gzip stream, which ContainerSSH's encoder
flushes but never finishes (its decoder stops where the compressed data ends unexpectedly);
in it, version 1: one CBOR array of messages, version 2: CBOR messages one after another.

Usage: audit_binary_decode.py FILE
"""
import io
import json
import sys
import zlib

import cbor2

MAGIC = b"ContainerSSH-Auditlog".ljust(32, b"\0")


def plain(value):
    if isinstance(value, bytes):
        return {"bytes": value.decode("latin-1")}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def decode(data):
    if len(data) < 40:
        raise ValueError("shorter than the header")
    if data[:32] != MAGIC:
        raise ValueError("invalid file format header: %r" % data[:32])
    version = int.from_bytes(data[32:40], "little")
    if version > 2:
        raise ValueError("file format version is higher than supported: %d" % version)
    # 16 + MAX_WBITS: a gzip member; an unfinished stream yields what was flushed.
    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[40:])
    stream = io.BytesIO(raw)
    decoder = cbor2.CBORDecoder(stream)
    if version == 1:
        return list(decoder.decode())
    messages = []
    while stream.tell() < len(raw):
        messages.append(decoder.decode())
    return messages


def main():
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    for message in decode(data):
        for key in ("connectionId", "timestamp", "type", "payload", "channelId"):
            if key not in message:
                raise ValueError("message without %s: %r" % (key, message))
        print(json.dumps(plain(message)))


if __name__ == "__main__":
    main()
