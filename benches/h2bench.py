#!/usr/bin/env python3
"""HTTP/2 downstream (loadtest.py's `h2` and `h2c` scenarios): h2load against sluice, HAProxy
and nginx, each forwarding HTTP/1.1 keep-alive to the same four backends.

    python3 benches/loadtest.py --scenarios h2,h2c --rounds 5 --duration 5

`h2`: TLS 1.3 (the tls scenarios' ECDSA P-256 certificate, no tickets, no session cache),
HTTP/2 by ALPN. `h2c`: HTTP/2 with prior knowledge over plain TCP. Each round runs h2load
with H2_CONNECTIONS connections and 1, 10 and 100 concurrent streams per connection (`-m`)
for `--duration` seconds against each LB in turn (interleaved, as the other scenarios).
Configured alike: the same request headers added (X-Forwarded-For/-Proto/-Host and an
X-Request-Id, also on the answer), keep-alive to the backends, one worker thread each.

Each run starts with a warm-up of H2_WARMUP_S (connections made, upstream pools filled) that
neither the request count nor the CPU time includes. h2load prints no percentiles: p99 comes
from its per-request log (`--log-file`), which costs the client the same for every LB. CPU per
request is the LB's process tree's CPU time over the measured part divided by the requests
h2load counted done in it.
"""

import os
import re
import subprocess
import tempfile
import time

import loadtest as lt

H2_PORTS = {"sluice": 18051, "haproxy": 18052, "nginx": 18053}
H2C_PORTS = {"sluice": 18061, "haproxy": 18062, "nginx": 18063}
H2_CONNECTIONS = 64
H2_STREAMS = (1, 10, 100)
H2_BODY = 13
# h2load's --warm-up-time: with 100 streams on each of 64 connections, each LB first opens
# thousands of upstream connections, which the measured part must not include.
H2_WARMUP_S = 1
# Backends of their own: not the other scenarios' ports, so an h2 run can share the machine.
H2_BACKEND_BASE_PORT = 18400
LBS = ("sluice", "haproxy", "nginx")


def configs(tmp, backends, threads, fd_limit):
    cert, key, combined = lt.make_certificate(tmp)
    upstreams = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    proxy = """
        keepalive_requests 1000000;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id;
        }"""
    # nginx 1.22: `http2` is a parameter of `listen` (TLS by ALPN, or prior knowledge).
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
    server {{
        listen 127.0.0.1:{H2_PORTS['nginx']} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;{proxy}
    }}
    server {{
        listen 127.0.0.1:{H2C_PORTS['nginx']} http2 backlog=4096;{proxy}
    }}
}}
"""
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends))

    def frontend(name, bind, proto):
        return f"""
frontend {name}
    option forwardfor
    bind {bind}
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto {proto}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-response set-header X-Request-Id %[unique-id]
    default_backend app"""
    haproxy = f"""
global
    nbthread {threads}
    maxconn 4096
    tune.ssl.cachesize 0
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
{frontend("h2", f"127.0.0.1:{H2_PORTS['haproxy']} ssl crt {combined} ssl-min-ver TLSv1.3 "
          "no-tls-tickets alpn h2,http/1.1", "https")}
{frontend("h2c", f"127.0.0.1:{H2C_PORTS['haproxy']} proto h2", "http")}
backend app
    balance roundrobin
    http-reuse always
{servers}
"""
    backend_list = ", ".join(f"127.0.0.1:{p}" for p in backends)
    # A plain sluice listener serves HTTP/2 when a connection opens with its preface; a TLS
    # one offers h2 and http/1.1 by ALPN (the defaults).
    sluice = f"""
watch: false
runtime: {{ worker_threads: {threads} }}
listeners:
  h2:
    bind: "127.0.0.1:{H2_PORTS['sluice']}"
    pool: app
    tls:
      certificates: [{{ cert: "{cert}", key: "{key}" }}]
      min_version: "1.3"
      session_cache: 0
      session_tickets: false
  h2c: {{ bind: "127.0.0.1:{H2C_PORTS['sluice']}", pool: app }}
pools:
  app:
    backends: [{backend_list}]
