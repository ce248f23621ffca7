#!/usr/bin/env python3
"""End-to-end load test: sluice vs HAProxy vs nginx on the same machine, in the same run.

A benchmark, not a test: it prints a table and exits 0. Everything runs on loopback.

    python3 benches/loadtest.py                  # all scenarios, 3 rounds, 5 s per run
    python3 benches/loadtest.py --rounds 5 --duration 10 --threads 1 --scenarios keepalive,tcp
    python3 benches/loadtest.py --threads 2 --variants sluice-ws,sluice-sh   # the thread models
    python3 benches/loadtest.py --rounds 1 --duration 5 --scenarios edge  # edge checks vs none
    python3 benches/loadtest.py --rounds 5 --scenarios tls-new,tls       # TLS vs OpenSSL
    python3 benches/loadtest.py --rounds 3 --scenarios scale   # 10,000 backends (benches/scale.py)
    python3 benches/loadtest.py --rounds 5 --scenarios h2,h2c  # HTTP/2 by h2load (benches/h2bench.py)

The three do the same work per request: round robin over the backends with upstream
keep-alive, X-Forwarded-For/-Proto/-Host to the backend, and an X-Request-Id to the backend
and the client (sluice's defaults; HAProxy's unique-id, nginx's $request_id).

Each round runs wrk against every load balancer in turn (interleaved, so drift in the
machine's speed hits all of them alike), plus a "direct" row straight to one backend. For each
run it records requests/s, p50/p99 latency, errors, the LB's CPU time per request (from
/proc/PID/stat over the window: steadier than req/s on a small shared machine) and peak RSS.
Ratios sluice/peer are taken per round, then the median across rounds.

Two scenarios are failures rather than throughput (`--scenarios failover,hang`): four
backend processes, wrk with 64 connections for 10 s (one thread per connection, so a Lua
script times each request), and at 3 s one backend is SIGKILLed (failover; restarted on its
port at 6 s) or SIGSTOPped (hang: the kernel still accepts, nothing answers; SIGCONT at 6 s).
Every load balancer runs with active HTTP checks every 500 ms (nginx, which has none in its
open-source version, with passive `max_fails`), otherwise as configured out of the box; a
fresh LB and fresh backends for every run, LBs interleaved within each round. Reported per
run: client errors (wrk's socket errors and non-2xx answers, with a 30 s client timeout),
connections that waited more than 2 s for an answer at least once, the p99 latency of the
requests sent from the fault until 1 s after the restore, and the requests the restored
backend served after it came back (each backend counts what it serves; see `sluice
backends`). `--duration` and `--connections` do not apply to them.

Two scenarios terminate TLS (`--scenarios tls-new,tls`), configured alike on the three: one
ECDSA P-256 certificate made here with openssl, TLS 1.3 only, no session cache and no tickets
(every handshake is a full one), HTTP/1.1 to the client (wrk offers no ALPN) and
X-Forwarded-Proto: https to the backends. `tls-new` sends `Connection: close`, so every
request is a new TCP connection and a full handshake (handshake cost); `tls` keeps the
connections open (record encryption cost). `--sluice-features aws-lc-rs` builds sluice with
the aws-lc-rs provider instead of ring, to compare the two in the same setting.

`--scenarios compression` compares response compression on a 64 KiB JSON answer (four
backends answering the same JSON): sluice with gzip level 1 and 6, brotli 4 and zstd 3, and
nginx with gzip 1 and 6, each client asking for that one coding. Reported per row: req/s,
the LB's CPU time per request, and the bytes of one compressed answer on the wire; ratios
are sluice/nginx at the same gzip level, per round, then the median.

`--scenarios idle,idle-tls`: memory per idle keep-alive connection, plain and over TLS 1.3
(each connection makes one request first, opened by an asyncio client 64 at a time; RSS
growth once all are open and answered, after 6 s). The same client for all three.
`--scenarios scale`: 10,000 backends in 1,000 pools with active checks (benches/scale.py).

Needs wrk, nginx (with the stream module for TCP) and haproxy: on Debian, run as root and it
installs them (`apt-get install wrk nginx-light libnginx-mod-stream haproxy nghttp2-client`).
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
PORTS = {"sluice": 18001, "haproxy": 18002, "nginx": 18003, "sluice-ws": 18004, "sluice-sh": 18005,
         "sluice-edge": 18006}
TCP_PORTS = {"sluice": 18011, "haproxy": 18012, "nginx": 18013, "sluice-ws": 18014,
             "sluice-sh": 18015, "sluice-edge": 18016}
# Further sluice rows (--variants): runtime.scheduler and runtime.accept of each.
VARIANTS = {"sluice-ws": ("work_stealing", "shared"), "sluice-sh": ("per_thread", "shared"),
            "sluice-edge": ("per_thread", "reuseport")}
# The `edge` scenario's extra row: sluice with defaults plus an access rule and a rate limit
# that never trigger (every wrk request is one client, 127.0.0.1, at far below 1M/s), so that
# sluice-edge/sluice is what the checks cost per request (issue 22: CPU within 3%).
EDGE_RULES = """
    access: [ { deny: 192.0.2.0/24 } ]
    rate_limit: { rate: 1000000/s, burst: 1000000 }"""
CLK_TCK = os.sysconf("SC_CLK_TCK")

TLS_PORTS = {"sluice": 18031, "haproxy": 18032, "nginx": 18033, "sluice-ws": 18034,
             "sluice-sh": 18035, "sluice-edge": 18036}

SCENARIOS = {
    # name: (body size, wrk extra args, mode: False http, True tcp, "tls" https)
    "keepalive": (13, [], False),
    "close": (13, ["-H", "Connection: close"], False),
    "64k": (65536, [], False),
    "tcp": (13, [], True),
    # Bulk through L4: what splice(2) or a userspace copy costs per byte.
    "tcp64k": (65536, [], True),
    # A full TLS 1.3 handshake (ECDSA P-256) per request, then keep-alive over TLS.
    "tls-new": (13, ["-H", "Connection: close"], "tls"),
    "tls": (13, [], "tls"),
    # Not a wrk run: IDLE_CONNECTIONS keep-alive connections held open, memory per connection;
    # idle-tls: the same over TLS 1.3 (each connection made with a full handshake first).
    "idle": (13, None, False),
    "idle-tls": (13, None, "tls"),
    # keepalive with a sluice-edge row beside sluice (EDGE_RULES): the cost of edge checks.
    "edge": (13, [], False),
}
# Response compression rows: (name, LB, port, Accept-Encoding, sluice level config or nginx level).
COMPRESSION_ROWS = [
    ("sluice gzip 1", "sluice", 18041, "gzip", "levels: { gzip: 1 }, algorithms: [gzip]"),
    ("nginx gzip 1", "nginx", 18042, "gzip", 1),
    ("sluice gzip 6", "sluice", 18043, "gzip", "levels: { gzip: 6 }, algorithms: [gzip]"),
    ("nginx gzip 6", "nginx", 18044, "gzip", 6),
    ("sluice br 4", "sluice", 18045, "br", "levels: { br: 4 }, algorithms: [br]"),
    ("sluice zstd 3", "sluice", 18046, "zstd", "levels: { zstd: 3 }, algorithms: [zstd]"),
    ("sluice plain", "sluice", 18047, "gzip", None),
]
COMPRESSION_BODY = 65536
# Failure scenarios: what happens to one of the four backends at FAULT_S, undone at RESTORE_S.
EVENTS = {"failover": "kill", "hang": "stop"}
EVENT_PORT = 18020
EVENT_BACKEND_PORT = 18300
EVENT_CONNECTIONS = 64
EVENT_DURATION_S = 10
FAULT_S, RESTORE_S = 3.0, 6.0
STALL_S = 2.0
BACK_REQUESTS = 200
CHECK_INTERVAL_MS = 500
IDLE_CONNECTIONS = 10_000  # fewer when the fd limit can't hold them (see idle_connections)
# How long the idle connections sit before memory is read: sluice parks a connection idle for
# 0.1-0.2 s (src/proxy/client_conn.rs) and hands free heap pages back every 5 s
# (src/memory.rs), so a reading after 6 s is what a settled idle process holds.
IDLE_SETTLE_S = 6.0
# Connections being opened at once by the idle scenarios' client (see hold_idle).
IDLE_OPENING = 64


def ensure_tools(stream=True):
    """`stream`: nginx's stream module is needed too (the throughput scenarios load it)."""
    missing = [t for t in ("wrk", "nginx", "haproxy", "openssl", "h2load") if shutil.which(t) is None]
    stream_module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    if missing or (stream and not os.path.exists(stream_module)):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit(f"missing {missing or 'nginx stream module'}: install wrk, nginx, haproxy")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
             "wrk", "nginx-light", "libnginx-mod-stream", "haproxy", "openssl",
             "nghttp2-client"],
            check=True, env=env)


