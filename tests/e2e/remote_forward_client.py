"""A second SSH client (asyncssh) for `ssh -R`: port 0, many connections at once, cancel.

    remote_forward_client.py PORT KEY USER

1. Asks for a remote forward of port 0 to a local echo server; the gateway names the port.
2. On the same connection, four connections from inside the container through that port at
   once, 4 MiB each way, compared by SHA-256.
3. Cancels the forward (cancel-tcpip-forward); connecting inside then fails.
Every step is bounded in time; the exit status is 0 only when all held.
"""
import asyncio
import sys

import asyncssh

PORT, KEY, USER = int(sys.argv[1]), sys.argv[2], sys.argv[3]


async def echo(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    echo_port = server.sockets[0].getsockname()[1]
    conn = await asyncssh.connect(
        "127.0.0.1", PORT, username=USER, client_keys=[KEY], known_hosts=None,
        agent_path=None, password=None, preferred_auth="publickey",
    )
    async with conn:
        listener = await conn.forward_remote_port("localhost", 0, "127.0.0.1", echo_port)
        port = listener.get_port()
        print(f"allocated port {port}", flush=True)
        assert port > 0, port
        script = (
            "head -c 4194304 /dev/urandom > /tmp/d && sha256sum < /tmp/d && "
            "for i in 1 2 3 4; do "
            f"(socat -t30 TCP:127.0.0.1:{port},retry=100,interval=0.2 - < /tmp/d | sha256sum > /tmp/r$i) & "
            "done; wait; cat /tmp/r1 /tmp/r2 /tmp/r3 /tmp/r4"
        )
        result = await asyncio.wait_for(conn.run(script), 120)
        sums = result.stdout.split()
        sums = [s for s in sums if len(s) == 64]
        print("sums", sums, result.stderr, flush=True)
        assert len(sums) == 5 and len(set(sums)) == 1, (sums, result.stderr)
        print("four connections ok", flush=True)
        listener.close()
        await listener.wait_closed()
        probe = (
            "for i in $(seq 100); do "
            f"socat -u TCP:127.0.0.1:{port},connect-timeout=1 - </dev/null 2>/dev/null || {{ echo closed; exit 0; }}; "
            "sleep 0.2; done; echo still-open"
        )
        result = await asyncio.wait_for(conn.run(probe), 60)
        assert result.stdout.strip() == "closed", result.stdout
        print("cancel ok", flush=True)
    server.close()


asyncio.run(asyncio.wait_for(main(), 240))
