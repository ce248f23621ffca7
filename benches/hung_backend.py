#!/usr/bin/env python3
"""The hung-backend scenario: one of four backends stops answering mid-load.

wrk drives 64 keep-alive connections for 10 s through sluice to four backend processes; at
3 s one backend is SIGSTOPped (the kernel still accepts its connections, nothing answers) and
at 6 s SIGCONTed. It prints how many requests took longer than the per-try timeout: with
retries moving idempotent requests to another backend and passive ejection taking the hung
one out after a few timeouts, that number stays small, and no request waits longer than one
per-try timeout plus a retry.

    python3 benches/hung_backend.py [--per-try-ms 200] [--duration 10]

Loopback only; needs wrk (apt-get install wrk).
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadtest import ROOT, ensure_tools, target_dir, wait_port  # noqa: E402

LUA = """
local threshold = tonumber(os.getenv("THRESHOLD_US"))
done = function(summary, latency, requests)
  local low, high = 0.0, 100.0
  for _ = 1, 50 do
    local mid = (low + high) / 2
    if latency:percentile(mid) > threshold then high = mid else low = mid end
  end
  io.write(string.format("RESULT requests=%d above_share=%.6f max_us=%d errors=%d\\n",
    summary.requests, (100 - high) / 100, latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
end
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-try-ms", type=int, default=200)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--algorithm", default="round_robin")
    parser.add_argument("--health-check", action="store_true",
                        help="add an HTTP health check, so an ejected backend returns only after passing one")
    opts = parser.parse_args()
    ensure_tools(stream=False)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sluice_bin = os.path.join(target_dir(), "release", "sluice")
    ports = [18200 + i for i in range(4)]
    backends = [subprocess.Popen([sluice_bin, "backends", "--count", "1", "--first-port", str(p)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    procs = list(backends)
    try:
        for p in ports:
            wait_port(p)
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "sluice.yaml")
            with open(config, "w") as f:
                f.write(f"""watch: false
runtime: {{ worker_threads: 1 }}
listeners:
  web: {{ bind: "127.0.0.1:18210", pool: app }}
pools:
  app:
    algorithm: {opts.algorithm}
    backends: [{", ".join(f"127.0.0.1:{p}" for p in ports)}]
    timeouts: {{ response: 5s }}
    retry: {{ attempts: 2, per_try_timeout: {opts.per_try_ms}ms }}
    outlier: {{ consecutive_failures: 3, base_ejection_time: 2s }}
""")
                if opts.health_check:
                    f.write("    health_check: { type: http, path: /, interval: 500ms, timeout: 200ms, fall: 2 }\n")
            lua = os.path.join(tmp, "count.lua")
            with open(lua, "w") as f:
                f.write(LUA)
            sluice = subprocess.Popen([sluice_bin, "-c", config], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=dict(os.environ, SLUICE_LOG="warn"))
            procs.append(sluice)
            wait_port(18210)
            victim = backends[1]
            timeline = threading.Thread(target=lambda: (time.sleep(3), victim.send_signal(signal.SIGSTOP),
                                                        time.sleep(3), victim.send_signal(signal.SIGCONT)))
            timeline.start()
            out = subprocess.run(
                ["wrk", "-t1", "-c64", f"-d{opts.duration}s", "--latency", "-s", lua, "http://127.0.0.1:18210/"],
                capture_output=True, text=True, check=True,
                env=dict(os.environ, THRESHOLD_US=str(opts.per_try_ms * 1000))).stdout
            timeline.join()
            line = next(l for l in out.splitlines() if l.startswith("RESULT"))
            fields = dict(kv.split("=") for kv in line.split()[1:])
            total = int(fields["requests"])
            above = round(float(fields["above_share"]) * total)
            print(f"wrk -t1 -c64 -d{opts.duration}s; backend 2 of 4 SIGSTOPped from 3 s to 6 s; "
                  f"per-try timeout {opts.per_try_ms} ms; {opts.algorithm}; health check: {'http' if opts.health_check else 'none'}")
            print(f"requests: {total}, errors: {fields['errors']}, slower than the per-try timeout: "
                  f"{above} ({100 * above / max(total, 1):.3f}%), slowest: {int(fields['max_us']) / 1000:.0f} ms")
    finally:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
