"""A second SSH client (asyncssh) for the flow-control tests.

    flow_client.py PORT KEY USER

1. Streams 64 MiB into `cat` while reading it back on the same channel; compares SHA-256.
2. On one connection, a channel whose program never reads its stdin (while the client keeps
   writing) must not hold up a second channel.
Every step is bounded in time; the exit status is 0 only when both held.
"""
import asyncio
import hashlib
import os
import sys

import asyncssh

PORT, KEY, USER = int(sys.argv[1]), sys.argv[2], sys.argv[3]
SIZE = 64 * 1024 * 1024


async def connect():
    return await asyncssh.connect(
        "127.0.0.1", PORT, username=USER, client_keys=[KEY], known_hosts=None,
        agent_path=None, password=None, preferred_auth="publickey",
    )


async def round_trip(conn):
    process = await conn.create_process("cat", encoding=None)
    sent = hashlib.sha256()
    got = hashlib.sha256()
    received = 0

    async def write():
        chunk_seed = os.urandom(1 << 20)
        for i in range(SIZE >> 20):
            chunk = bytes([i & 0xFF]) + chunk_seed[1:]
            sent.update(chunk)
            process.stdin.write(chunk)
            await process.stdin.drain()
        process.stdin.write_eof()

    async def read():
        nonlocal received
        while True:
            data = await process.stdout.read(1 << 16)
            if not data:
                return
            got.update(data)
            received += len(data)

    await asyncio.wait_for(asyncio.gather(write(), read()), 180)
    result = await asyncio.wait_for(process.wait(), 30)
    assert received == SIZE, f"received {received} of {SIZE}"
    assert sent.digest() == got.digest(), "the data came back changed"
    assert result.exit_status == 0, result.exit_status
    print("round-trip ok", flush=True)


async def stalled_channel(conn):
    stalled = await conn.create_process("sleep 15; wc -c", encoding=None)

    async def push():
        zeros = bytes(1 << 20)
        for _ in range(16):
            stalled.stdin.write(zeros)
            await stalled.stdin.drain()
        stalled.stdin.write_eof()

    pusher = asyncio.ensure_future(push())
    await asyncio.sleep(2)
    assert not pusher.done(), "16 MiB went into a program that does not read"
    result = await asyncio.wait_for(conn.run("echo beside", check=True), 8)
    assert result.stdout == "beside\n", result.stdout
    await asyncio.wait_for(pusher, 60)
    out = await asyncio.wait_for(stalled.stdout.read(), 60)
    assert out.strip() == str(16 << 20).encode(), out
    print("stalled channel ok", flush=True)


async def main():
    async with await connect() as conn:
        await round_trip(conn)
        await stalled_channel(conn)


asyncio.run(main())
