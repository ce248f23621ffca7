#!/usr/bin/env python3
"""Configs at scale (loadtest.py's `scale` scenario): 10,000 backends in 1,000 pools behind
100 listeners, active HTTP checks every 2 s, for sluice, HAProxy and nginx configured alike.

    python3 benches/loadtest.py --scenarios scale --rounds 3
    python3 benches/scale.py --sluice target/release/sluice --rounds 3   # the same, directly

Listener L (0..99) routes /pP/ to pool P for its ten pools P = 10L..10L+9 (HAProxy:
`use_backend` on `path_beg`; nginx: one `location` each). Backend B of pool P has its own
loopback address 127.0.X.Y (10,000 distinct addresses) on one port: two backend processes
bind 0.0.0.0 (port A answers 13 bytes, port B 7 bytes), so the checks have something real
to hit with two sockets. nginx's open-source build has no active checks: its config is the
same without them (its reload and memory figures are for less work).

Measured, one LB at a time (wall-clock milliseconds and memory: not sensitive to CPU noise
the way requests per second are, though a busy machine still stretches times):
- start: from exec until every listener answers an HTTP request;
- check: `sluice check -q`, `haproxy -c -q`, `nginx -t -q` on the file;
- memory per backend: (RSS with the big config - RSS with one backend) / 10,000, read after
  the checks have run a few rounds;
- check CPU: the LB's CPU time over 10 s of checks at a 2 s interval, in % of one core;
- reload, one backend: the file changes one backend of pool R to port B (round R changes
  pool R), then the reload signal (sluice SIGHUP, HAProxy master-worker SIGUSR2, nginx
  SIGHUP), then new connections to /pR/ until one is answered by port B;
- reload, all backends: every backend moves to the other port, polled on the last pool;
- sluice only, from its admin API (`POST /reload` answers when the reload is done): the
  reload itself with no change, one backend and all backends changed;
- reload every second under load: wrk (keep-alive, LOAD_CONNECTIONS connections) on four
  pools of the first listener for --load-seconds without reloads, then as long again while
  the file alternates between "backend 0 of pool 0 on port B" and "every backend on port A"
  and the reload signal goes out every second. Failed requests are wrk's errors (connect,
  read, write, timeout) plus answers with a status of 400 or more; p50/p99 of each phase and
  the ratio of the two p99s (goal: zero failed, p99 within 1.5x).
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

LISTENERS, POOLS, PER_POOL = 100, 1000, 10
BACKENDS = POOLS * PER_POOL
PORT_A, PORT_B = 18400, 18401
BODY_A, BODY_B = 13, 7
LB_PORTS = {"sluice": 19000, "haproxy": 19200, "nginx": 19400}  # LISTENERS ports each
ADMIN_PORT = 19999
CHECK_INTERVAL_S = 2
SETTLE_S = 5.0  # checks run two rounds before memory is read
CPU_WINDOW_S = 10.0
POLL_DEADLINE_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CONNECTIONS = 16
LOAD_PATHS = ["/p0/", "/p1/", "/p2/", "/p3/"]  # pools 0-3, all on the first listener

# wrk: the paths in turn, and one machine-readable line at the end (latencies in us).
WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    e.connect, e.read, e.write, e.timeout, e.status, latency:percentile(50),
    latency:percentile(99)))
end
""" % ", ".join(f'"{p}"' for p in LOAD_PATHS)


def address(pool, index):
    n = pool * PER_POOL + index
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


def ports_of(moved, everything_on):
    """The port of every backend: `everything_on`, except the (pool, index) in `moved`."""
    other = PORT_B if everything_on == PORT_A else PORT_A
    return lambda pool, index: other if (pool, index) in moved else everything_on


def sluice_config(port_of, pools=POOLS, listeners=LISTENERS, per_pool=PER_POOL):
    lines = ["watch: false", "runtime: { worker_threads: 1 }",
             f'admin: {{ bind: "127.0.0.1:{ADMIN_PORT}" }}', "listeners:"]
    per_listener = pools // listeners
    for lst in range(listeners):
        first = lst * per_listener
        lines.append(f"  l{lst}:")
        lines.append(f'    bind: "127.0.0.1:{LB_PORTS["sluice"] + lst}"')
        lines.append(f"    pool: p{first}")
        lines.append("    routes:")
        for pool in range(first, first + per_listener):
            lines.append(f"      - {{ match: {{ path_prefix: /p{pool} }}, pool: p{pool} }}")
    lines.append("pools:")
    for pool in range(pools):
        backends = ", ".join(f"{address(pool, i)}:{port_of(pool, i)}" for i in range(per_pool))
        lines.append(f"  p{pool}:")
        lines.append(f"    backends: [{backends}]")
        lines.append(f"    health_check: {{ path: /health, interval: {CHECK_INTERVAL_S}s }}")
    return "\n".join(lines) + "\n"


