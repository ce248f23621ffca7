#!/usr/bin/env python3
"""Discovery at scale (issue 27): how many etcd membership changes per second sluice applies,
with what lag, at what CPU, whether requests under load fail meanwhile; and whether its memory
stays flat when every backend comes and goes again and again.

    python3 benches/churn.py --sluice target/release/sluice                 # everything
    python3 benches/churn.py --sluice target/release/sluice --smoke         # a short run
    python3 benches/churn.py --sluice target/release/sluice --only flips --cycles 20

A real etcd (Debian `etcd-server`) on free loopback ports, one backend process answering on
every loopback address (`sluice backends --ip 0.0.0.0`), and sluice with one pool `churn`
discovered from the etcd prefix /churn/, with a listener over it and wrk (16 connections)
against that listener through every step.

- base: --base keys (10,000) written in transactions of 128 puts (etcd's default
  --max-txn-ops); the time until sluice has all of them is the initial load.
- rate steps (10, 100, 1,000, 5,000 changes/s, --step-s each): every 10 ms one transaction
  with the changes due by then, rotating add (a new key), modify (a weight on an existing
  key) and remove (the oldest added key), so the pool stays near its size. Per step: changes
  written per second, changes applied per second (changes / time from the first write until
  sluice serves the last one), lag (write sent -> `GET /pools/churn/backends/ADDR` answers
  200, sampled on an add every 200 ms: median, p99-ish max), sluice CPU in % of one core,
  and wrk's failed requests (socket errors plus non-2xx) and p99.
- burst: --burst (10,000) changes as fast as etcd takes them; time until the last is served.
- flips (--cycles): every backend replaced at once (delete all, put as many new ones on
  addresses never used before), then one `/metrics` scrape; RSS after each cycle. Then
  the same with reloads: a config file with --base static backends, all moved to the other
  port, `POST /reload`. Memory must not grow with cycles.

Lag is measured from sending the write, so it includes etcd's own commit (about 1 ms here).
Figures on a busy machine are noise for CPU and rates; lags and RSS hold up better.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PORT_A, PORT_B = 18500, 18501
PREFIX = "/churn/"
TXN_OPS = 128  # etcd's default --max-txn-ops
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEADLINE_S = 120.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(n, port):
    """The n-th backend address: 127.X.Y.Z (n < 16M), each its own loopback address."""
    n += 1
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}:{port}"


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Etcd:
    """A client of etcd's JSON gateway on one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, path, body):
        data = json.dumps(body)
        for attempt in range(2):
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                answer = self.conn.getresponse()
                text = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"etcd {path}: {answer.status} {text[:200]!r}")
                return json.loads(text)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise

    def txn(self, puts=(), deletes=()):
        """One transaction: `puts` are (key, value), `deletes` keys (at most 128 in all)."""
        ops = [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in puts]
        ops += [{"requestDeleteRange": {"key": b64(k)}} for k in deletes]
        if ops:
            self.call("/v3/kv/txn", {"success": ops})

    def delete_prefix(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        self.call("/v3/kv/deleterange", {"key": b64(prefix), "range_end": b64(end)})


def start_etcd(tmp):
    client, peer = free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    exe = shutil.which("etcd")
    if exe is None:
        sys.exit("etcd not found: install Debian package etcd-server")
    log = open(os.path.join(tmp, "etcd.log"), "w")
    proc = subprocess.Popen(
        [exe, "--name", "churn", "--data-dir", os.path.join(tmp, "etcd"),
         "--listen-client-urls", curl, "--advertise-client-urls", curl,
         "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
         "--initial-cluster", f"churn={purl}", "--initial-cluster-state", "new",
         "--logger", "zap", "--log-level", "warn", "--quota-backend-bytes", str(4 << 30)],
        stdout=subprocess.DEVNULL, stderr=log)
    start = time.monotonic()
    while time.monotonic() - start < 20:
        if http_get(client, "/health")[0] == 200:
            return proc, client
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"etcd did not become healthy: see {log.name}")


