#!/usr/bin/env python3
"""Gateway benchmarks, each a ratio against a baseline measured in the same run.

  latency:    `ssh gw true` (connect, auth, container start, first output, exit)
              vs `docker run --rm --network none IMAGE true` on the same engine
  throughput: `ssh gw 'head -c 1G /dev/zero' > /dev/null`
              vs `docker exec CONTAINER head -c 1G /dev/zero > /dev/null`
  streams:    the same random file (--stream-bytes) through `ssh gw cat` and back, and uploaded
              with `ssh gw 'cat > /dev/null'`, vs `docker exec -i CONTAINER` doing the same; as
              root, also vs OpenSSH's sshd on this machine running that `docker exec -i` (the
              same path built by hand: SSH, then the engine)
  memory:     gateway RSS per idle authenticated connection with an open shell (--conns of them,
              each `ssh -tt gw` holding a shell), from /proc/PID/status before and after
  audit:      a terminal session (`ssh -tt`) printing --audit-bytes through a gateway that
              records it (audit log + asciicast) vs the same through a gateway that does not
  pool:       `ssh gw true` through a gateway with a warm pool (docker.execution.pool) vs
              `docker run --rm IMAGE true` and vs the same gateway without a pool; then
              --pool-burst logins at once against a pool of --pool-size (latency distribution)
  forwarding: `ssh -L` to servers in the container (socat): --forward-bytes downloaded from
              `head -c N /dev/zero` and uploaded into `cat > /dev/null` through the forward vs
              piping the same bytes through `docker exec` / `docker exec -i`; setup time of one
              forwarded connection (connect until the first byte of `echo`) vs `docker exec echo`
  kubernetes: (with --kubernetes ENV, the env file of tests/k8s/cluster.sh) `ssh gw true` on the
              Kubernetes backend vs the same steps by hand with kubectl (create the pod, wait
              until it runs, exec `true`, delete it without waiting), and `ssh gw head -c N`
              vs `kubectl exec POD head -c N` into a pod of the same spec; `ssh gw true` with a
              warm pool (kubernetes.pod.pool) vs the kubectl steps

usage: tests/bench/bench.py [--runs N] [--bytes N] [--kubernetes ENV]   (after `cargo build --release`)
Targets: latency ratio <= 1.2, output throughput ratio >= 0.95, round trip and upload >= 0.8,
RSS per idle connection <= 128 KiB, audit on/off throughput ratio >= 0.9;
warm pool vs docker run <= 0.3; `ssh -L` throughput vs docker exec >= 0.7; Kubernetes: latency ratio <= 1.2, throughput ratio >= 0.7,
warm pool vs kubectl steps <= 0.2.
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CONTAINERSSH_BIN", os.path.join(ROOT, "target/release/containerssh"))
IMAGE = "containerssh-test/guest:5"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--audit-bytes", type=int, default=200 << 20)
    ap.add_argument("--stream-bytes", type=int, default=512 << 20)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--kubernetes", metavar="ENV", help="also measure the Kubernetes backend")
    ap.add_argument("--only-kubernetes", action="store_true")
    ap.add_argument("--only-pool", action="store_true")
    ap.add_argument("--pool-size", type=int, default=10)
    ap.add_argument("--pool-burst", type=int, default=20)
    ap.add_argument("--only-forwarding", action="store_true")
    ap.add_argument("--only-streams", action="store_true")
    ap.add_argument("--forward-bytes", type=int, default=256 << 20)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p containerssh")
    d = tempfile.mkdtemp(prefix="containerssh-bench")
    key = os.path.join(d, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pub = open(key + ".pub").read().strip()
    if args.only_pool:
        warm_pool(args, d, key, pub)
    elif args.only_forwarding:
        forwarding(args, d, key, pub)
    elif args.only_streams:
        gw, port = start_gateway(d, pub, {})
        try:
            streams(args, d, key, port)
        finally:
            gw.terminate(); gw.wait(60)
    elif not args.only_kubernetes:
        gw, port = start_gateway(d, pub, {})
        try:
            latency_and_throughput(args, d, key, port)
            streams(args, d, key, port)
        finally:
            gw.terminate(); gw.wait(60)
        # A fresh gateway: memory freed by the streams above would hide what connections cost.
        # All clients come from 127.0.0.1, so the per-source cap on unauthenticated
        # connections is lifted for this one.
        gw, port = start_gateway(d, pub, {"ssh": {"maxUnauthenticatedPerSource": 0}})
        try:
            idle_memory(args, d, key, gw.pid, port)
        finally:
            gw.terminate(); gw.wait(60)
        audit_overhead(args, d, key, pub)
        warm_pool(args, d, key, pub)
        forwarding(args, d, key, pub)
    if args.kubernetes:
        kubernetes(args, d, key, pub)

def ssh_cmd(key, port):
    return ["ssh", "-p", str(port), "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "bench@127.0.0.1"]

def start_gateway(d, pub, extra):
    port = free_port()
    config = {
        "ssh": {"listen": f"127.0.0.1:{port}", "hostkeys": [os.path.join(d, "hostkey")]},
        "log": {"level": "warn"},
        "auth": {"plugin": "builtin:static-users", "config": {"users": {"bench": {"authorizedKeys": [pub]}}}},
        "docker": {"execution": {"container": {"image": IMAGE, "user": "1000:1000"},
                                  "host": {"networkMode": "none"}, "imagePullPolicy": "Never"}},
    }
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(config.get(k), dict):
            config[k].update(v)
        else:
            config[k] = v
    cfg = os.path.join(d, f"config-{port}.json")
    json.dump(config, open(cfg, "w"))
    gw = subprocess.Popen([BIN, "--config", cfg], stderr=open(os.path.join(d, f"gw-{port}.log"), "w"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close(); break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)
    return gw, port

def latency_and_throughput(args, d, key, port):
    ssh = ssh_cmd(key, port)
    docker_run = ["docker", "run", "--rm", "--network", "none", IMAGE, "true"]
    # Interleave the two so that machine noise hits both alike.
    for _ in range(2):
        timed(ssh + ["true"]); timed(docker_run)
    gw_t, dk_t = [], []
    for _ in range(args.runs):
        gw_t.append(timed(ssh + ["true"]))
        dk_t.append(timed(docker_run))
    lat_gw, lat_dk = statistics.median(gw_t), statistics.median(dk_t)
    print(f"latency   ssh gw true:      median {lat_gw*1000:7.1f} ms  (min {min(gw_t)*1000:.1f})")
    print(f"latency   docker run true:  median {lat_dk*1000:7.1f} ms  (min {min(dk_t)*1000:.1f})")
    print(f"latency   ratio gateway/docker = {lat_gw/lat_dk:.2f}   (target <= 1.2)")

    n = args.bytes
    cid = subprocess.run(["docker", "run", "-d", "--network", "none", IMAGE, "sleep", "3600"],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        gw_b, dk_b = [], []
        for _ in range(3):
            gw_b.append(timed(ssh + [f"head -c {n} /dev/zero"]))
            dk_b.append(timed(["docker", "exec", cid, "head", "-c", str(n), "/dev/zero"]))
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    tg, td = min(gw_b), min(dk_b)
    print(f"throughput ssh gw:          {n/tg/1e6:7.1f} MB/s")
    print(f"throughput docker exec:     {n/td/1e6:7.1f} MB/s")
    print(f"throughput ratio gateway/docker = {td/tg:.2f}   (target >= 0.95)")

def streams(args, d, key, port):
    ssh = ssh_cmd(key, port)
    n = args.stream_bytes
    data = os.path.join(d, "stream.bin")
    with open(data, "wb") as f:
        left = n
        while left:
            k = min(left, 1 << 24); f.write(os.urandom(k)); left -= k
    cid = subprocess.run(["docker", "run", "-d", "--network", "none", IMAGE, "sleep", "3600"],
                         check=True, capture_output=True, text=True).stdout.strip()
    dexec = ["docker", "exec", "-i", cid]
    # Both sides into a running container: the gateway's container is held by a master
    # connection, and each run is a new session on it (a new exec, as `docker exec -i` is).
    control = os.path.join(d, "cm.sock")
    subprocess.run(ssh[:-1] + ["-o", "ControlMaster=yes", "-o", f"ControlPath={control}", "-N", "-f", ssh[-1]],
                   check=True)
    ssh = ssh[:-1] + ["-o", f"ControlPath={control}", ssh[-1]]
    cases = [("round trip (cat)", ["cat"], ["cat"]),
             ("upload (cat > /dev/null)", ["sh", "-c", "cat > /dev/null"], ["sh", "-c", "'cat > /dev/null'"])]
    sshd, by_hand = reference_sshd(d, key)
    try:
        for name, dk_cmd, gw_cmd in cases:
            gw_t, dk_t, sd_t = [], [], []
            for _ in range(3):
                with open(data, "rb") as f:
                    gw_t.append(timed(ssh + [" ".join(gw_cmd)], stdin=f))
                with open(data, "rb") as f:
                    dk_t.append(timed(dexec + dk_cmd, stdin=f))
                if by_hand:
                    with open(data, "rb") as f:
                        sd_t.append(timed(by_hand + [" ".join(["docker", "exec", "-i", cid] + gw_cmd)], stdin=f))
            tg, td = min(gw_t), min(dk_t)
            print(f"stream    {name:26s} gateway {n/tg/1e6:7.1f} MB/s, docker exec -i {n/td/1e6:7.1f} MB/s:"
                  f" ratio {td/tg:.2f}   (target >= 0.8)")
            if sd_t:
                ts = min(sd_t)
                print(f"stream    {name:26s} gateway {n/tg/1e6:7.1f} MB/s, OpenSSH sshd + docker exec -i"
                      f" {n/ts/1e6:7.1f} MB/s: ratio {ts/tg:.2f}   (the same path by hand)")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        subprocess.run(ssh[:-1] + ["-O", "exit", ssh[-1]], capture_output=True)
        if sshd:
            subprocess.run(by_hand[:-1] + ["-O", "exit", by_hand[-1]], capture_output=True)
            sshd.terminate(); sshd.wait(10)
        os.unlink(data)

def reference_sshd(d, key):
    """OpenSSH's sshd on a free port, root logins with `key` (root may run docker), a master
    connection held as for the gateway; (None, None) unless root with /usr/sbin/sshd."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        return None, None
    port = free_port()
    host_key = os.path.join(d, "sshd_host")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    config = os.path.join(d, "sshd_config")
    with open(config, "w") as f:
        f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"AuthorizedKeysFile {key}.pub\nPidFile none\nStrictModes no\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close(); break
        except OSError:
            time.sleep(0.05)
    ssh = ssh_cmd(key, port)[:-1] + ["root@127.0.0.1"]
    control = os.path.join(d, "cm-sshd.sock")
    subprocess.run(ssh[:-1] + ["-o", "ControlMaster=yes", "-o", f"ControlPath={control}", "-N", "-f", ssh[-1]],
                   check=True)
    return sshd, ssh[:-1] + ["-o", f"ControlPath={control}", ssh[-1]]

