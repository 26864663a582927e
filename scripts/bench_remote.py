#!/usr/bin/env python3
"""Job inputs over the worker API against local files, on the synthetic demo dataset.

Usage: bench_remote.py [--bin target/debug] [--steps 12] [--size 160] [--repeats 3]
       (needs the Postgres of the README at 127.0.0.1:5432 and scripts/setup.sh's demo data)

Starts a server on a fresh database with the demo datasets, then:
1. Transport: every image of the dataset fetched from /api/v1/blobs one request at a time (one
   kept-alive connection) against the same images in packs (/api/v1/blobs/pack), both by this
   script's HTTP client; prints images/s of each and the ratio (why the worker uses packs).
2. Delivery to the loader (`trainer bench-delivery`, one Rust process): what a worker does for a
   job (fetch the annotation file, open the dataset's layout, stream the images in: fetched over
   the API with a cold cache, checked by their stat stamps with a warm one) while two reader
   threads read every image in a shuffled order through the same wait the data loader uses; the
   clock stops at the last image read. Beside it, the same readers on the same files in a local
   folder. images/s = dataset images / seconds; the goal is warm >= 0.9 x local.
3. The loader's wait per training step (`train/data_wait_ms`, median) in a fine-tune at --size px
   run by a remote worker (`trainer worker` in its own mount namespace, the server's folders
   hidden) with a cold cache and then a warm one, and in the same fine-tune run by `trainer run`
   on the local files.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.parse

CACHE = os.environ.get("ALIGNDET_CACHE", os.path.expanduser("~/.cache/aligndet-studio"))
PG = "postgres://postgres@127.0.0.1:5432"


def psql(db, sql):
    out = subprocess.run(["psql", f"{PG}/{db}", "-tAc", sql], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def start_server(args, tmp, db, token):
    env = dict(os.environ, ALIGNDET_WORKER_TOKEN=token, RUST_LOG="warn")
    server = subprocess.Popen(
        [os.path.join(args.bin, "aligndet-server"), "--bind", "127.0.0.1:0", "--data-dir",
         os.path.join(tmp, "data"), "--database-url", f"{PG}/{db}", "--demo", "--cache-dir",
         CACHE], stdout=subprocess.PIPE, env=env, text=True)
    for line in server.stdout:
        if line.startswith("listening on "):
            return server, line.split()[-1]
    raise SystemExit("the server did not start")


def wait_for(what, check, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def api(url, token, method, path, body=None):
    host = urllib.parse.urlparse(url).netloc
    conn = http.client.HTTPConnection(host, timeout=600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, "/api/v1/" + path, json.dumps(body) if body is not None else None,
                 headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data) if data else None


def transport(url, token, hashes):
    """Seconds to fetch every blob one request at a time, and in packs of up to 1024."""
    host = urllib.parse.urlparse(url).netloc
    headers = {"Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection(host, timeout=600)
    t0 = time.perf_counter()
    single_bytes = 0
    for sha in hashes:
        conn.request("GET", f"/api/v1/blobs/{sha}", headers=headers)
        single_bytes += len(conn.getresponse().read())
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed_bytes = 0
    for i in range(0, len(hashes), 1024):
        body = json.dumps({"sha256": hashes[i:i + 1024]})
        conn.request("POST", "/api/v1/blobs/pack", body,
                     dict(headers, **{"Content-Type": "application/json"}))
        packed_bytes += len(conn.getresponse().read())
    packed = time.perf_counter() - t0
    return single, packed, single_bytes, packed_bytes


def finetune_config(dataset, args):
    return {
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": {"from": "scratch"}, "eval_every": 100000, "final_eval_max_images": 1,
        "optim": {"steps": args.steps, "batch_size": 4, "lr": 0.001, "warmup_steps": 0,
                  "checkpoint_every": 100000, "loader_threads": 2, "seed": 1},
        "augment": {"min_sizes": [args.size], "max_size": args.size},
    }


def user_token(args, tmp, db):
    """A personal API token of the first admin (runs are created with one; the worker token
    only does worker calls), made by the CLI on the server's database."""
    made = subprocess.run(
        [os.path.join(args.bin, "aligndet-server"), "--data-dir", os.path.join(tmp, "data"),
         "--database-url", f"{PG}/{db}", "tokens", "create", "admin", "--name", "bench-remote"],
        capture_output=True, text=True, check=True)
    return made.stdout.strip()