def haproxy_config(port_of, pools=POOLS, listeners=LISTENERS, per_pool=PER_POOL):
    lines = ["global", "    nbthread 1", "    maxconn 4000", "defaults", "    mode http",
             "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s",
             "    option http-keep-alive"]
    per_listener = pools // listeners
    for lst in range(listeners):
        first = lst * per_listener
        lines.append(f"frontend l{lst}")
        lines.append(f"    bind 127.0.0.1:{LB_PORTS['haproxy'] + lst}")
        for pool in range(first, first + per_listener):
            lines.append(f"    use_backend p{pool} if {{ path_beg /p{pool} }}")
        lines.append(f"    default_backend p{first}")
    for pool in range(pools):
        lines.append(f"backend p{pool}")
        lines.append("    balance roundrobin")
        lines.append("    http-reuse always")
        lines.append("    option httpchk GET /health")
        for i in range(per_pool):
            lines.append(f"    server b{i} {address(pool, i)}:{port_of(pool, i)} check "
                         f"inter {CHECK_INTERVAL_S}s")
    return "\n".join(lines) + "\n"


def nginx_config(port_of, tmp, pools=POOLS, listeners=LISTENERS, per_pool=PER_POOL):
    lines = ["worker_processes 1;", "worker_rlimit_nofile 40000;", f"pid {tmp}/nginx.pid;",
             f"error_log {tmp}/nginx.err warn;", "daemon off;",
             "events { worker_connections 20000; }", "http {", "    access_log off;"]
    for pool in range(pools):
        lines.append(f"    upstream p{pool} {{")
        for i in range(per_pool):
            lines.append(f"        server {address(pool, i)}:{port_of(pool, i)};")
        lines.append("        keepalive 16;")
        lines.append("    }")
    per_listener = pools // listeners
    for lst in range(listeners):
        first = lst * per_listener
        lines.append(f"    server {{ listen 127.0.0.1:{LB_PORTS['nginx'] + lst};")
        for pool in range(first, first + per_listener):
            lines.append(f"        location /p{pool} {{ proxy_pass http://p{pool}; "
                         "proxy_http_version 1.1; proxy_set_header Connection \"\"; }")
        lines.append(f"        location / {{ proxy_pass http://p{first}; }}")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_config(name, path, tmp, port_of, **small):
    text = {"sluice": lambda: sluice_config(port_of, **small),
            "haproxy": lambda: haproxy_config(port_of, **small),
            "nginx": lambda: nginx_config(port_of, tmp, **small)}[name]()
    with open(path, "w") as f:
        f.write(text)


def command(name, sluice_bin, path):
    return {"sluice": [sluice_bin, "-c", path],
            "haproxy": ["haproxy", "-W", "-db", "-f", path],
            "nginx": ["nginx", "-c", path]}[name]


def check_command(name, sluice_bin, path):
    return {"sluice": [sluice_bin, "check", "-q", "-c", path],
            "haproxy": ["haproxy", "-c", "-q", "-f", path],
            "nginx": ["nginx", "-t", "-q", "-c", path]}[name]


def reload_signal(name):
    return signal.SIGUSR2 if name == "haproxy" else signal.SIGHUP


def get(port, path, timeout=2.0):
    """One request on a new connection: (status, body length), or None when nothing answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        return None
    return int(head.split()[1]), len(body)


def wait_answer(port, path, body_len, deadline_s=POLL_DEADLINE_S):
    """Polls new connections until one is answered 200 with `body_len` bytes (None: any
    answer). Returns the seconds it took, or None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        got = get(port, path)
        if got is not None and (body_len is None or got == (200, body_len)):
            return time.monotonic() - start
        time.sleep(0.001)
    return None