def forwarding(args, d, key, pub):
    n = args.forward_bytes
    gw, port = start_gateway(d, pub, {"security": {"forwarding": {"forwardingMode": "enable"}}})
    ssh = ssh_cmd(key, port)
    down, up, hello = free_port(), free_port(), free_port()
    servers = (f"socat TCP-LISTEN:9000,bind=127.0.0.1,reuseaddr,fork 'EXEC:head -c {n} /dev/zero' & "
               # 128 KiB reads, as the baseline's `cat` does (socat's default is 8 KiB).
               "socat -u -b 131072 TCP-LISTEN:9001,bind=127.0.0.1,reuseaddr,fork OPEN:/dev/null & "
               "exec socat TCP-LISTEN:9002,bind=127.0.0.1,reuseaddr,fork 'EXEC:echo hi'")
    client = subprocess.Popen(ssh[:-1] + ["-L", f"{down}:127.0.0.1:9000", "-L", f"{up}:127.0.0.1:9001",
                                          "-L", f"{hello}:127.0.0.1:9002", ssh[-1], servers],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    cid = subprocess.run(["docker", "run", "-d", "--network", "none", IMAGE, "sleep", "3600"],
                         check=True, capture_output=True, text=True).stdout.strip()
    data = os.path.join(d, "forward.bin")
    with open(data, "wb") as f:
        f.write(b"\0" * n)

    def first_byte(p):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", p))
        got = s.recv(16)
        s.close()
        return time.perf_counter() - t, got

    def download(p):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", p))
        total = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            total += len(b)
        s.close()
        assert total == n, total
        return time.perf_counter() - t

    def upload(p):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", p))
        with open(data, "rb") as f:
            s.sendfile(f)
        s.shutdown(socket.SHUT_WR)
        # The server closes once it has read everything.
        assert s.recv(16) == b""
        s.close()
        return time.perf_counter() - t

    try:
        for _ in range(100):
            try:
                if first_byte(hello)[1] == b"hi\n":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        setup, dexec = [], []
        for _ in range(args.runs):
            setup.append(first_byte(hello)[0])
            dexec.append(timed(["docker", "exec", cid, "echo", "hi"]))
        print(f"forward   setup (connect to first byte): median {statistics.median(setup)*1000:.1f} ms;"
              f" docker exec echo {statistics.median(dexec)*1000:.1f} ms:"
              f" ratio {statistics.median(setup)/statistics.median(dexec):.2f}")
        fwd_dn, dk_dn, fwd_up, dk_up = [], [], [], []
        for _ in range(3):
            fwd_dn.append(download(down))
            dk_dn.append(timed(["docker", "exec", cid, "head", "-c", str(n), "/dev/zero"]))
            fwd_up.append(upload(up))
            with open(data, "rb") as f:
                dk_up.append(timed(["docker", "exec", "-i", cid, "sh", "-c", "cat > /dev/null"], stdin=f))
        for name, fw, dk in (("download", fwd_dn, dk_dn), ("upload", fwd_up, dk_up)):
            tf, td = min(fw), min(dk)
            print(f"forward   ssh -L {name:9s} {n/tf/1e6:7.1f} MB/s vs docker exec {n/td/1e6:7.1f} MB/s:"
                  f" ratio {td/tf:.2f}   (target >= 0.7)")
        # ssh -R: a server on this machine sends n bytes into the container through a listener
        # there; timed from its accept until the container's reader closed.
        rev_times = []
        src = socket.socket(); src.bind(("127.0.0.1", 0)); src.listen(8)
        src_port = src.getsockname()[1]
        rev_gw, rev_port = start_gateway(d, pub, {"security": {"forwarding": {"reverseForwardingMode": "enable"}}})
        reader = ("for i in 1 2 3; do socat -u TCP:127.0.0.1:9100,retry=100,interval=0.1 OPEN:/dev/null; done")
        rev = subprocess.Popen(ssh_cmd(key, rev_port)[:-1] + ["-R", f"9100:127.0.0.1:{src_port}",
                                                             ssh_cmd(key, rev_port)[-1], reader],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            chunk = b"\0" * (1 << 20)
            src.settimeout(120)
            for _ in range(3):
                conn, _ = src.accept()
                t = time.perf_counter()
                left = n
                while left:
                    left -= conn.send(chunk[:min(left, len(chunk))])
                conn.shutdown(socket.SHUT_WR)
                assert conn.recv(16) == b""
                rev_times.append(time.perf_counter() - t)
                conn.close()
        finally:
            rev.terminate(); rev.wait(30)
            rev_gw.terminate(); rev_gw.wait(60)
            src.close()
        tr, td = min(rev_times), min(dk_up)
        print(f"forward   ssh -R into the container {n/tr/1e6:7.1f} MB/s vs docker exec -i {n/td/1e6:7.1f} MB/s:"
              f" ratio {td/tr:.2f}")
    finally:
        client.terminate(); client.wait(30)
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        gw.terminate(); gw.wait(60)
        os.unlink(data)

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def idle_memory(args, d, key, pid, port):
    ssh = ssh_cmd(key, port)
    subprocess.run(ssh + ["true"], check=True)
    time.sleep(1)
    before = rss_kib(pid)
    clients = []
    try:
        for _ in range(args.conns):
            # -tt: a terminal and a shell per connection; stdin a pipe kept open, so it stays idle.
            clients.append(subprocess.Popen(["ssh", "-tt"] + ssh[1:], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 300
        while time.time() < deadline:
            instance = f"{socket.gethostname()}_127.0.0.1:{port}"
            running = subprocess.run(["docker", "ps", "-q", "--filter", f"label=containerssh.instance={instance}"],
                                     capture_output=True, text=True).stdout.split()
            if len(running) >= args.conns:
                break
            time.sleep(1)
        time.sleep(3)
        after = rss_kib(pid)
    finally:
        for c in clients:
            c.kill(); c.wait()
    per = (after - before) / args.conns
    print(f"memory    gateway RSS {before} KiB idle, {after} KiB with {args.conns} open shells:"
          f" {per:.0f} KiB per connection   (target <= 128)")

def audit_overhead(args, d, key, pub):
    audit_dir = os.path.join(d, "audit")
    plain, plain_port = start_gateway(d, pub, {})
    audited, audited_port = start_gateway(d, pub, {"audit": {"enable": True, "file": {"directory": audit_dir}}})
    n = args.audit_bytes
    # A terminal session printing n bytes of text (no newlines): all of it is recorded.
    remote = f"head -c {n} /dev/zero | tr '\\0' x"
    try:
        off, on = [], []
        for _ in range(3):
            off.append(timed(["ssh", "-tt"] + ssh_cmd(key, plain_port)[1:] + [remote], stdin=subprocess.DEVNULL))
            on.append(timed(["ssh", "-tt"] + ssh_cmd(key, audited_port)[1:] + [remote], stdin=subprocess.DEVNULL))
    finally:
        for g in (plain, audited):
            g.terminate(); g.wait(60)
    recorded = sum(os.path.getsize(os.path.join(audit_dir, f)) for f in os.listdir(audit_dir) if f.endswith(".cast"))
    toff, ton = min(off), min(on)
    print(f"audit     terminal session, not recorded: {n/toff/1e6:7.1f} MB/s")
    print(f"audit     terminal session, recorded:     {n/ton/1e6:7.1f} MB/s  ({recorded/1e6:.0f} MB of recordings)")
    print(f"audit     throughput ratio on/off = {toff/ton:.2f}   (target >= 0.9)")

def wait_for_log(d, port, needle, timeout=120):
    log = os.path.join(d, f"gw-{port}.log")
    end = time.time() + timeout
    while time.time() < end:
        if needle in open(log).read():
            return
        time.sleep(0.1)
    sys.exit(f"the gateway never logged {needle!r}; see {log}")

def warm_pool(args, d, key, pub):
    pool = {"docker": {"execution": {"container": {"image": IMAGE, "user": "1000:1000"},
                                     "host": {"networkMode": "none"}, "imagePullPolicy": "Never",
                                     "pool": {"size": 2}}}}
    pooled, pooled_port = start_gateway(d, pub, dict(pool, log={"level": "info"}))
    cold, cold_port = start_gateway(d, pub, {})
    docker_run = ["docker", "run", "--rm", "--network", "none", IMAGE, "true"]
    try:
        wait_for_log(d, pooled_port, "warm pool full")
        warm, plain, dk = [], [], []
        # Each measurement starts from a quiet engine: the refill after a take and the removal
        # after a login would otherwise land on whichever command runs next.
        for _ in range(args.runs):
            for series, cmd in ((warm, ssh_cmd(key, pooled_port) + ["true"]),
                                (plain, ssh_cmd(key, cold_port) + ["true"]), (dk, docker_run)):
                time.sleep(1.0)
                series.append(timed(cmd))
    finally:
        for g in (pooled, cold):
            g.terminate(); g.wait(60)
    lw, lp, ld = (statistics.median(x) for x in (warm, plain, dk))
    print(f"pool      ssh gw true, warm pool:     median {lw*1000:7.1f} ms  (min {min(warm)*1000:.1f})")
    print(f"pool      ssh gw true, no pool:       median {lp*1000:7.1f} ms")
    print(f"pool      docker run true:            median {ld*1000:7.1f} ms")
    print(f"pool      ratio warm/docker run = {lw/ld:.2f}   (target <= 0.3);  warm/no pool = {lw/lp:.2f}")

    burst = dict(pool)
    burst["docker"] = json.loads(json.dumps(pool["docker"]))
    burst["docker"]["execution"]["pool"] = {"size": args.pool_size, "refillConcurrency": 2}
    gw, port = start_gateway(d, pub, dict(burst, ssh={"maxUnauthenticatedPerSource": 0}, log={"level": "info"}))
    try:
        wait_for_log(d, port, "warm pool full")
        procs = []
        for _ in range(args.pool_burst):
            procs.append((time.perf_counter(), subprocess.Popen(ssh_cmd(key, port) + ["true"],
                                                                 stdout=subprocess.DEVNULL)))
        took = []
        for started, p in procs:
            p.wait(120)
            took.append(time.perf_counter() - started)
        log = open(os.path.join(d, f"gw-{port}.log")).read()
    finally:
        gw.terminate(); gw.wait(60)
    hits = log.count("container taken from the warm pool")
    took.sort()
    q = lambda f: took[min(len(took) - 1, int(f * len(took)))] * 1000
    print(f"pool      {args.pool_burst} logins at once, pool of {args.pool_size}: {hits} hits,"
          f" {args.pool_burst - hits} cold; latency p10 {q(0.1):.0f} ms, p50 {q(0.5):.0f} ms,"
          f" p90 {q(0.9):.0f} ms, max {took[-1]*1000:.0f} ms")

def kubernetes(args, d, key, pub):
    env = dict(l.split("=", 1) for l in open(args.kubernetes).read().split())
    ns, image = env["K8S_NAMESPACE"], env["K8S_IMAGE"]
    spec = {"hostNetwork": True, "securityContext": {"runAsUser": 1000},
            "containers": [{"name": "shell", "image": image, "imagePullPolicy": "Never"}]}
    gw, port = start_gateway(d, pub, {"backend": "kubernetes", "kubernetes": {
        "connection": {"host": env["K8S_API"], "cacertFile": env["K8S_CA"],
                       "bearerTokenFile": env["K8S_TOKEN_FILE"]},
        "pod": {"metadata": {"namespace": ns}, "spec": spec}}})
    kubectl = ["kubectl", "--kubeconfig", env["K8S_KUBECONFIG"], "-n", ns]
    ssh = ssh_cmd(key, port)

    def pod(name):
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": dict(spec,
            restartPolicy="Never", automountServiceAccountToken=False, containers=[dict(spec["containers"][0],
            command=["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"])])}
        subprocess.run(kubectl + ["apply", "-f", "-"], input=json.dumps(manifest), text=True, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(kubectl + ["wait", "--for=condition=Ready", "--timeout=120s", f"pod/{name}"],
                       check=True, stdout=subprocess.DEVNULL)

    def by_hand(i):
        pod(f"bench-{i}")
        subprocess.run(kubectl + ["exec", f"bench-{i}", "--", "true"], check=True)
        subprocess.run(kubectl + ["delete", "pod", f"bench-{i}", "--wait=false"], check=True, stdout=subprocess.DEVNULL)

    try:
        timed(ssh + ["true"]); by_hand("warm")
        gw_t, k_t = [], []
        for i in range(args.runs):
            gw_t.append(timed(ssh + ["true"]))
            t = time.perf_counter(); by_hand(i); k_t.append(time.perf_counter() - t)
        lg, lk = statistics.median(gw_t), statistics.median(k_t)
        print(f"k8s latency   ssh gw true:           median {lg*1000:7.1f} ms  (min {min(gw_t)*1000:.1f})")
        print(f"k8s latency   kubectl create+wait+exec: median {lk*1000:7.1f} ms  (min {min(k_t)*1000:.1f})")
        print(f"k8s latency   ratio gateway/kubectl = {lg/lk:.2f}   (target <= 1.2)")
        n = min(args.bytes, 256 << 20)
        pod("bench-throughput")
        gw_b, k_b = [], []
        for _ in range(3):
            gw_b.append(timed(ssh + [f"head -c {n} /dev/zero"]))
            k_b.append(timed(kubectl + ["exec", "bench-throughput", "--", "head", "-c", str(n), "/dev/zero"]))
        tg, tk = min(gw_b), min(k_b)
        print(f"k8s throughput ssh gw:        {n/tg/1e6:7.1f} MB/s")
        print(f"k8s throughput kubectl exec:  {n/tk/1e6:7.1f} MB/s")
        print(f"k8s throughput ratio gateway/kubectl = {tk/tg:.2f}   (target >= 0.7)")
        gw.terminate(); gw.wait(120)
        gw, port = start_gateway(d, pub, {"backend": "kubernetes", "kubernetes": {
            "connection": {"host": env["K8S_API"], "cacertFile": env["K8S_CA"],
                           "bearerTokenFile": env["K8S_TOKEN_FILE"]},
            "pod": {"metadata": {"namespace": ns}, "spec": spec, "pool": {"size": 2}}},
            "log": {"level": "info"}})
        wait_for_log(d, port, "warm pool full")
        ssh = ssh_cmd(key, port)
        warm_t, k_t = [], []
        for i in range(args.runs):
            warm_t.append(timed(ssh + ["true"]))
            t = time.perf_counter(); by_hand(f"p{i}"); k_t.append(time.perf_counter() - t)
        lw, lk = statistics.median(warm_t), statistics.median(k_t)
        print(f"k8s pool      ssh gw true, warm pool:   median {lw*1000:7.1f} ms  (min {min(warm_t)*1000:.1f})")
        print(f"k8s pool      kubectl create+wait+exec: median {lk*1000:7.1f} ms")
        print(f"k8s pool      ratio warm/kubectl = {lw/lk:.2f}   (target <= 0.2)")
    finally:
        subprocess.run(kubectl + ["delete", "pod", "-l", "!containerssh.managed", "--wait=false"],
                       capture_output=True)
        gw.terminate(); gw.wait(120)

if __name__ == "__main__":
    main()
