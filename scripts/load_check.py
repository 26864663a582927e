#!/usr/bin/env python3
"""Bounded loopback load check of one AlignDet Studio server (standard library only).

Starts target/debug/aligndet-server on 127.0.0.1 against a fresh database (or is pointed at a
running server with --url/--token/--pid), registers a worker, claims a benchmark run, then
measures:

  (a) metrics ingestion: points/s and request latency while several threads send every batch
      twice, overlapping; stored == sent, zero errors (a "deadlock detected" is reported);
  (b) N concurrent viewers of /runs/{id}/live on a run with 1,000,000 points, while the worker
      heartbeats every second: viewer p50/p99, heartbeat interval p50/max idle vs under load
      (and the same while the worker also logs a batch every second);
  (c) server RSS (VmRSS) before / during / after 10 concurrent downloads of a 150 MB
      artifact, and Range / If-None-Match / If-Range answers with the right bytes.

Everything is bounded (a few minutes at most) and stays on 127.0.0.1.

    python3 scripts/load_check.py                # build first: cargo build -p aligndet-server
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs, or nan."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def ms(x):
    return f"{x * 1000:.0f} ms"


class Client:
    """One keep-alive HTTP/1.1 connection (one per thread)."""

    def __init__(self, base, token=None, worker_key=None, timeout=60):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.timeout = timeout
        self.headers = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if worker_key:
            self.headers["x-aligndet-worker-key"] = worker_key
        self.conn = None

    def request(self, method, path, body=None, headers=None, sink=False):
        """(status, headers, body bytes); with sink=True the body is read and dropped."""
        h = dict(self.headers)
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                if sink:
                    n, digest = 0, hashlib.sha256()
                    while True:
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        n += len(chunk)
                        digest.update(chunk)
                    data = (n, digest.hexdigest())
                else:
                    data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (ConnectionError, http.client.HTTPException):
                # A dropped keep-alive connection: reconnect once (never for a streamed body).
                self.conn.close()
                self.conn = None
                if attempt or hasattr(body, "read"):
                    raise

    def json(self, method, path, body=None):
        st, _, data = self.request(method, path, body)
        if st >= 300:
            raise RuntimeError(f"{method} {path}: {st} {data[:300]!r}")
        return json.loads(data) if data else None


def psql(url, sql):
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                         capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


def vm_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The server under test: started here, or one already running."""

    def __init__(self, args):
        self.proc = None
        self.db_url = None
        self.log = None
        if args.url:
            self.base, self.token, self.pid = args.url.rstrip("/"), args.token, args.pid
            self.user_token = args.user_token or os.environ.get("ALIGNDET_TOKEN", "")
            self.db_url = args.server_database_url
            return
        name = f"aligndet_load_{int(time.time())}_{os.getpid()}"
        psql(args.database_url, f"CREATE DATABASE {name}")
        self.admin_url, self.db_name = args.database_url, name
        self.db_url = args.database_url.rsplit("/", 1)[0] + "/" + name
        self.dir = tempfile.mkdtemp(prefix="aligndet-load-")
        self.token = secrets.token_hex(16)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, ALIGNDET_WORKER_TOKEN=self.token, RUST_LOG="warn")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [args.server_bin, "--bind", f"127.0.0.1:{port}", "--data-dir", self.dir,
             "--database-url", self.db_url],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if Client(self.base).request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not answer /healthz in 60 s")
        # Runs are created with a personal API token (the worker token only does worker calls):
        # one for the first admin, made by the CLI on the same database.
        made = subprocess.run(
            [args.server_bin, "--data-dir", self.dir, "--database-url", self.db_url,
             "tokens", "create", "admin", "--name", "load-check"],
            env=env, capture_output=True, text=True, check=True)
        self.user_token = made.stdout.strip()

    def log_text(self):
        if not self.log:
            return ""
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            psql(self.admin_url, f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")


def setup_worker(srv):
    c = Client(srv.base, srv.token)
    reg = c.json("POST", "/api/v1/workers/register",
                 {"name": "load-check", "device": "cpu", "info": {}, "protocol_version": 2})
    run = Client(srv.base, srv.user_token).json("POST", "/api/v1/runs", {
        "name": "load check",
        "config": {"kind": "benchmark", "backbone": "resnet18", "batch_size": 2,
                   "resolution": 64, "steps": 4, "warmup_steps": 0}})
    w = Client(srv.base, srv.token, reg["worker_key"])
    spec = w.json("POST", "/api/v1/jobs/claim", {"worker_id": reg["worker_id"]})
    if not spec or spec["run_id"] != run["id"]:
        raise RuntimeError(f"claimed {spec and spec['run_id']}, created {run['id']}")
    return reg, spec


def run_threads(n, target):
    ts = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def ingestion(srv, reg, spec, args):
    run_id, attempt = spec["run_id"], spec["attempt"]
    keys = ["loss/total", "loss/cls", "loss/box", "train/lr"]
    per_key = args.ingest_points // len(keys)
    batch = 1000
    batches = []
    for start in range(0, per_key, batch // len(keys)):
        pts = [{"key": k, "step": s, "value": random.random(), "wall_time": time.time()}
               for s in range(start, min(per_key, start + batch // len(keys))) for k in keys]
        batches.append(pts)
    # Every batch twice, shuffled over the threads: overlapping re-sends of the same rows.
    jobs = [b for b in batches for _ in range(2)]
    random.Random(1).shuffle(jobs)
    lock = threading.Lock()
    lat, errors = [], []
    nxt = iter(jobs)

    def worker(_):
        c = Client(srv.base, srv.token, reg["worker_key"])
        while True:
            with lock:
                b = next(nxt, None)
            if b is None:
                return
            t0 = time.perf_counter()
            st, _, body = c.request("POST", f"/api/v1/runs/{run_id}/metrics",
                                    {"attempt": attempt, "points": b})
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if st != 200:
                    errors.append(f"{st} {body[:200]!r}")

    t0 = time.perf_counter()
    run_threads(args.ingest_threads, worker)
    wall = time.perf_counter() - t0
    sent = sum(len(b) for b in batches)
    summary = Client(srv.base, srv.user_token).json("GET", f"/api/v1/runs/{run_id}")
    stored = sum(k["points"] for k in summary["metric_keys"])
    deadlocks = srv.log_text().count("deadlock detected") + sum("deadlock" in e for e in errors)
    print(f"(a) ingestion: {len(jobs)} requests of {batch} points ({sent} distinct points, each "
          f"sent twice) from {args.ingest_threads} threads in {wall:.1f} s")
    print(f"    {2 * sent / wall:,.0f} points/s sent ({sent / wall:,.0f} distinct/s); request "
          f"latency p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, max {ms(max(lat))}")
    print(f"    stored {stored} == sent {sent}: {stored == sent}; errors: {len(errors)}; "
          f"'deadlock detected': {deadlocks}")
    for e in errors[:5]:
        print(f"      error: {e}")
    return keys, per_key, stored == sent and not errors


def top_up(srv, run_id, keys, have_per_key, total):
    """Fill the run to `total` points straight in SQL (the API path was measured in (a))."""
    per_key = total // len(keys)
    t0 = time.perf_counter()
    for k in keys:
        psql(srv.db_url, f"""INSERT INTO metrics (run_id, key, step, value, wall_time, attempt)
            SELECT {run_id}, '{k}', g, sin(g / 5000.0) + random() * 0.1, g, 1
            FROM generate_series({have_per_key}, {per_key - 1}) g""")
    # What autovacuum does within a minute of a bulk load: the planner then reads the series
    # through the primary key instead of sorting it.
    psql(srv.db_url, "ANALYZE metrics")
    psql(srv.db_url, f"SELECT pg_notify('run_changed', '{run_id}')")
    n = int(psql(srv.db_url, f"SELECT COUNT(*) FROM metrics WHERE run_id = {run_id}"))
    print(f"    run {run_id} filled to {n:,} points in SQL ({time.perf_counter() - t0:.1f} s)")
    return n


class Heartbeats:
    """The worker's heartbeat loop: one call, then one second of sleep, as the trainer does."""

    def __init__(self, srv, reg, spec):
        self.c = Client(srv.base, srv.token, reg["worker_key"])
        self.path = f"/api/v1/runs/{spec['run_id']}/heartbeat"
        self.body = {"worker_id": reg["worker_id"], "attempt": spec["attempt"]}
        self.marks, self.lat, self.errors = [], [], 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            st, _, _ = self.c.request("POST", self.path, self.body)
            self.marks.append(t0)
            self.lat.append(time.perf_counter() - t0)
            self.errors += st != 200
            self.stop.wait(1.0)

    def window(self, t0, t1):
        marks = [m for m in self.marks if t0 <= m <= t1]
        iv = [b - a for a, b in zip(marks, marks[1:])]
        lat = [l for m, l in zip(self.marks, self.lat) if t0 <= m <= t1]
        return iv, lat


def viewers(srv, run_id, n, seconds, logger=None):
    lat, bad, sizes = [], [], []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def view(_):
        c = Client(srv.base)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            st, _, body = c.request("GET", f"/runs/{run_id}/live")
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                sizes.append(len(body))
                if st != 200:
                    bad.append(st)

    if logger:
        logger.start()
    run_threads(n, view)
    if logger:
        logger.stop.set()
    return lat, bad, sizes


class Logger:
    """The worker also logging: one batch per key every second, at the next steps."""

    def __init__(self, srv, reg, spec, keys, first_step):
        self.c = Client(srv.base, srv.token, reg["worker_key"])
        self.path = f"/api/v1/runs/{spec['run_id']}/metrics"
        self.attempt, self.keys, self.step = spec["attempt"], keys, first_step
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.sent = 0

    def start(self):
        self.t.start()

    def loop(self):
        while not self.stop.is_set():
            pts = [{"key": k, "step": s, "value": random.random(), "wall_time": time.time()}
                   for s in range(self.step, self.step + 50) for k in self.keys]
            self.step += 50
            st, _, _ = self.c.request("POST", self.path, {"attempt": self.attempt, "points": pts})
            self.sent += len(pts) if st == 200 else 0
            self.stop.wait(1.0)


def live_load(srv, reg, spec, keys, per_key, args):
    run_id = spec["run_id"]
    hb = Heartbeats(srv, reg, spec)
    t_idle = time.perf_counter()
    time.sleep(args.idle_seconds)
    t_load = time.perf_counter()
    first = Client(srv.base)
    t0 = time.perf_counter()
    st, _, body = first.request("GET", f"/runs/{run_id}/live")
    cold = time.perf_counter() - t0
    lat, bad, sizes = viewers(srv, run_id, args.viewers, args.view_seconds)
    t_logging = time.perf_counter()
    logger = Logger(srv, reg, spec, keys, per_key)
    lat2, bad2, _ = viewers(srv, run_id, args.viewers, args.view_seconds, logger)
    t_end = time.perf_counter()
    hb.stop.set()
    hb.t.join()
    idle_iv, idle_lat = hb.window(t_idle, t_load)
    load_iv, load_lat = hb.window(t_load, t_logging)
    log_iv, log_lat = hb.window(t_logging, t_end)
    print(f"(b) live fragment of run {run_id}: first (cold) view {ms(cold)}, status {st}, "
          f"{len(body) / 1024:.0f} KiB")
    print(f"    {args.viewers} viewers for {args.view_seconds} s: {len(lat)} views, p50 "
          f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, max {ms(max(lat))}; non-200: {len(bad)}")
    print(f"    same while the worker logs {len(keys)}x50 points/s ({logger.sent} sent): "
          f"{len(lat2)} views, p50 {ms(pct(lat2, 50))}, p99 {ms(pct(lat2, 99))}, max "
          f"{ms(max(lat2))}; non-200: {len(bad2)}")
    for label, iv, hl in [("idle", idle_iv, idle_lat), ("viewers", load_iv, load_lat),
                          ("viewers+logging", log_iv, log_lat)]:
        print(f"    heartbeat interval {label:16s} p50 {iv and pct(iv, 50) or float('nan'):.3f} s, "
              f"max {max(iv) if iv else float('nan'):.3f} s (call p50 {ms(pct(hl, 50))}, max "
              f"{ms(max(hl) if hl else float('nan'))}, n={len(iv)})")
    print(f"    heartbeat errors: {hb.errors}")
    return pct(lat, 99) < 0.5 and not bad and not hb.errors


def artifacts(srv, reg, spec, args):
    run_id, attempt = spec["run_id"], spec["attempt"]
    size = args.artifact_mib * 1024 * 1024
    path = os.path.join(tempfile.gettempdir(), f"load-check-{os.getpid()}.bin")
    rng = random.Random(7)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        block = rng.randbytes(1 << 20)
        for i in range(args.artifact_mib):
            chunk = bytes([i % 251]) + block[1:]
            digest.update(chunk)
            f.write(chunk)
    want = digest.hexdigest()
    name = "checkpoint.safetensors"
    up = Client(srv.base, srv.token, reg["worker_key"], timeout=300)
    with open(path, "rb") as f:
        st, _, body = up.request("PUT", f"/api/v1/runs/{run_id}/artifacts/{name}?attempt={attempt}",
                                 f, {"Content-Length": str(size),
                                     "Content-Type": "application/octet-stream"})
    if st != 200:
        raise RuntimeError(f"upload: {st} {body[:200]!r}")
    time.sleep(1)
    before = vm_rss_mib(srv.pid)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(vm_rss_mib(srv.pid))
            stop.wait(0.05)

    results = []
    lock = threading.Lock()

    def download(i):
        # Half through the page route, half through the worker API.
        if i % 2:
            c, p = Client(srv.base, srv.token, timeout=300), f"/api/v1/runs/{run_id}/artifacts/{name}"
        else:
            c, p = Client(srv.base, timeout=300), f"/runs/{run_id}/artifacts/{name}"
        t0 = time.perf_counter()
        st, _, (n, h) = c.request("GET", p, sink=True)
        with lock:
            results.append((st, n, h, time.perf_counter() - t0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    run_threads(10, download)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    time.sleep(1)
    after = vm_rss_mib(srv.pid)
    ok = all(st == 200 and n == size and h == want for st, n, h, _ in results)
    print(f"(c) 10 concurrent downloads of a {args.artifact_mib} MiB artifact in {wall:.1f} s "
          f"({10 * size / wall / 2**20:,.0f} MiB/s), all complete and sha256-equal: {ok}")
    print(f"    server VmRSS before {before:.0f} MiB, during max {max(samples):.0f} MiB "
          f"(median {statistics.median(samples):.0f}), after {after:.0f} MiB")

    # Range and validators, on both routes.
    with open(path, "rb") as f:
        def piece(a, b):
            f.seek(a)
            return f.read(b - a + 1)

        checks = []
        for route, c in [("page", Client(srv.base)),
                         ("api", Client(srv.base, srv.token))]:
            p = (f"/runs/{run_id}/artifacts/{name}" if route == "page"
                 else f"/api/v1/runs/{run_id}/artifacts/{name}")
            a, b = 100_000_000, 100_000_999
            st, h, body = c.request("GET", p, headers={"Range": f"bytes={a}-{b}"})
            checks.append((f"{route} bytes={a}-{b}", st == 206 and body == piece(a, b)
                           and h.get("content-range") == f"bytes {a}-{b}/{size}", st))
            st, h2, body = c.request("GET", p, headers={"Range": "bytes=-4096"})
            checks.append((f"{route} bytes=-4096", st == 206 and body == piece(size - 4096, size - 1), st))
            st, _, body = c.request("GET", p, headers={"Range": f"bytes={size + 10}-"})
            checks.append((f"{route} bytes={size + 10}- (past the end)", st == 416, st))
            etag = h.get("etag")
            st, _, _ = c.request("GET", p, headers={"If-None-Match": etag or '"none"'})
            checks.append((f"{route} If-None-Match ETag {etag}", st == 304, st))
            st, _, body = c.request("GET", p, headers={"Range": "bytes=0-9", "If-Range": etag or ""})
            checks.append((f"{route} If-Range current ETag", st == 206 and body == piece(0, 9), st))
            st, _, (n, _) = c.request("GET", p, headers={"Range": "bytes=0-9", "If-Range": '"old"'},
                                      sink=True)
            checks.append((f"{route} If-Range old ETag (whole file)", st == 200 and n == size, st))
            st, h3, _ = c.request("HEAD", p)
            checks.append((f"{route} HEAD", st == 200 and h3.get("content-length") == str(size)
                           and "last-modified" in h3 and h3.get("accept-ranges") == "bytes", st))
        st, _, _ = Client(srv.base).request("GET", f"/runs/{run_id}/artifacts/..%2Fworker-token")
        checks.append(("page bad name", st == 400, st))
        st, _, _ = Client(srv.base).request("GET", f"/runs/{run_id}/artifacts/not-stored.bin")
        checks.append(("page unknown artifact", st == 404, st))
    os.remove(path)
    for label, good, st in checks:
        print(f"    {'ok ' if good else 'BAD'} {label}: {st}")
    return ok and all(g for _, g, _ in checks) and max(samples) - before < 200


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-bin", default=os.path.join(ROOT, "target/debug/aligndet-server"))
    ap.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                    help="admin connection; a fresh database is created on it and dropped after")
    ap.add_argument("--url", help="use this running server instead of starting one")
    ap.add_argument("--token", help="its worker token (with --url)")
    ap.add_argument("--user-token", help="a personal API token of an editor (with --url; default $ALIGNDET_TOKEN)")
    ap.add_argument("--pid", type=int, help="its process id, for VmRSS (with --url)")
    ap.add_argument("--server-database-url", help="its database (with --url), to fill the run")
    ap.add_argument("--ingest-points", type=int, default=200_000)
    ap.add_argument("--ingest-threads", type=int, default=8)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--viewers", type=int, default=50)
    ap.add_argument("--view-seconds", type=int, default=20)
    ap.add_argument("--idle-seconds", type=int, default=6)
    ap.add_argument("--artifact-mib", type=int, default=150)
    args = ap.parse_args()
    if args.url and not (args.token and args.pid and args.server_database_url):
        ap.error("--url needs --token, --pid and --server-database-url")
    # Whatever happens, stop within the bound.
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("5 min bound")))
    signal.alarm(290)
    t_start = time.time()
    srv = Server(args)
    try:
        reg, spec = setup_worker(srv)
        print(f"server {srv.base} (pid {srv.pid}); worker {reg['worker_id']} holds run "
              f"{spec['run_id']} attempt {spec['attempt']}")
        keys, per_key, ok_a = ingestion(srv, reg, spec, args)
        top_up(srv, spec["run_id"], keys, per_key, args.points)
        ok_b = live_load(srv, reg, spec, keys, args.points // len(keys), args)
        ok_c = artifacts(srv, reg, spec, args)
        print(f"verdict: ingestion {'ok' if ok_a else 'FAILED'}, live p99 < 500 ms "
              f"{'ok' if ok_b else 'FAILED'}, downloads {'ok' if ok_c else 'FAILED'} "
              f"({time.time() - t_start:.0f} s in all)")
        return 0 if ok_a and ok_b and ok_c else 1
    finally:
        signal.alarm(0)
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
