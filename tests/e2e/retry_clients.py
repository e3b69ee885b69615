"""Key-then-password logins with two other SSH client implementations.

    retry_clients.py PORT USER PASSWORD UNKNOWN_KEY

The key is one the gateway does not know, so each client must fall back to the password on the
same connection. paramiko asks for the ssh-userauth service again before each method.
Prints one line per client; exit status 0 only when both logged in and ran a command.
"""
import asyncio
import sys

import asyncssh
import paramiko

PORT, USER, PASSWORD, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def with_paramiko():
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", PORT, username=USER, key_filename=KEY, password=PASSWORD,
                   look_for_keys=False, allow_agent=False, timeout=30, auth_timeout=30,
                   banner_timeout=30)
    try:
        _, stdout, _ = client.exec_command("echo paramiko-in", timeout=60)
        out = stdout.read().decode()
        assert out == "paramiko-in\n", out
        print("paramiko ok", flush=True)
    finally:
        client.close()


async def with_asyncssh():
    async with asyncssh.connect("127.0.0.1", PORT, username=USER, client_keys=[KEY],
                                password=PASSWORD, known_hosts=None, agent_path=None,
                                preferred_auth="publickey,password") as conn:
        result = await asyncio.wait_for(conn.run("echo asyncssh-in", check=True), 60)
        assert result.stdout == "asyncssh-in\n", result.stdout
        print("asyncssh ok", flush=True)


with_paramiko()
asyncio.run(with_asyncssh())
