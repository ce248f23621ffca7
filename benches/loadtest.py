#!/usr/bin/env python3
"""End-to-end load test: sluice vs HAProxy vs nginx on the same machine, in the same run.

A benchmark, not a test: it prints a table and exits 0. Everything runs on loopback.

    python3 benches/loadtest.py                  # all scenarios, 3 rounds, 5 s per run
    python3 benches/loadtest.py --rounds 5 --duration 10 --threads 1 --scenarios keepalive,tcp
    python3 benches/loadtest.py --threads 2 --variants sluice-ws,sluice-sh   # the thread models

The three do the same work per request: round robin over the backends with upstream
keep-alive, X-Forwarded-For/-Proto/-Host to the backend, and an X-Request-Id to the backend
and the client (sluice's defaults; HAProxy's unique-id, nginx's $request_id).

Each round runs wrk against every load balancer in turn (interleaved, so drift in the
machine's speed hits all of them alike), plus a "direct" row straight to one backend. For each
run it records requests/s, p50/p99 latency, errors, the LB's CPU time per request (from
/proc/PID/stat over the window: steadier than req/s on a small shared machine) and peak RSS.
Ratios sluice/peer are taken per round, then the median across rounds.

Needs wrk, nginx (with the stream module for TCP) and haproxy: on Debian, run as root and it
installs them (`apt-get install wrk nginx-light libnginx-mod-stream haproxy`).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_BASE_PORT = 18100  # below the ephemeral range (32768+), which outgoing connections use
PORTS = {"sluice": 18001, "haproxy": 18002, "nginx": 18003, "sluice-ws": 18004, "sluice-sh": 18005}
TCP_PORTS = {"sluice": 18011, "haproxy": 18012, "nginx": 18013, "sluice-ws": 18014,
             "sluice-sh": 18015}
# Further sluice rows (--variants): runtime.scheduler and runtime.accept of each.
VARIANTS = {"sluice-ws": ("work_stealing", "shared"), "sluice-sh": ("per_thread", "shared")}
CLK_TCK = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    # name: (body size, wrk extra args, tcp mode)
    "keepalive": (13, [], False),
    "close": (13, ["-H", "Connection: close"], False),
    "64k": (65536, [], False),
    "tcp": (13, [], True),
    # Bulk through L4: what splice(2) or a userspace copy costs per byte.
    "tcp64k": (65536, [], True),
    # Not a wrk run: IDLE_CONNECTIONS keep-alive connections held open, memory per connection.
    "idle": (13, None, False),
}
IDLE_CONNECTIONS = 10_000  # fewer when the fd limit can't hold them (see idle_connections)
# How long the idle connections sit before memory is read: sluice parks a connection idle for
# 0.1-0.2 s (src/proxy/client_conn.rs) and hands free heap pages back every 5 s
# (src/memory.rs), so a reading after 6 s is what a settled idle process holds.
IDLE_SETTLE_S = 6.0


def ensure_tools():
    missing = [t for t in ("wrk", "nginx", "haproxy") if shutil.which(t) is None]
    stream_module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    if missing or not os.path.exists(stream_module):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit(f"missing {missing or 'nginx stream module'}: install wrk, nginx, haproxy")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
             "wrk", "nginx-light", "libnginx-mod-stream", "haproxy"],
            check=True, env=env)


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def children_pids(pid):
    """nginx and haproxy may work in child processes: count the whole tree."""
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for child in out.split():
            pids.extend(children_pids(int(child)))
    except OSError:
        pass
    return pids


def tree_ticks(pid):
    return sum(cpu_ticks(p) for p in children_pids(pid))


def tree_rss_kib(pid, field="VmRSS:"):
    total = 0
    for p in children_pids(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith(field):
                    total += int(line.split()[1])
    return total


def tree_peak_rss_kib(pid):
    return tree_rss_kib(pid, "VmHWM:")


def raise_fd_limit():
    """10,000 client sockets here, and as many in each LB (children inherit the limit)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def idle_connections(fd_limit):
    """HAProxy wants about two fds per maxconn at start, so the hard limit caps the count."""
    return min(IDLE_CONNECTIONS, fd_limit // 2 - 400)


def idle_cost(port, pid, count):
    """KiB of LB memory per idle keep-alive connection: open `count` connections one after
    another, each making one request (so the LB has parsed a request and answered, as a real
    idle keep-alive connection has), wait until the LB settles, and divide the RSS growth."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    before = tree_rss_kib(pid)
    socks = []
    answered = 0
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            answered += data.startswith(b"HTTP/1.1 200")
        time.sleep(IDLE_SETTLE_S)  # let idle-time memory release happen; not a synchronization
        after = tree_rss_kib(pid)
    finally:
        for s in socks:
            s.close()
    return {"kib_per_conn": (after - before) / count, "answered": answered, "rss_mib": after / 1024}


def configs(tmp, backends, threads, fd_limit, variants):
    upstreams = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    nginx = f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {threads};
worker_rlimit_nofile {fd_limit};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
daemon off;
events {{ worker_connections {fd_limit}; }}
http {{
    access_log off;
    upstream app {{
{upstreams}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id;
        }}
    }}
}}
stream {{
    upstream db {{
{upstreams}
    }}
    server {{ listen 127.0.0.1:{TCP_PORTS['nginx']}; proxy_pass db; }}
}}
"""
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    haproxy = f"""
global
    nbthread {threads}
    maxconn {idle_connections(fd_limit) + 200}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend web
    option forwardfor
    bind 127.0.0.1:{PORTS['haproxy']}
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-response set-header X-Request-Id %[unique-id]
    default_backend app
backend app
    balance roundrobin
    http-reuse always
{servers}
frontend db
    mode tcp
    bind 127.0.0.1:{TCP_PORTS['haproxy']}
    default_backend db
backend db
    mode tcp
    balance roundrobin
{servers}
"""
    backend_list = ", ".join(f"127.0.0.1:{p}" for p in backends)

    def sluice(name, scheduler, accept):
        return f"""
watch: false
runtime: {{ worker_threads: {threads}, scheduler: {scheduler}, accept: {accept} }}
listeners:
  web: {{ bind: "127.0.0.1:{PORTS[name]}", pool: app }}
  db: {{ bind: "127.0.0.1:{TCP_PORTS[name]}", protocol: tcp, pool: app }}
pools:
  app:
    backends: [{backend_list}]
"""
    texts = [("nginx", nginx), ("haproxy", haproxy),
             ("sluice", sluice("sluice", "per_thread", "reuseport"))]
    texts += [(name, sluice(name, *VARIANTS[name])) for name in variants]
    paths = {}
    for name, text in texts:
        path = os.path.join(tmp, f"{name}.conf")
        with open(path, "w") as f:
            f.write(text)
        paths[name] = path
    return paths


def start_lbs(tmp, sluice_bin, paths):
    devnull = subprocess.DEVNULL
    procs = {
        "sluice": subprocess.Popen([sluice_bin, "-c", paths["sluice"]], stdout=devnull,
                                   stderr=open(os.path.join(tmp, "sluice.log"), "w"),
                                   env=dict(os.environ, SLUICE_LOG="warn")),
        "haproxy": subprocess.Popen(["haproxy", "-db", "-f", paths["haproxy"]], stdout=devnull,
                                    stderr=open(os.path.join(tmp, "haproxy.log"), "w")),
        "nginx": subprocess.Popen(["nginx", "-c", paths["nginx"], "-e", os.path.join(tmp, "nginx.err")],
                                  stdout=devnull, stderr=devnull),
    }
    for name in [n for n in VARIANTS if n in paths]:
        procs[name] = subprocess.Popen(
            [sluice_bin, "-c", paths[name]], stdout=devnull,
            stderr=open(os.path.join(tmp, f"{name}.log"), "w"), env=dict(os.environ, SLUICE_LOG="warn"))
    try:
        for name, proc in procs.items():
            wait_port(PORTS[name])
            wait_port(TCP_PORTS[name])
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited (port taken by a leftover process?)")
    except Exception:
        stop_all(procs.values())
        raise
    return procs


def stop_all(procs):
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def parse_wrk(out):
    def latency(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"rps": rps, "total": total, "p50": latency("50"), "p99": latency("99"), "errors": errors}


def run_wrk(port, args, duration, connections, pid=None, wrk_threads=1):
    before = tree_ticks(pid) if pid else 0
    cmd = ["wrk", f"-t{wrk_threads}", f"-c{connections}", f"-d{duration}s", "--latency", *args,
           f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out)
    if pid:
        ticks = tree_ticks(pid) - before
        result["cpu_us"] = ticks * 1e6 / CLK_TCK / max(result["total"], 1)
        result["rss_mib"] = tree_peak_rss_kib(pid) / 1024
    else:
        result["cpu_us"] = float("nan")
        result["rss_mib"] = float("nan")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="LB worker threads/processes")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads (-t)")
    parser.add_argument("--variants", default="",
                        help="more sluice rows, comma-separated: sluice-ws (runtime.scheduler: "
                             "work_stealing), sluice-sh (runtime.accept: shared); the row "
                             "named sluice has the defaults (per_thread, reuseport)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--soak", type=int, default=0,
                        help="after keepalive, load sluice this many seconds and sample its RSS")
    opts = parser.parse_args()

    variants = [v for v in opts.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown --variants {unknown}: choose from {list(VARIANTS)}")
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sluice_bin = os.path.join(ROOT, "target", "release", "sluice")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; LB threads: {opts.threads}; "
          f"wrk -t{opts.wrk_threads} -c{opts.connections} -d{opts.duration}s; {opts.rounds} rounds")

    fd_limit = raise_fd_limit()
    for scenario in opts.scenarios.split(","):
        body_size, wrk_args, tcp = SCENARIOS[scenario]
        with tempfile.TemporaryDirectory() as tmp:
            backends = [BACKEND_BASE_PORT + i for i in range(4)]
            backend_proc = subprocess.Popen(
                [sluice_bin, "backends", "--count", "4", "--first-port", str(BACKEND_BASE_PORT),
                 "--body-size", str(body_size)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs = {}
            try:
                for p in backends:
                    wait_port(p)
                procs = start_lbs(tmp, sluice_bin, configs(tmp, backends, opts.threads, fd_limit,
                                                            variants))
                if wrk_args is None:
                    report_idle({name: [idle_cost(PORTS[name], procs[name].pid,
                                                  idle_connections(fd_limit))
                                        for _ in range(opts.rounds)] for name in procs},
                                idle_connections(fd_limit))
                    continue
                ports = TCP_PORTS if tcp else PORTS
                rows = {name: [] for name in ("direct", *procs)}
                for _ in range(opts.rounds):
                    rows["direct"].append(run_wrk(backends[0], wrk_args, opts.duration,
                                                  opts.connections, wrk_threads=opts.wrk_threads))
                    for name in procs:
                        rows[name].append(run_wrk(ports[name], wrk_args, opts.duration,
                                                  opts.connections, procs[name].pid,
                                                  opts.wrk_threads))
                report(scenario, rows)
                if opts.soak and scenario == "keepalive":
                    soak(PORTS["sluice"], procs["sluice"].pid, opts.soak, opts.connections)
            finally:
                stop_all(list(procs.values()) + [backend_proc])
    return 0


def soak(port, pid, seconds, connections):
    """RSS of sluice sampled every 5 s under keep-alive load: it should stay flat."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    wrk = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    while wrk.poll() is None:
        samples.append(tree_rss_kib(pid) / 1024)
        time.sleep(5)
    print(f"\nsoak {seconds}s: sluice RSS MiB every 5 s: " + ", ".join(f"{m:.1f}" for m in samples))


def report_idle(rows, count):
    print(f"\n## idle ({count:,} keep-alive connections held open)")
    print("| target | KiB per idle connection, each round | answered | RSS MiB with them open, "
          "each round |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        kib = ", ".join(f"{r['kib_per_conn']:.2f}" for r in runs)
        rss = ", ".join(f"{r['rss_mib']:.1f}" for r in runs)
        answered = min(r["answered"] for r in runs)
        print(f"| {name} | {kib} | {answered:,} | {rss} |")
    # HAProxy and nginx size their connection tables at start (their growth per connection
    # reads ~0), so the fair comparison is the whole process with the connections open.
    for peer in [name for name in (*VARIANTS, "haproxy", "nginx") if name in rows]:
        ratio = median([s["rss_mib"] / p["rss_mib"] for s, p in zip(rows["sluice"], rows[peer])])
        print(f"sluice/{peer}: RSS with the idle connections open x{ratio:.2f}")


def median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def report(scenario, rows):
    print(f"\n## {scenario}")
    print("| target | req/s (median) | p50 ms | p99 ms | errors | LB CPU us/req | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        print(f"| {name} | {median([r['rps'] for r in runs]):,.0f} | {median([r['p50'] for r in runs]):.2f} "
              f"| {median([r['p99'] for r in runs]):.2f} | {sum(r['errors'] for r in runs)} "
              f"| {median([r['cpu_us'] for r in runs]):.1f} | {median([r['rss_mib'] for r in runs]):.1f} |")
    for peer in [name for name in (*VARIANTS, "haproxy", "nginx") if name in rows]:
        rps = median([s["rps"] / p["rps"] for s, p in zip(rows["sluice"], rows[peer])])
        cpu = median([s["cpu_us"] / p["cpu_us"] for s, p in zip(rows["sluice"], rows[peer]) if p["cpu_us"]])
        p99 = median([s["p99"] / p["p99"] for s, p in zip(rows["sluice"], rows[peer]) if p["p99"]])
        print(f"sluice/{peer}: req/s x{rps:.2f}, CPU per request x{cpu:.2f}, p99 x{p99:.2f}")


if __name__ == "__main__":
    sys.exit(main())