def remote_run(args, url, token_file, db, dataset, cache, hidden, user):
    """One fine-tune by a remote worker; its median loader wait (ms)."""
    run = api(url, user, "POST", "runs", {"name": "bench-remote",
                                          "config": finetune_config(dataset, args)})["id"]
    mounts = "".join(f"mount -t tmpfs tmpfs '{d}' && " for d in hidden)
    subprocess.run(["unshare", "-m", "--", "sh", "-c", mounts + 'exec "$@"', "sh",
                    os.path.join(args.bin, "trainer"), "worker", "--server", url,
                    "--token-file", token_file, "--cache", cache, "--max-jobs", "1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = psql(db, f"SELECT status FROM runs WHERE id = {run}")
    if status != "succeeded":
        raise SystemExit(f"remote run {run} {status}: {psql(db, f'SELECT error FROM runs WHERE id = {run}')}")
    waits = [float(v) for v in psql(
        db, f"SELECT value FROM metrics WHERE run_id = {run} AND key = 'train/data_wait_ms' "
            f"ORDER BY step").split()]
    return statistics.median(waits[1:])


def delivery(args, url, token_file, db, dataset, local_images, tmp):
    """`trainer bench-delivery` on the dataset as a claim names it: seconds per pass."""
    rows = psql(db, f"SELECT file_name || ' ' || sha256 || ' ' || bytes FROM dataset_files "
                    f"WHERE dataset_id = {dataset} ORDER BY file_name").splitlines()
    sha, size = psql(db, f"SELECT annotations_sha256 || ' ' || annotations_bytes "
                         f"FROM datasets WHERE id = {dataset}").split()
    content = {"dataset_id": dataset, "name": "bench", "splits": None,
               "annotations": {"sha256": sha, "bytes": int(size)},
               "images": [{"file_name": n, "sha256": h, "bytes": int(b)}
                          for n, h, b in (r.split() for r in rows)]}
    path = os.path.join(tmp, "content.json")
    json.dump(content, open(path, "w"))
    scratch = os.path.join(tmp, "delivery")
    os.makedirs(scratch)
    out = subprocess.run([os.path.join(args.bin, "trainer"), "bench-delivery", "--server", url,
                          "--token-file", token_file, "--content", path,
                          "--local-images", local_images, "--scratch", scratch,
                          "--repeats", str(args.repeats)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]), [r.split()[1] for r in rows]


def local_run(args, dataset_dir):
    config = finetune_config(1, args)
    spec = {"run_id": 1, "attempt": 1, "name": "bench-local", "lease_seconds": 0.0,
            "config": config,
            "dataset": {"dataset_id": 1, "name": "local",
                        "annotations_path": os.path.join(dataset_dir, "annotations.json"),
                        "image_root": os.path.join(dataset_dir, "images"),
                        "splits": json.load(open(os.path.join(dataset_dir, "splits.json")))}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spec.json")
        json.dump(spec, open(path, "w"))
        subprocess.run([os.path.join(args.bin, "trainer"), "run", path, "--out",
                        os.path.join(tmp, "out")], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        waits = {}
        for line in open(os.path.join(tmp, "out", "events.jsonl")):
            for p in json.loads(line).get("points", []):
                if p["key"] == "train/data_wait_ms":
                    waits[p["step"]] = p["value"]
    return statistics.median([waits[s] for s in sorted(waits)[1:]])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="target/debug")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--delivery-only", action="store_true",
                   help="only part 2 (the data goes over the API once, by a first worker job)")
    args = p.parse_args()
    demo = os.path.join(CACHE, "demo", "synthetic")
    db = f"aligndet_bench_remote_{os.getpid()}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
    token = os.urandom(16).hex()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(args, tmp, db, token)
        try:
            token_file = os.path.join(tmp, "token")
            with open(token_file, "w") as f:
                f.write(token)
            os.chmod(token_file, 0o600)
            dataset = int(wait_for("the demo import", lambda: psql(
                db, "SELECT id FROM datasets WHERE name = 'Synthetic shapes'")))
            hidden = [os.path.join(tmp, "data"), os.path.join(CACHE, "demo")]
            cache = os.path.join(tmp, "worker-cache")
            user = user_token(args, tmp, db)
            # The first job hashes the dataset on the server (what its claim names).
            cold_wait = remote_run(args, url, token_file, db, dataset, cache, hidden, user)
            times, hashes = delivery(args, url, token_file, db, dataset,
                                     os.path.join(demo, "images"), tmp)
            if not args.delivery_only:
                warm_wait = statistics.median(
                    remote_run(args, url, token_file, db, dataset, cache, hidden, user)
                    for _ in range(args.repeats))
                trips = [transport(url, token, hashes) for _ in range(args.repeats)]
                local_wait = statistics.median(local_run(args, demo)
                                               for _ in range(args.repeats))
        finally:
            server.terminate()
            server.wait()
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", db], check=False)
    if args.delivery_only:
        print(json.dumps(times))
        return
    single_s = statistics.median(t[0] for t in trips)
    packed_s = statistics.median(t[1] for t in trips)
    # a pack frames each blob with its sha256 and length (72 bytes)
    assert trips[0][3] == trips[0][2] + 72 * len(hashes), "packs carried other bytes"
    n = times["images"]
    cold_s = statistics.median(times["cold_seconds"])
    warm_s = statistics.median(times["warm_seconds"])
    local_s = statistics.median(times["local_seconds"])
    print(f"synthetic demo dataset: {n} images + annotations; "
          f"fine-tune FCOS-R18 {args.size}px, {args.steps} steps, batch 4; "
          f"medians of {args.repeats} (cold delivery: of {len(times['cold_seconds'])})")
    print(f"transport  one request per image {n / single_s:10.0f} images/s"
          f" | packs {n / packed_s:10.0f} images/s | packs / single {single_s / packed_s:.2f}x")
    print(f"delivery to two readers  cold cache {n / cold_s:8.0f} images/s ({cold_s:.3f} s)"
          f" | warm cache {n / warm_s:8.0f} images/s ({warm_s:.3f} s)"
          f" | local files {n / local_s:8.0f} images/s ({local_s:.3f} s)"
          f" | warm / local {local_s / warm_s:.2f}x | cold / local {local_s / cold_s:.2f}x")
    print(f"loader wait per step (median ms)  remote cold {cold_wait:.1f}"
          f" | remote warm {warm_wait:.1f} | local files {local_wait:.1f}")


if __name__ == "__main__":
    main()