def http_get(port, path, timeout=5.0):
    """(status, body) of one GET on a new connection; (None, b"") when nothing answered."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        return answer.status, body
    except (http.client.HTTPException, OSError):
        return None, b""


class Admin:
    """sluice's admin API on one keep-alive connection (polls must not cost a connect)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method, path):
        for attempt in range(2):
            try:
                self.conn.request(method, path)
                answer = self.conn.getresponse()
                return answer.status, answer.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise

    def has(self, addr):
        return self.request("GET", f"/pools/churn/backends/{addr}")[0] == 200

    def wait(self, addr, present=True, deadline_s=DEADLINE_S):
        """Polls until the pool has (or lacks) `addr`; the monotonic time it did, or None."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.has(addr) == present:
                return time.monotonic()
            time.sleep(0.001)
        return None


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sluice_config(admin_port, web_port, etcd_port, static=None):
    pool = (f"    backends: [{', '.join(static)}]\n" if static is not None else
            f"    discovery:\n      etcd:\n        endpoints: [http://127.0.0.1:{etcd_port}]\n"
            f"        prefix: {PREFIX}\n")
    return (f"admin: {{bind: 127.0.0.1:{admin_port}}}\nwatch: false\n"
            f"listeners:\n  web: {{bind: 127.0.0.1:{web_port}, pool: churn}}\n"
            f"pools:\n  churn:\n{pool}")


def start_sluice(sluice_bin, tmp, text, admin_port, web_port):
    path = os.path.join(tmp, "sluice.yaml")
    with open(path, "w") as f:
        f.write(text)
    log = open(os.path.join(tmp, "sluice.log"), "a")
    proc = subprocess.Popen([sluice_bin, "-c", path], stdout=subprocess.DEVNULL, stderr=log,
                            env=dict(os.environ, SLUICE_LOG="warn"))
    start = time.monotonic()
    while time.monotonic() - start < 20:
        if http_get(admin_port, "/healthz")[0] == 200:
            return proc, path
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop(proc)
    raise RuntimeError(f"sluice did not start: see {log.name}")


class Load:
    """wrk against the listener for `seconds`; `result()` parses its failures and p99."""

    def __init__(self, port, seconds):
        self.proc = subprocess.Popen(
            ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--latency",
             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)

    def result(self):
        out, _ = self.proc.communicate(timeout=600)
        requests = failed = 0
        p99 = None
        for line in out.splitlines():
            words = line.split()
            if "requests in" in line:
                requests = int(words[0])
            elif line.strip().startswith("Non-2xx"):
                failed += int(words[-1])
            elif line.strip().startswith("Socket errors"):
                failed += sum(int(w.strip(",")) for w in words[3::2])
            elif line.strip().startswith("99%"):
                p99 = words[1]
        return {"requests": requests, "failed": failed, "p99": p99}


class Churn:
    """The pool's membership as written: base keys, added keys (oldest first), and the
    rotation of add, modify, remove."""

    def __init__(self, etcd, base):
        self.etcd = etcd
        self.base = base
        self.next = base
        self.added = []
        self.turn = 0
        self.modified = 0

    def batch(self, count, keep_extra):
        """Writes `count` changes in transactions; returns the last key added (or None)."""
        last_add = None
        while count > 0:
            n = min(count, TXN_OPS)
            puts, deletes, removable = [], [], max(0, len(self.added) - keep_extra)
            for _ in range(n):
                kind = self.turn % 3
                self.turn += 1
                if kind == 2 and removable > 0:
                    deletes.append(PREFIX + self.added.pop(0))
                    removable -= 1
                elif kind == 1:
                    key = address(self.modified % self.base, PORT_A)
                    self.modified += 1
                    puts.append((PREFIX + key, json.dumps({"weight": 1 + self.modified % 5})))
                else:
                    key = address(self.next, PORT_A)
                    self.next += 1
                    self.added.append(key)
                    puts.append((PREFIX + key, ""))
                    last_add = key
            self.etcd.txn(puts, deletes)
            count -= n
        return last_add


def put_base(etcd, base, port, first=0):
    keys = [address(first + n, port) for n in range(base)]
    for i in range(0, len(keys), TXN_OPS):
        etcd.txn([(PREFIX + k, "") for k in keys[i:i + TXN_OPS]])
    return keys


def rate_step(churn, admin, pid, web_port, rate, seconds):
    load = Load(web_port, seconds)
    samples, stop_sampling = [], threading.Event()
    pending = []  # (key, sent_at) of adds to time, filled by the writer
    lock = threading.Lock()

    def sampler():
        # Its own admin connection: the writer must never wait on a poll.
        probe = Admin(admin.port)
        while not stop_sampling.is_set():
            with lock:
                item = pending.pop() if pending else None
                pending.clear()
            if item is None:
                time.sleep(0.01)
                continue
            key, sent = item
            seen = probe.wait(key, True, 30)
            if seen is not None:
                samples.append(seen - sent)
            time.sleep(0.2)

    thread = threading.Thread(target=sampler)
    thread.start()
    cpu0, t0 = ticks(pid), time.monotonic()
    written, last_add, last_sent = 0, None, t0
    while time.monotonic() - t0 < seconds:
        due = int(rate * (time.monotonic() - t0)) + 1 - written
        if due > 0:
            sent = time.monotonic()
            key = churn.batch(due, keep_extra=max(100, rate))
            written += due
            if key is not None:
                last_add, last_sent = key, sent
                with lock:
                    pending.append((key, sent))
        time.sleep(0.01)
    t_written = time.monotonic()
    stop_sampling.set()
    thread.join()
    seen = admin.wait(last_add, True) if last_add else t_written
    cpu = (ticks(pid) - cpu0) / CLK_TCK
    wall = time.monotonic() - t0
    result = load.result()
    return {
        "rate": rate, "written_per_s": written / (t_written - t0),
        "applied_per_s": written / (seen - t0) if seen else 0.0,
        "last_lag_ms": (seen - last_sent) * 1000 if seen else None,
        "lag_ms": sorted(s * 1000 for s in samples),
        "cpu_pct": 100 * cpu / wall, **result,
    }


def burst(churn, admin, pid, web_port, count):
    load = Load(web_port, 5)
    cpu0, t0 = ticks(pid), time.monotonic()
    last = churn.batch(count, keep_extra=count)
    t_written = time.monotonic()
    seen = admin.wait(last, True)
    cpu = (ticks(pid) - cpu0) / CLK_TCK
    result = load.result()
    return {"count": count, "write_s": t_written - t0,
            "served_s": (seen - t0) if seen else None,
            "after_last_write_ms": (seen - t_written) * 1000 if seen else None,
            "applied_per_s": count / (seen - t0) if seen else 0.0, "cpu_s": cpu, **result}


def flips(etcd, admin, pid, base, cycles, first_keys):
    """Every backend replaced by one on an address never used before, `cycles` times (so
    series kept for departed backends would grow without bound); RSS after each."""
    rows, keys = [], first_keys
    for cycle in range(cycles):
        new = [address(1_000_000 + base * cycle + n, PORT_A) for n in range(base)]
        t0 = time.monotonic()
        for i in range(0, base, TXN_OPS // 2):
            etcd.txn([(PREFIX + k, "") for k in new[i:i + TXN_OPS // 2]],
                     [PREFIX + k for k in keys[i:i + TXN_OPS // 2]])
        if admin.wait(new[-1], True) is None or admin.wait(keys[-1], False) is None:
            raise RuntimeError(f"flip {cycle}: not applied within {DEADLINE_S} s")
        applied = time.monotonic() - t0
        admin.request("GET", "/metrics")
        rows.append({"cycle": cycle + 1, "applied_s": applied, "rss_mib": rss_mib(pid)})
        print(f"  flip {cycle + 1}: {applied:.2f} s, RSS {rows[-1]['rss_mib']:.1f} MiB",
              file=sys.stderr, flush=True)
        keys = new
    return rows


def reload_flips(sluice_bin, tmp, base, cycles):
    """The same with config reloads of --base static backends moved to the other port."""
    admin_port, web_port = free_port(), free_port()
    static = lambda port: [address(n, port) for n in range(base)]
    text = sluice_config(admin_port, web_port, 0, static(PORT_A))
    proc, path = start_sluice(sluice_bin, tmp, text, admin_port, web_port)
    admin, rows = Admin(admin_port), []
    try:
        for cycle in range(cycles):
            port = PORT_B if cycle % 2 == 0 else PORT_A
            with open(path, "w") as f:
                f.write(sluice_config(admin_port, web_port, 0, static(port)))
            t0 = time.monotonic()
            status, body = admin.request("POST", "/reload")
            if status != 200:
                raise RuntimeError(f"reload {cycle}: {status} {body[:300]!r}")
            applied = time.monotonic() - t0
            admin.request("GET", "/metrics")
            rows.append({"cycle": cycle + 1, "applied_s": applied, "rss_mib": rss_mib(proc.pid)})
            print(f"  reload {cycle + 1}: {applied:.2f} s, RSS {rows[-1]['rss_mib']:.1f} MiB",
                  file=sys.stderr, flush=True)
    finally:
        stop(proc)
    return rows


def report(steps, bursts, flip_rows, reload_rows):
    if steps:
        print("| changes/s asked | written/s | applied/s | lag median ms | lag max ms "
              "| last change ms | sluice CPU % | requests | failed | p99 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for s in steps:
            lags = s["lag_ms"]
            med = f"{statistics.median(lags):.1f}" if lags else "-"
            top = f"{max(lags):.1f}" if lags else "-"
            last = f"{s['last_lag_ms']:.1f}" if s["last_lag_ms"] is not None else "-"
            print(f"| {s['rate']} | {s['written_per_s']:.0f} | {s['applied_per_s']:.0f} | {med} "
                  f"| {top} | {last} | {s['cpu_pct']:.0f} | {s['requests']} | {s['failed']} "
                  f"| {s['p99']} |")
    for b in bursts:
        print(f"\nburst of {b['count']}: written in {b['write_s'] * 1000:.0f} ms, all served "
              f"{b['served_s'] * 1000:.0f} ms after the first write "
              f"({b['after_last_write_ms']:.0f} ms after the last), {b['applied_per_s']:.0f} "
              f"changes/s, sluice CPU {b['cpu_s']:.2f} s; requests {b['requests']}, "
              f"failed {b['failed']}, p99 {b['p99']}")
    for name, rows in (("discovery flips", flip_rows), ("reloads", reload_rows)):
        if rows:
            rss = [r["rss_mib"] for r in rows]
            print(f"\n{name} (every backend replaced each cycle): RSS MiB by cycle "
                  f"{' '.join(f'{v:.0f}' for v in rss)}; apply s median "
                  f"{statistics.median(r['applied_s'] for r in rows):.2f}")


def run(opts):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: install Debian package wrk")
    only = set(opts.only.split(","))
    backends = [subprocess.Popen([opts.sluice, "backends", "--count", "1", "--first-port",
                                  str(port), "--ip", "0.0.0.0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for port in (PORT_A, PORT_B)]
    steps, bursts, flip_rows, reload_rows = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        etcd_proc, etcd_port = start_etcd(tmp)
        sluice = None
        try:
            etcd = Etcd(etcd_port)
            admin_port, web_port = free_port(), free_port()
            sluice, _ = start_sluice(opts.sluice, tmp,
                                     sluice_config(admin_port, web_port, etcd_port),
                                     admin_port, web_port)
            admin = Admin(admin_port)
            t0 = time.monotonic()
            keys = put_base(etcd, opts.base, PORT_A)
            if admin.wait(keys[-1]) is None:
                raise RuntimeError("the base set never arrived")
            print(f"base of {opts.base}: served {time.monotonic() - t0:.2f} s after the "
                  f"first write; RSS {rss_mib(sluice.pid):.1f} MiB", file=sys.stderr, flush=True)
            churn = Churn(etcd, opts.base)
            if "rates" in only:
                for rate in opts.rates:
                    steps.append(rate_step(churn, admin, sluice.pid, web_port, rate, opts.step_s))
                    print(f"  {steps[-1]}", file=sys.stderr, flush=True)
            if "burst" in only:
                bursts.append(burst(churn, admin, sluice.pid, web_port, opts.burst))
                print(f"  {bursts[-1]}", file=sys.stderr, flush=True)
            if "flips" in only:
                etcd.delete_prefix(PREFIX)
                keys = put_base(etcd, opts.base, PORT_B)
                if admin.wait(keys[-1]) is None:
                    raise RuntimeError("the flip base never arrived")
                flip_rows = flips(etcd, admin, sluice.pid, opts.base, opts.cycles, keys)
        finally:
            if sluice is not None:
                stop(sluice)
            stop(etcd_proc)
        if "reloads" in only:
            reload_rows = reload_flips(opts.sluice, tmp, opts.base, opts.cycles)
    for proc in backends:
        stop(proc)
    report(steps, bursts, flip_rows, reload_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sluice", required=True, help="the sluice binary")
    parser.add_argument("--base", type=int, default=10_000, help="backends in the pool")
    parser.add_argument("--rates", default="10,100,1000,5000")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=25)
    parser.add_argument("--only", default="rates,burst,flips,reloads")
    parser.add_argument("--smoke", action="store_true",
                        help="1,000 backends, 2 s steps, a burst of 1,000, 3 cycles")
    opts = parser.parse_args()
    if opts.smoke:
        opts.base, opts.step_s, opts.burst, opts.cycles = 1000, 2.0, 1000, 3
    opts.rates = [int(r) for r in opts.rates.split(",")]
    run(opts)


if __name__ == "__main__":
    sys.exit(main())
