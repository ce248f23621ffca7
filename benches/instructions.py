#!/usr/bin/env python3
"""User-space instructions per small HTTP/1.1 keep-alive request: sluice, nginx and HAProxy.

    python3 benches/instructions.py                     # all three, 20,000 requests each
    python3 benches/instructions.py --requests 50000 sluice
    python3 benches/instructions.py --sluice-bin /path/to/other/sluice sluice   # A/B a build

Why instructions: on a small shared machine, CPU time per request swings by 5-10% from run to
run, while the instructions a process executes for a fixed number of requests repeat to a
fraction of a percent. Each load balancer runs under callgrind (valgrind) with one worker,
configured as in `loadtest.py` (round robin over four backends with upstream keep-alive,
X-Forwarded-*, X-Request-Id to the backend and the client); h2load sends a warm-up, then
counting starts (`callgrind_control`), then `--requests` requests over 50 keep-alive
connections, then counting stops. Reported: instructions per request in the load balancer's
user space. Kernel work (TCP on loopback, most of each proxy's CPU per small request) is not
in it: no hardware counters in this VM; `loadtest.py`'s CPU per request covers both.

`--profile DIR` keeps the callgrind files (`callgrind_annotate DIR/sluice.out.1` shows where).
Needs valgrind and h2load (Debian: valgrind, nghttp2-client) besides loadtest.py's tools.
"""

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadtest as lt  # noqa: E402

WARM_UP = 2000
CONNECTIONS = 50


def command(name, paths, tmp, sluice_bin):
    if name == "sluice":
        return [sluice_bin, "-c", paths["sluice"]]
    if name == "haproxy":
        return ["haproxy", "-db", "-f", paths["haproxy"]]
    # One process: the master would be a second program for valgrind to follow.
    text = open(paths["nginx"]).read().replace("daemon off;", "daemon off;\nmaster_process off;")
    with open(paths["nginx"], "w") as f:
        f.write(text)
    return ["nginx", "-c", paths["nginx"], "-e", os.path.join(tmp, "nginx.err")]


def measure(name, requests, sluice_bin, keep):
    fd_limit = lt.raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        backends = [lt.BACKEND_BASE_PORT + i for i in range(4)]
        backend_proc = subprocess.Popen(
            [sluice_bin, "backends", "--count", "4", "--first-port", str(lt.BACKEND_BASE_PORT),
             "--body-size", "13"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = os.path.join(tmp, f"{name}.out")
        proc = None
        try:
            for port in backends:
                lt.wait_port(port)
            paths = lt.configs(tmp, backends, 1, fd_limit, [])
            proc = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 "--instr-atstart=no", *command(name, paths, tmp, sluice_bin)],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "lb.log"), "w"),
                env=dict(os.environ, SLUICE_LOG="warn"))
            lt.wait_port(lt.PORTS[name], timeout=60)
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited (port taken by a leftover process?)")
            url = f"http://127.0.0.1:{lt.PORTS[name]}/"
            h2load = ["h2load", "--h1", "-c", str(CONNECTIONS), "-t", "1"]
            subprocess.run([*h2load, "-n", str(WARM_UP), url], capture_output=True, check=True)
            pid = str(proc.pid)
            subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
            subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=True)
            run = subprocess.run([*h2load, "-n", str(requests), url], capture_output=True,
                                 text=True, check=True)
            # Dumps the counts since the zeroing into OUT.1.
            subprocess.run(["callgrind_control", "-d", pid], capture_output=True, check=True)
            done = re.search(r"(\d+) succeeded", run.stdout)
            if not done or int(done.group(1)) != requests:
                raise RuntimeError(f"{name}: not every request succeeded:\n{run.stdout}")
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            backend_proc.terminate()
            backend_proc.wait()
        dump = f"{out}.1"
        total = next(int(line.split()[1]) for line in open(dump)
                     if line.startswith(("summary:", "totals:")))
        if keep:
            os.makedirs(keep, exist_ok=True)
            for path in glob.glob(f"{out}*"):
                shutil.copy(path, keep)
        return total / requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["sluice", "nginx", "haproxy"])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--sluice-bin", default=None,
                        help="a built sluice (default: build the release one here)")
    parser.add_argument("--profile", default=None, help="keep the callgrind files in DIR")
    opts = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install valgrind nghttp2-client")
    sluice_bin = opts.sluice_bin
    if sluice_bin is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=lt.ROOT, check=True)
        sluice_bin = os.path.join(lt.target_dir(), "release", "sluice")
    print(f"user-space instructions per request, h2load --h1 -c{CONNECTIONS} "
          f"-n{opts.requests}, 13-byte responses, one worker")
    for name in opts.names:
        per_request = measure(name, opts.requests, sluice_bin, opts.profile)
        print(f"{name:8} {per_request:10,.0f}")
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