"""
    paths = {}
    for name, text in (("nginx", nginx), ("haproxy", haproxy), ("sluice", sluice)):
        paths[name] = os.path.join(tmp, f"h2-{name}.conf")
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


def start(tmp, sluice_bin, paths):
    devnull = subprocess.DEVNULL
    procs = {
        "sluice": subprocess.Popen([sluice_bin, "-c", paths["sluice"]], stdout=devnull,
                                   stderr=open(os.path.join(tmp, "sluice.log"), "w"),
                                   env=dict(os.environ, SLUICE_LOG="warn")),
        "haproxy": subprocess.Popen(["haproxy", "-db", "-f", paths["haproxy"]], stdout=devnull,
                                    stderr=open(os.path.join(tmp, "haproxy.log"), "w")),
        "nginx": subprocess.Popen(["nginx", "-c", paths["nginx"], "-e",
                                   os.path.join(tmp, "nginx.err")], stdout=devnull, stderr=devnull),
    }
    try:
        for name, proc in procs.items():
            lt.wait_port(H2_PORTS[name])
            lt.wait_port(H2C_PORTS[name])
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited (port taken by a leftover process?)")
    except Exception:
        lt.stop_all(procs.values())
        raise
    return procs


def parse_h2load(out, log_path):
    m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
    if not m:
        raise RuntimeError(f"h2load: no result in {out!r}")
    rps = float(m.group(3))
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    done = int(req.group(3))
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7))
    errors += sum(int(n) for n in codes.groups()) if codes else 0
    # The log: start (us since the epoch), status, microseconds to the end of the answer.
    durations = []
    with open(log_path) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 3:
                durations.append(int(fields[2]))
    durations.sort()

    def pct(p):
        if not durations:
            return float("nan")
        return durations[min(len(durations) - 1, int(len(durations) * p))] / 1000.0

    return {"rps": rps, "total": done, "p50": pct(0.50), "p99": pct(0.99), "errors": errors}


def run_h2load(url, streams, duration, pid, tmp):
    log_path = os.path.join(tmp, "h2load.log")
    cmd = ["h2load", "-t1", f"-c{H2_CONNECTIONS}", f"-m{streams}", f"-D{duration}",
           f"--warm-up-time={H2_WARMUP_S}", f"--log-file={log_path}", url]
    h2load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # CPU from the end of the warm-up (connections made, upstream pools filled), as h2load
    # counts requests (a sleep marks a point of the run, it synchronizes nothing).
    time.sleep(H2_WARMUP_S)
    before = lt.tree_ticks(pid)
    out, err = h2load.communicate(timeout=duration + H2_WARMUP_S + 60)
    ticks = lt.tree_ticks(pid) - before
    if h2load.returncode != 0:
        raise RuntimeError(f"h2load failed: {err}")
    result = parse_h2load(out, log_path)
    os.unlink(log_path)
    result["cpu_us"] = ticks * 1e6 / lt.CLK_TCK / max(result["total"], 1)
    result["rss_mib"] = lt.tree_peak_rss_kib(pid) / 1024
    return result


def run(scenario, opts, sluice_bin, fd_limit):
    """Runs `h2` or `h2c` for `opts.rounds` rounds and prints one table per stream count."""
    ports, scheme = (H2_PORTS, "https") if scenario == "h2" else (H2C_PORTS, "http")
    with tempfile.TemporaryDirectory() as tmp:
        backends = [H2_BACKEND_BASE_PORT + i for i in range(4)]
        backend_proc = subprocess.Popen(
            [sluice_bin, "backends", "--count", "4", "--first-port", str(H2_BACKEND_BASE_PORT),
             "--body-size", str(H2_BODY)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = {}
        try:
            for p in backends:
                lt.wait_port(p)
            procs = start(tmp, sluice_bin, configs(tmp, backends, opts.threads, fd_limit))
            rows = {m: {name: [] for name in LBS} for m in H2_STREAMS}
            for _ in range(opts.rounds):
                for m in H2_STREAMS:
                    for name in LBS:
                        url = f"{scheme}://127.0.0.1:{ports[name]}/"
                        rows[m][name].append(run_h2load(url, m, opts.duration,
                                                        procs[name].pid, tmp))
            for m in H2_STREAMS:
                transport = "TLS 1.3, ALPN h2" if scenario == "h2" else "prior knowledge"
                lt.report(f"{scenario} ({transport}; h2load -c{H2_CONNECTIONS} -m{m}, "
                          f"{H2_BODY} B answers)", rows[m])
        finally:
            lt.stop_all(list(procs.values()) + [backend_proc])
