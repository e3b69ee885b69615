#!/usr/bin/env python3
"""Public-key logins per second and server CPU per login: the gateway against OpenSSH's sshd on
the same machine, same client (AsyncSSH), same key type, same run.

Each login is a full connection: key exchange, ed25519 public-key authentication, disconnect (no
session, so the gateway starts no container and sshd runs no shell). --parallel clients each do
--per-client logins back to back; the two servers are measured alternately, --rounds times, and
the medians compared.

  gateway CPU: utime+stime of the gateway process (/proc/PID/stat) over the burst
  sshd CPU:    the listener's own time plus the time of its children, which it reaps
               (cutime+cstime of the listener process)

usage: tests/bench/logins.py [--parallel 20] [--per-client 10] [--rounds 3]
        (after `cargo build --release -p containerssh`; needs asyncssh and /usr/sbin/sshd)
Target: the gateway's logins/s at least 3x sshd's.
"""
import argparse, asyncio, json, os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CONTAINERSSH_BIN", os.path.join(ROOT, "target/release/containerssh"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_seconds(pid, children):
    # Fields after the command name (which may hold spaces) start at index 2 ("state").
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    total = utime + stime + (cutime + cstime if children else 0)
    return total / TICKS


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start_gateway(d, pub):
    port = free_port()
    config = {
        "ssh": {"listen": f"127.0.0.1:{port}", "hostkeys": [os.path.join(d, "gw_hostkey")],
                # Every client comes from 127.0.0.1.
                "maxUnauthenticatedPerSource": 0},
        "log": {"level": "warn"},
        "auth": {"plugin": "builtin:static-users", "config": {"users": {"bench": {"authorizedKeys": [pub]}}}},
        "docker": {"execution": {"container": {"image": "containerssh-test/guest:5"},
                                  "host": {"networkMode": "none"}, "imagePullPolicy": "Never"}},
    }
    cfg = os.path.join(d, "gateway.json")
    json.dump(config, open(cfg, "w"))
    proc = subprocess.Popen([BIN, "--config", cfg], stderr=open(os.path.join(d, "gateway.log"), "w"))
    wait_port(port)
    return proc, port, "bench", False


def start_sshd(d, pub):
    port = free_port()
    hostkey = os.path.join(d, "sshd_hostkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
    keys = os.path.join(d, "authorized_keys")
    open(keys, "w").write(pub + "\n")
    os.chmod(keys, 0o600)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    conf = os.path.join(d, "sshd_config")
    open(conf, "w").write(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\nAuthorizedKeysFile {keys}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nPidFile none\n"
        # The defaults (10:30:100 and per-source penalties) would refuse a benchmark's burst.
        "MaxStartups 1000\nMaxSessions 100\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", conf],
                            stderr=open(os.path.join(d, "sshd.log"), "w"))
    wait_port(port)
    return proc, port, user, True


async def burst(port, user, key, parallel, per_client):
    import asyncssh
    failures = 0

    async def client():
        nonlocal failures
        for _ in range(per_client):
            try:
                conn = await asyncssh.connect("127.0.0.1", port, username=user, client_keys=[key],
                                              known_hosts=None, agent_path=None, preferred_auth="publickey")
                conn.close()
                await conn.wait_closed()
            except (OSError, asyncssh.Error):
                failures += 1

    await asyncio.gather(*(client() for _ in range(parallel)))
    return failures


def measure(server, key, args):
    proc, port, user, children = server
    asyncio.run(burst(port, user, key, 2, 2))  # warm up
    before = cpu_seconds(proc.pid, children)
    t = time.perf_counter()
    failures = asyncio.run(burst(port, user, key, args.parallel, args.per_client))
    wall = time.perf_counter() - t
    logins = args.parallel * args.per_client - failures
    cpu = cpu_seconds(proc.pid, children) - before
    return logins / wall, cpu * 1000 / max(logins, 1), failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--per-client", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p containerssh")
    import asyncssh
    d = tempfile.mkdtemp(prefix="containerssh-logins")
    key_path = os.path.join(d, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_path], check=True)
    pub = open(key_path + ".pub").read().strip()
    key = asyncssh.read_private_key(key_path)
    gw = start_gateway(d, pub)
    sshd = start_sshd(d, pub)
    results = {"gateway": [], "sshd": []}
    try:
        for _ in range(args.rounds):
            for name, server in (("gateway", gw), ("sshd", sshd)):
                results[name].append(measure(server, key, args))
    finally:
        for proc in (gw[0], sshd[0]):
            proc.terminate(); proc.wait(30)
    rate, cpu = {}, {}
    for name, runs in results.items():
        rate[name] = statistics.median(r[0] for r in runs)
        cpu[name] = statistics.median(r[1] for r in runs)
        failed = sum(r[2] for r in runs)
        print(f"{name:8} {rate[name]:7.1f} logins/s  {cpu[name]:6.2f} ms server CPU per login  ({failed} failed)")
    print(f"logins/s gateway/sshd = {rate['gateway'] / rate['sshd']:.2f}   (target >= 3)")
    print(f"CPU per login sshd/gateway = {cpu['sshd'] / cpu['gateway']:.1f}x")


if __name__ == "__main__":
    main()