def children_pids(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def tree_rss_kib(pid):
    total = 0
    for p in children_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def tree_ticks(pid):
    total = 0
    for p in children_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start(name, sluice_bin, path, tmp, listeners):
    """Starts the LB; returns (process, seconds until every listener answered)."""
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    env = dict(os.environ, SLUICE_LOG="warn")
    begin = time.monotonic()
    proc = subprocess.Popen(command(name, sluice_bin, path), stdout=subprocess.DEVNULL,
                            stderr=log, env=env)
    for lst in range(listeners):
        if wait_answer(LB_PORTS[name] + lst, "/", None) is None or proc.poll() is not None:
            stop(proc)
            raise RuntimeError(f"{name} did not answer on listener {lst}: see {log.name}")
    return proc, time.monotonic() - begin


def admin_reload():
    """sluice's POST /reload: answers once the reload is done. Seconds it took."""
    begin = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{ADMIN_PORT}/reload", method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()
    return time.monotonic() - begin


def measure(name, sluice_bin, rounds, tmp, load_seconds):
    path = os.path.join(tmp, f"{name}-scale.conf")
    row = {}
    # Baseline: the same LB with one listener, one pool, one backend.
    small = dict(pools=1, listeners=1, per_pool=1)
    write_config(name, path, tmp, ports_of(set(), PORT_A), **small)
    proc, _ = start(name, sluice_bin, path, tmp, 1)
    time.sleep(SETTLE_S)
    base_rss = tree_rss_kib(proc.pid)
    stop(proc)

    write_config(name, path, tmp, ports_of(set(), PORT_A))
    checks = []
    for _ in range(rounds):
        begin = time.monotonic()
        subprocess.run(check_command(name, sluice_bin, path), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checks.append(time.monotonic() - begin)
    row["check_ms"] = statistics.median(checks) * 1e3

    proc, started = start(name, sluice_bin, path, tmp, LISTENERS)
    try:
        row["start_ms"] = started * 1e3
        time.sleep(SETTLE_S)
        row["rss_mib"] = tree_rss_kib(proc.pid) / 1024
        row["kib_per_backend"] = (tree_rss_kib(proc.pid) - base_rss) / BACKENDS
        ticks = tree_ticks(proc.pid)
        time.sleep(CPU_WINDOW_S)
        row["check_cpu_pct"] = (tree_ticks(proc.pid) - ticks) / CLK_TCK / CPU_WINDOW_S * 100

        moved = set()
        one = []
        for r in range(rounds):
            moved.add((r, 0))
            write_config(name, path, tmp, ports_of(moved, PORT_A))
            pool = r
            begin = time.monotonic()
            proc.send_signal(reload_signal(name))
            took = wait_answer(LB_PORTS[name] + pool // (POOLS // LISTENERS), f"/p{pool}/", BODY_B)
            one.append(None if took is None else time.monotonic() - begin)
        row["reload_one_ms"] = [t * 1e3 if t is not None else float("nan") for t in one]

        full = []
        last = POOLS - 1
        for r in range(rounds):
            on = PORT_B if r % 2 == 0 else PORT_A
            write_config(name, path, tmp, ports_of(set(), on))
            begin = time.monotonic()
            proc.send_signal(reload_signal(name))
            took = wait_answer(LB_PORTS[name] + LISTENERS - 1, f"/p{last}/",
                               BODY_B if on == PORT_B else BODY_A)
            full.append(time.monotonic() - begin if took is not None else float("nan"))
            # HAProxy and nginx hand over to new processes: let the old ones finish before
            # the next round, so that rounds do not pile up processes.
            time.sleep(2 if name != "sluice" else 0.2)
        row["reload_all_ms"] = [t * 1e3 for t in full]
        row["rss_after_mib"] = tree_rss_kib(proc.pid) / 1024

        if name == "sluice":
            internal = {"none": [], "one": [], "all": []}
            moved = set()
            on = PORT_A if rounds % 2 == 0 else PORT_B  # where the last full reload left it
            for r in range(rounds):
                internal["none"].append(admin_reload())
                moved.add((r, 1))
                write_config(name, path, tmp, ports_of(moved, on))
                internal["one"].append(admin_reload())
                on = PORT_B if on == PORT_A else PORT_A
                moved = set()
                write_config(name, path, tmp, ports_of(moved, on))
                internal["all"].append(admin_reload())
            row["admin"] = {k: [t * 1e3 for t in v] for k, v in internal.items()}
        if load_seconds > 0:
            row["load"] = under_load(name, sluice_bin, proc, path, tmp, load_seconds)
    finally:
        stop(proc)
    return row


def write_atomically(path, text):
    """The whole new file or the old one, never half of it, whenever the LB reads it."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def wrk(port, seconds, tmp):
    """Starts wrk on the load paths of the listener at `port`; `wrk_result` reads it."""
    script = os.path.join(tmp, "paths.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    return subprocess.Popen(["wrk", "-t1", f"-c{LOAD_CONNECTIONS}", f"-d{seconds}s", "-s", script,
                             f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wrk_result(proc):
    out, _ = proc.communicate()
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out}")
    requests, connect, read, write, timeout, status, p50, p99 = map(int, line.split()[1:])
    return {"requests": requests, "failed": connect + read + write + timeout + status,
            "errors": {"connect": connect, "read": read, "write": write, "timeout": timeout,
                       "status": status},
            "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3}


def under_load(name, sluice_bin, proc, path, tmp, seconds):
    """wrk without reloads, then wrk with a reload every second (one backend of a loaded
    pool moved and back): the two phases' results."""
    texts = []
    for moved in (set(), {(0, 0)}):
        write_config(name, path, tmp, ports_of(moved, PORT_A))
        with open(path) as f:
            texts.append(f.read())
    write_atomically(path, texts[0])
    proc.send_signal(reload_signal(name))
    time.sleep(3 if name != "sluice" else 1)  # the old processes of HAProxy/nginx finish
    port = LB_PORTS[name]
    quiet = wrk_result(wrk(port, seconds, tmp))
    load = wrk(port, seconds, tmp)
    reloads = 0
    begin = time.monotonic()
    while load.poll() is None and time.monotonic() - begin < seconds - 0.5:
        time.sleep(max(0.0, begin + reloads + 1 - time.monotonic()))
        reloads += 1
        write_atomically(path, texts[reloads % 2])
        proc.send_signal(reload_signal(name))
    busy = wrk_result(load)
    busy["reloads"] = reloads
    return {"quiet": quiet, "reloading": busy}


def fmt(values):
    return ", ".join(f"{v:.0f}" for v in values)


def report(rows, rounds, load_seconds):
    print(f"\n## scale ({BACKENDS:,} backends in {POOLS:,} pools behind {LISTENERS} listeners, "
          f"HTTP checks every {CHECK_INTERVAL_S} s; nginx: no active checks)")
    print("| target | start ms | check ms | RSS MiB | KiB per backend | check CPU % of a core "
          "| reload one backend, ms each round | reload all backends, ms each round |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['start_ms']:.0f} | {row['check_ms']:.0f} | {row['rss_mib']:.1f} "
              f"| {row['kib_per_backend']:.2f} | {row['check_cpu_pct']:.1f} "
              f"| {fmt(row['reload_one_ms'])} | {fmt(row['reload_all_ms'])} |")
    if "sluice" in rows and "admin" in rows["sluice"]:
        admin = rows["sluice"]["admin"]
        print(f"sluice POST /reload (the reload itself), ms each round: no change "
              f"{fmt(admin['none'])}; one backend {fmt(admin['one'])}; all backends "
              f"{fmt(admin['all'])}")
    loaded = {name: row["load"] for name, row in rows.items() if "load" in row}
    if loaded:
        print(f"\n## scale: a reload every second under load (wrk, {LOAD_CONNECTIONS} keep-alive "
              f"connections on {len(LOAD_PATHS)} pools; one backend of a loaded pool moved "
              f"and back)")
        print("| target | req/s quiet | p50 / p99 ms quiet | reloads | req/s reloading "
              "| p50 / p99 ms reloading | p99 ratio | failed (connect/read/write/timeout/status) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, load in loaded.items():
            quiet, busy = load["quiet"], load["reloading"]
            seconds = load_seconds
            e = busy["errors"]
            print(f"| {name} | {quiet['requests'] / seconds:.0f} "
                  f"| {quiet['p50_ms']:.2f} / {quiet['p99_ms']:.2f} | {busy['reloads']} "
                  f"| {busy['requests'] / seconds:.0f} "
                  f"| {busy['p50_ms']:.2f} / {busy['p99_ms']:.2f} "
                  f"| {busy['p99_ms'] / max(quiet['p99_ms'], 1e-3):.2f}x "
                  f"| {busy['failed']} ({e['connect']}/{e['read']}/{e['write']}/{e['timeout']}/"
                  f"{e['status']}); quiet: {quiet['failed']} |")


def run(sluice_bin, rounds, targets, load_seconds=10):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    backends = [subprocess.Popen([sluice_bin, "backends", "--count", "1", "--first-port",
                                  str(port), "--body-size", str(size), "--ip", "0.0.0.0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for port, size in ((PORT_A, BODY_A), (PORT_B, BODY_B))]
    rows = {}
    try:
        for port in (PORT_A, PORT_B):
            if wait_answer(port, "/", None, 10) is None:
                raise RuntimeError(f"backend on port {port} did not start")
        with tempfile.TemporaryDirectory() as tmp:
            for name in targets:
                try:
                    rows[name] = measure(name, sluice_bin, rounds, tmp, load_seconds)
                except (RuntimeError, subprocess.CalledProcessError) as error:
                    print(f"{name}: {error}", file=sys.stderr)
                    continue
                print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    finally:
        for proc in backends:
            stop(proc)
    report(rows, rounds, load_seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sluice", required=True, help="the sluice binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="sluice,haproxy,nginx")
    parser.add_argument("--load-seconds", type=int, default=10,
                        help="each phase of the reload-under-load test (0: skip it)")
    opts = parser.parse_args()
    run(opts.sluice, opts.rounds, opts.targets.split(","), opts.load_seconds)


if __name__ == "__main__":
    sys.exit(main())