def target_dir():
    """Where cargo builds: CARGO_TARGET_DIR when set (one per worktree), else ./target."""
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


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


def idle_cost(port, pid, count, tls=False):
    """KiB of LB memory per idle keep-alive connection: open `count` connections, each making
    one request (so the LB has done the handshake, parsed a request and answered, as a real
    idle keep-alive connection has), wait until the LB settles, and divide the RSS growth.
    `tls`: each connection is TLS 1.3, HTTP/1.1 (no ALPN offered, as wrk), no resumption.
    The same client, concurrency and request for sluice, HAProxy and nginx."""
    import asyncio
    context = None
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return asyncio.run(hold_idle(port, pid, count, context))


async def hold_idle(port, pid, count, context):
    """asyncio with at most IDLE_OPENING connections being opened at once: one connection
    after another waited on every round trip (and on delayed ACKs), so 10,000 TLS connections
    took many minutes; a bounded number in flight keeps each LB busy without flooding its
    accept queue, and every connection is fully open (answered) before memory is read."""
    import asyncio
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    gate = asyncio.Semaphore(IDLE_OPENING)
    held = []

    async def one():
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=context,
                    server_hostname="localhost" if context else None), 15)
                held.append(writer)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                return head.startswith(b"HTTP/1.1 200")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError):
                return False

    before = tree_rss_kib(pid)
    started = time.monotonic()
    try:
        answered = sum(await asyncio.gather(*(one() for _ in range(count))))
        open_s = time.monotonic() - started
        await asyncio.sleep(IDLE_SETTLE_S)  # idle-time memory release; not a synchronization
        after = tree_rss_kib(pid)
    finally:
        for writer in held:
            writer.transport.abort()
    return {"kib_per_conn": (after - before) / count, "answered": answered,
            "rss_mib": after / 1024, "open_s": open_s}


def make_certificate(tmp):
    """One ECDSA P-256 certificate for the three (and a combined PEM for HAProxy)."""
    cert, key = os.path.join(tmp, "tls.pem"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    combined = os.path.join(tmp, "tls-combined.pem")
    with open(combined, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, combined


def configs(tmp, backends, threads, fd_limit, variants):
    cert, key, combined = make_certificate(tmp)
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
    server {{
        listen 127.0.0.1:{TLS_PORTS['nginx']} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
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
    tune.ssl.cachesize 0
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
frontend tls
    option forwardfor
    bind 127.0.0.1:{TLS_PORTS['haproxy']} ssl crt {combined} ssl-min-ver TLSv1.3 no-tls-tickets
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto https
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
        edge = EDGE_RULES if name == "sluice-edge" else ""
        return f"""
watch: false
runtime: {{ worker_threads: {threads}, scheduler: {scheduler}, accept: {accept} }}
listeners:
  web:
    bind: "127.0.0.1:{PORTS[name]}"
    pool: app{edge}
  db: {{ bind: "127.0.0.1:{TCP_PORTS[name]}", protocol: tcp, pool: app }}
  tls:
    bind: "127.0.0.1:{TLS_PORTS[name]}"
    pool: app
    tls:
      certificates: [{{ cert: "{cert}", key: "{key}" }}]
      min_version: "1.3"
      session_cache: 0
      session_tickets: false
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
            wait_port(TLS_PORTS[name])
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


def run_wrk(port, args, duration, connections, pid=None, wrk_threads=1, scheme="http"):
    before = tree_ticks(pid) if pid else 0
    cmd = ["wrk", f"-t{wrk_threads}", f"-c{connections}", f"-d{duration}s", "--latency", *args,
           f"{scheme}://127.0.0.1:{port}/"]
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


# wrk runs one connection per thread, each thread with its own Lua state, so request() and
# response() pair up and time each request (CLOCK_MONOTONIC, the clock of Python's
# time.monotonic(), so the event window is the one the script acts on). done() runs in the
# main state and gathers the threads' numbers.
EVENT_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } sluice_timespec;
int clock_gettime(int clock, sluice_timespec *out);
]]
local clock = ffi.new("sluice_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end
local t0 = tonumber(os.getenv("EVENT_T0_US"))
local from_us = tonumber(os.getenv("EVENT_FROM_S")) * 1000000
local to_us = tonumber(os.getenv("EVENT_TO_S")) * 1000000
local stall_us = tonumber(os.getenv("STALL_S")) * 1000000
local threads = {}
local prepared
started, pending, stalled, stalled_requests, non2xx, max_us = 0, 0, 0, 0, 0, 0
event = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  prepared = wrk.format()
end

function request()
  started = now_us()
  pending = 1
  return prepared
end

function response(status, headers, body)
  local latency = now_us() - started
  pending = 0
  if status < 200 or status > 399 then non2xx = non2xx + 1 end
  if latency > stall_us then
    stalled = 1
    stalled_requests = stalled_requests + 1
  end
  if latency > max_us then max_us = latency end
  local at = started - t0
  if at >= from_us and at < to_us then event[#event + 1] = latency end
end

function done(summary, latency, requests)
  local finished = now_us()
  local all, conns, stalled_n, non2xx_n, max_n = {}, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    local still_waiting = thread:get("pending") == 1
      and finished - thread:get("started") > stall_us
    if thread:get("stalled") == 1 or still_waiting then conns = conns + 1 end
    stalled_n = stalled_n + thread:get("stalled_requests") + (still_waiting and 1 or 0)
    non2xx_n = non2xx_n + thread:get("non2xx")
    max_n = math.max(max_n, thread:get("max_us"))
    for _, value in ipairs(thread:get("event")) do all[#all + 1] = value end
  end
  table.sort(all)
  local p99 = 0
  if #all > 0 then p99 = all[math.max(1, math.ceil(#all * 0.99))] end
  io.write(string.format(
    "EVENT stalled_connections=%d stalled_requests=%d non2xx=%d event_requests=%d event_p99_us=%d max_us=%d\n",
    conns, stalled_n, non2xx_n, #all, p99, max_n))
end
"""


def event_lb(name, tmp, backends, threads, sluice_bin):
    """Starts one LB for a failure scenario, as its users would configure active checks (or,
    for nginx, passive failure detection) for fast failover, everything else as shipped."""
    interval = CHECK_INTERVAL_MS
    if name == "sluice":
        text = f"""
watch: false
runtime: {{ worker_threads: {threads} }}
listeners:
  web: {{ bind: "127.0.0.1:{EVENT_PORT}", pool: app }}
pools:
  app:
    backends: [{", ".join(f"127.0.0.1:{p}" for p in backends)}]
    health_check: {{ path: /health, interval: {interval}ms, timeout: {interval}ms }}
"""
        argv = [sluice_bin, "-c"]
        env = dict(os.environ, SLUICE_LOG="warn")
    elif name == "haproxy":
        servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
        text = f"""
global
    nbthread {threads}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check {interval}ms
    option http-keep-alive
    retries 2
    option redispatch
    retry-on conn-failure empty-response
frontend web
    bind 127.0.0.1:{EVENT_PORT}
    default_backend app
backend app
    balance roundrobin
    http-reuse always
    option httpchk GET /health
    default-server check inter {interval}ms fall 3 rise 2 observe layer4 error-limit 5 on-error mark-down
{servers}
"""
        argv = ["haproxy", "-db", "-f"]
        env = None
    else:
        upstreams = "\n".join(f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=2s;"
                              for p in backends)
        text = f"""
worker_processes {threads};
pid {tmp}/nginx-event.pid;
error_log {tmp}/nginx-event.err warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream app {{
{upstreams}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{EVENT_PORT} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        argv = ["nginx", "-e", os.path.join(tmp, "nginx-event.err"), "-c"]
        env = None
    path = os.path.join(tmp, f"{name}-event.conf")
    with open(path, "w") as f:
        f.write(text)
    log = open(os.path.join(tmp, f"{name}-event.log"), "w")
    proc = subprocess.Popen([*argv, path], stdout=subprocess.DEVNULL, stderr=log, env=env)
    wait_port(EVENT_PORT)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited (port taken by a leftover process?)")
    return proc


def start_backend(sluice_bin, port):
    proc = subprocess.Popen([sluice_bin, "backends", "--count", "1", "--first-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def served(port):
    """How many requests the backend on `port` served (`sluice backends` counts them)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /_backend/requests HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.split(b"\r\n\r\n", 1)[1])


def sleep_until(moment):
    """Waits for a point of the scenario's timeline (scheduling, not synchronization)."""
    time.sleep(max(0.0, moment - time.monotonic()))


def event_run(kind, name, tmp, threads, sluice_bin, lua):
    ports = [EVENT_BACKEND_PORT + i for i in range(4)]
    backends = {port: start_backend(sluice_bin, port) for port in ports}
    victim = ports[1]
    lb = None
    try:
        lb = event_lb(name, tmp, ports, threads, sluice_bin)
        # Warm up: keep-alive connections open, every backend seen by the checks.
        subprocess.run(["wrk", "-t2", f"-c{EVENT_CONNECTIONS}", "-d1s", f"http://127.0.0.1:{EVENT_PORT}/"],
                       capture_output=True, check=True)
        t0 = time.monotonic()
        env = dict(os.environ, EVENT_T0_US=str(int(t0 * 1e6)), EVENT_FROM_S=str(FAULT_S),
                   EVENT_TO_S=str(RESTORE_S + 1.0), STALL_S=str(STALL_S))
        wrk = subprocess.Popen(
            ["wrk", f"-t{EVENT_CONNECTIONS}", f"-c{EVENT_CONNECTIONS}", f"-d{EVENT_DURATION_S}s",
             "--timeout", "30s", "--latency", "-s", lua, f"http://127.0.0.1:{EVENT_PORT}/"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        sleep_until(t0 + FAULT_S)
        before = 0
        if kind == "stop":
            before = served(victim)
            backends[victim].send_signal(signal.SIGSTOP)
        else:
            backends[victim].kill()
            backends[victim].wait()
        sleep_until(t0 + RESTORE_S)
        if kind == "stop":
            backends[victim].send_signal(signal.SIGCONT)
        else:
            backends[victim] = start_backend(sluice_bin, victim)
        restored = time.monotonic()
        # When the LB sends it traffic again: BACK_REQUESTS more than it served at the restore
        # (a resumed backend first answers what was waiting on it; checks are not counted).
        baseline = served(victim)
        back_ms = float("nan")
        while wrk.poll() is None and time.monotonic() < t0 + EVENT_DURATION_S:
            if served(victim) > baseline + BACK_REQUESTS:
                back_ms = (time.monotonic() - restored) * 1e3
                break
            time.sleep(0.02)
        out, err = wrk.communicate(timeout=EVENT_DURATION_S + 60)
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk failed: {err}")
        result = parse_wrk(out)
        line = next(l for l in out.splitlines() if l.startswith("EVENT "))
        fields = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
        result.update(fields)
        result["restored"] = served(victim) - before
        result["back_ms"] = back_ms
        return result
    finally:
        for proc in [*backends.values(), *([lb] if lb else [])]:
            try:
                proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        stop_all([p for p in [*backends.values(), *([lb] if lb else [])] if p.poll() is None])


def events(kind, scenario, rounds, threads, sluice_bin):
    names = ("sluice", "haproxy", "nginx")
    rows = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        lua = os.path.join(tmp, "event.lua")
        with open(lua, "w") as f:
            f.write(EVENT_LUA)
        for _ in range(rounds):
            for name in names:
                rows[name].append(event_run(kind, name, tmp, threads, sluice_bin, lua))
    report_events(scenario, kind, rows)


def report_events(scenario, kind, rows):
    action = "SIGKILLed, restarted" if kind == "kill" else "SIGSTOPped, SIGCONTed"
    print(f"\n## {scenario}: 1 of 4 backends {action} at {RESTORE_S:.0f} s "
          f"(fault at {FAULT_S:.0f} s); wrk {EVENT_CONNECTIONS} connections, {EVENT_DURATION_S} s")
    print("median (each round)")
    print("| target | client errors | connections stalled > 2 s | p99 ms, fault to restore + 1 s "
          "| requests by the restored backend after it came back | back after ms | requests "
          "| slowest ms |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(runs, key, scale=1.0, digits=0):
        values = [r[key] * scale for r in runs]
        each = ", ".join(f"{v:,.{digits}f}" for v in values)
        return f"{median(values):,.{digits}f} ({each})"

    for name, runs in rows.items():
        for r in runs:
            r["client_errors"] = r["errors"]
        print(f"| {name} | {cell(runs, 'client_errors')} | {cell(runs, 'stalled_connections')} "
              f"| {cell(runs, 'event_p99_us', 1e-3, 1)} | {cell(runs, 'restored')} "
              f"| {cell(runs, 'back_ms')} | {cell(runs, 'total')} | {cell(runs, 'max_us', 1e-3)} |")
    for peer in ("haproxy", "nginx"):
        ratio = median([s["restored"] / p["restored"]
                        for s, p in zip(rows["sluice"], rows[peer]) if p["restored"]])
        print(f"sluice/{peer}: requests by the restored backend x{ratio:.2f}")


def compression_configs(tmp, backends, threads, fd_limit):
    upstreams = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    servers = "\n".join(f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        gzip on;
        gzip_comp_level {level};
        gzip_types application/json;
        gzip_min_length 1024;
        gzip_proxied any;
        gzip_vary on;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}""" for _, lb, port, _, level in COMPRESSION_ROWS if lb == "nginx")
    nginx = f"""
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
{servers}
}}
"""
    backend_list = ", ".join(f"127.0.0.1:{p}" for p in backends)
    listeners = "\n".join(
        f"  l{port}: {{ bind: \"127.0.0.1:{port}\", pool: app"
        + (f", compression: {{ {level}, types: [application/json] }}" if level else "") + " }"
        for _, lb, port, _, level in COMPRESSION_ROWS if lb == "sluice")
    sluice = f"""
watch: false
runtime: {{ worker_threads: {threads} }}
listeners:
{listeners}
pools:
  app:
    backends: [{backend_list}]
"""
    paths = {}
    for name, text in (("nginx", nginx), ("sluice", sluice)):
        paths[name] = os.path.join(tmp, f"compression-{name}.conf")
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


def wire_bytes(port, coding):
    """The body bytes of one answer as sent (http.client de-chunks but does not decompress)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Accept-Encoding": coding})
    response = conn.getresponse()
    body = response.read()
    encoding = response.getheader("Content-Encoding") or "identity"
    conn.close()
    return len(body), encoding


def compression(opts, sluice_bin, fd_limit):
    with tempfile.TemporaryDirectory() as tmp:
        backends = [BACKEND_BASE_PORT + i for i in range(4)]
        backend_proc = subprocess.Popen(
            [sluice_bin, "backends", "--count", "4", "--first-port", str(BACKEND_BASE_PORT),
             "--body-size", str(COMPRESSION_BODY), "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = {}
        try:
            for p in backends:
                wait_port(p)
            paths = compression_configs(tmp, backends, opts.threads, fd_limit)
            procs["sluice"] = subprocess.Popen(
                [sluice_bin, "-c", paths["sluice"]], stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, "sluice.log"), "w"),
                env=dict(os.environ, SLUICE_LOG="warn"))
            procs["nginx"] = subprocess.Popen(
                ["nginx", "-c", paths["nginx"], "-e", os.path.join(tmp, "nginx.err")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _, _, port, _, _ in COMPRESSION_ROWS:
                wait_port(port)
            sizes = {name: wire_bytes(port, coding) for name, _, port, coding, _ in COMPRESSION_ROWS}
            rows = {name: [] for name, *_ in COMPRESSION_ROWS}
            for _ in range(opts.rounds):
                for name, lb, port, coding, _ in COMPRESSION_ROWS:
                    rows[name].append(run_wrk(port, ["-H", f"Accept-Encoding: {coding}"],
                                              opts.duration, opts.connections, procs[lb].pid,
                                              opts.wrk_threads))
            report_compression(rows, sizes)
        finally:
            stop_all(list(procs.values()) + [backend_proc])


def report_compression(rows, sizes):
    print(f"\n## compression ({COMPRESSION_BODY // 1024} KiB JSON answer)")
    print("| target | req/s (median) | p99 ms | errors | LB CPU us/req | bytes on the wire "
          "(encoding) |")
    print("|---|---|---|---|---|---|")
    for name, runs in rows.items():
        size, encoding = sizes[name]
        print(f"| {name} | {median([r['rps'] for r in runs]):,.0f} "
              f"| {median([r['p99'] for r in runs]):.2f} | {sum(r['errors'] for r in runs)} "
              f"| {median([r['cpu_us'] for r in runs]):.1f} | {size:,} ({encoding}) |")
    for level in (1, 6):
        ours, theirs = rows[f"sluice gzip {level}"], rows[f"nginx gzip {level}"]
        rps = median([s["rps"] / p["rps"] for s, p in zip(ours, theirs)])
        cpu = median([s["cpu_us"] / p["cpu_us"] for s, p in zip(ours, theirs) if p["cpu_us"]])
        size = sizes[f"sluice gzip {level}"][0] / max(sizes[f"nginx gzip {level}"][0], 1)
        print(f"sluice/nginx gzip {level}: req/s x{rps:.2f}, CPU per request x{cpu:.2f}, "
              f"bytes x{size:.2f}")


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
    parser.add_argument("--scenarios", default=",".join([*SCENARIOS, *EVENTS, "compression", "scale",
                                                         "h2", "h2c"]))
    parser.add_argument("--sluice-features", default="",
                        help="cargo features for the sluice build, e.g. aws-lc-rs (TLS provider)")
    parser.add_argument("--soak", type=int, default=0,
                        help="after keepalive, load sluice this many seconds and sample its RSS")
    opts = parser.parse_args()

    variants = [v for v in opts.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown --variants {unknown}: choose from {list(VARIANTS)}")
    scenarios = opts.scenarios.split(",")
    extra = ["compression", "scale", "h2", "h2c"]
    unknown = [s for s in scenarios if s not in SCENARIOS and s not in EVENTS and s not in extra]
    if unknown:
        sys.exit(f"unknown --scenarios {unknown}: choose from {[*SCENARIOS, *EVENTS, *extra]}")
    ensure_tools(stream=any(s in SCENARIOS for s in scenarios))
    features = ["--features", opts.sluice_features] if opts.sluice_features else []
    subprocess.run(["cargo", "build", "--release", "--quiet", *features], cwd=ROOT, check=True)
    sluice_bin = os.path.join(target_dir(), "release", "sluice")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; LB threads: {opts.threads}; "
          f"wrk -t{opts.wrk_threads} -c{opts.connections} -d{opts.duration}s (failover, hang: "
          f"-t{EVENT_CONNECTIONS} -c{EVENT_CONNECTIONS} -d{EVENT_DURATION_S}s); {opts.rounds} rounds")

    fd_limit = raise_fd_limit()
    for scenario in scenarios:
        if scenario in EVENTS:
            events(EVENTS[scenario], scenario, opts.rounds, opts.threads, sluice_bin)
            continue
        if scenario == "compression":
            compression(opts, sluice_bin, fd_limit)
            continue
        if scenario in ("h2", "h2c"):
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import h2bench
            h2bench.run(scenario, opts, sluice_bin, fd_limit)
            continue
        if scenario == "scale":
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import scale
            scale.run(sluice_bin, opts.rounds, ["sluice", "haproxy", "nginx"])
            continue
        body_size, wrk_args, tcp = SCENARIOS[scenario]
        rows_of = [*variants, "sluice-edge"] if scenario == "edge" else variants
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
                                                            rows_of))
                if wrk_args is None:
                    ports = TLS_PORTS if tcp == "tls" else PORTS
                    # Interleaved rounds, as the throughput scenarios.
                    idle = {name: [] for name in procs}
                    for _ in range(opts.rounds):
                        for name in procs:
                            idle[name].append(idle_cost(ports[name], procs[name].pid,
                                                        idle_connections(fd_limit),
                                                        tcp == "tls"))
                    report_idle(scenario, idle, idle_connections(fd_limit))
                    continue
                ports = TLS_PORTS if tcp == "tls" else TCP_PORTS if tcp else PORTS
                scheme = "https" if tcp == "tls" else "http"
                rows = {name: [] for name in ("direct", *procs)}
                for _ in range(opts.rounds):
                    # The backend itself, plain: the ceiling without any proxy or TLS.
                    rows["direct"].append(run_wrk(backends[0], wrk_args, opts.duration,
                                                  opts.connections, wrk_threads=opts.wrk_threads))
                    for name in procs:
                        rows[name].append(run_wrk(ports[name], wrk_args, opts.duration,
                                                  opts.connections, procs[name].pid,
                                                  opts.wrk_threads, scheme))
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


def report_idle(scenario, rows, count):
    print(f"\n## {scenario} ({count:,} keep-alive connections held open)")
    print("| target | KiB per idle connection, each round | answered | RSS MiB with them open, "
          "each round | s to open them |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        kib = ", ".join(f"{r['kib_per_conn']:.2f}" for r in runs)
        rss = ", ".join(f"{r['rss_mib']:.1f}" for r in runs)
        took = ", ".join(f"{r['open_s']:.1f}" for r in runs)
        answered = min(r["answered"] for r in runs)
        print(f"| {name} | {kib} | {answered:,} | {rss} | {took} |")
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
    if "sluice-edge" in rows:
        edge, plain = rows["sluice-edge"], rows["sluice"]
        cpu = median([e["cpu_us"] / p["cpu_us"] for e, p in zip(edge, plain) if p["cpu_us"]])
        rps = median([e["rps"] / p["rps"] for e, p in zip(edge, plain)])
        print(f"sluice-edge/sluice (edge checks that never trigger): CPU per request x{cpu:.3f}, "
              f"req/s x{rps:.3f}")
    for peer in [name for name in (*VARIANTS, "haproxy", "nginx") if name in rows]:
        rps = median([s["rps"] / p["rps"] for s, p in zip(rows["sluice"], rows[peer])])
        cpu = median([s["cpu_us"] / p["cpu_us"] for s, p in zip(rows["sluice"], rows[peer]) if p["cpu_us"]])
        p99 = median([s["p99"] / p["p99"] for s, p in zip(rows["sluice"], rows[peer]) if p["p99"]])
        print(f"sluice/{peer}: req/s x{rps:.2f}, CPU per request x{cpu:.2f}, p99 x{p99:.2f}")


if __name__ == "__main__":
    sys.exit(main())
