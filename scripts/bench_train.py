#!/usr/bin/env python3
"""Training-step time: our training engine against torchvision, same model, batch, resolution,
precision and number of data-parallel ranks, in one run.

Usage: bench_train.py --trainer PATH [--detector fcos] [--backbone resnet50] [--batch-size 2]
                      [--size 512] [--steps 5] [--warmup 2] [--threads 2]
                      [--precision fp32|bf16|fp16] [--world-size 1] [--device cpu|cuda]
                      [--dataset COCO.json --images DIR]

Ours: a `finetune` job through `trainer run` (the engine every job trains through: autocast,
gradient averaging over Gloo ranks, clipping, metrics), from scratch (batch norm, every stage
trainable), SGD; per-step times are the job's own `time/forward_ms` + `time/backward_update_ms`
of rank 0, and its loader wait `train/data_wait_ms`. torchvision: the same architecture built with
weights=None and weights_backbone=None, SGD, random images of the same size with a few boxes;
bf16 under torch.autocast("cpu"); world size N as N processes in DistributedDataParallel over
Gloo. `--batch-size` is the global batch (each rank takes batch / world size), and the threads are
split over the ranks for both. Prints the median step times and theirs / ours (above 1: we are
faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch

CACHE = os.environ.get("ALIGNDET_CACHE", os.path.expanduser("~/.cache/aligndet-studio"))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torchvision_rank(rank, args, num_classes, port, out):
    """One rank of torchvision's training: its step times go to `out` (rank 0)."""
    import torch.distributed as dist
    from torchvision.models import detection as d

    world = args.world_size
    torch.set_num_threads(max(1, args.threads // world))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    build = {
        ("fcos", "resnet50"): d.fcos_resnet50_fpn,
        ("retinanet", "resnet50"): d.retinanet_resnet50_fpn,
        ("faster_rcnn", "resnet50"): d.fasterrcnn_resnet50_fpn,
    }[(args.detector, args.backbone)]
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(weights=None, weights_backbone=None, num_classes=num_classes,
                  min_size=args.size, max_size=args.size).train().to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    scaler = torch.amp.GradScaler(enabled=args.precision == "fp16")
    fast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001,
                          momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(rank)
    per_rank = args.batch_size // world
    times = []
    for i in range(args.warmup + args.steps):
        images = [torch.rand(3, args.size, args.size, generator=g) for _ in range(per_rank)]
        targets = []
        for _ in images:
            xy = torch.rand(6, 2, generator=g) * args.size * 0.7
            wh = torch.rand(6, 2, generator=g) * args.size * 0.3 + 12
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(1, num_classes, (6,), generator=g)})
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=fast, enabled=fast is not None):
            losses = model(images, targets)
        loss = sum(v.float() for v in losses.values())
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        json.dump(times, open(out, "w"))
    if world > 1:
        dist.destroy_process_group()


def torchvision_steps(args, num_classes):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        if args.world_size == 1:
            torchvision_rank(0, args, num_classes, 0, out)
        else:
            import socket
            import torch.multiprocessing as mp
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(torchvision_rank, args=(args, num_classes, port, out),
                     nprocs=args.world_size)
        return json.load(open(out))


def our_steps(args):
    """The engine's per-step times (rank 0) and loader waits from a `trainer run` fine-tune."""
    splits = json.load(open(os.path.join(os.path.dirname(args.dataset), "splits.json")))
    config = {
        "kind": "finetune", "dataset_id": 1, "detector": args.detector,
        "backbone": args.backbone, "init": {"from": "scratch"}, "trainable_backbone_stages": 5,
        "no_decay_norm_and_bias": False, "eval_every": 100000, "final_eval_max_images": 1,
        "optim": {"steps": args.warmup + args.steps, "batch_size": args.batch_size,
                  "lr": 0.001, "warmup_steps": 0, "grad_clip_norm": None,
                  "checkpoint_every": 100000, "loader_threads": 2,
                  "precision": args.precision, "world_size": args.world_size},
        "augment": {"min_sizes": [args.size], "max_size": args.size, "hflip": True,
                    "color_jitter": 0.0},
    }
    spec = {"run_id": 1, "attempt": 1, "name": "bench", "lease_seconds": 0.0, "config": config,
            "dataset": {"dataset_id": 1, "name": "bench", "annotations_path": args.dataset,
                        "image_root": args.images, "splits": splits}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spec.json")
        json.dump(spec, open(path, "w"))
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads // args.world_size)))
        subprocess.run([args.trainer, "run", path, "--out", os.path.join(tmp, "out"),
                        "--device", args.device], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        points = {}
        for line in open(os.path.join(tmp, "out", "events.jsonl")):
            e = json.loads(line)
            for p in e.get("points", []):
                points.setdefault(p["key"], {})[p["step"]] = p["value"]
    timed = range(args.warmup + 1, args.warmup + args.steps + 1)
    step_s = [(points["time/forward_ms"][s] + points["time/backward_update_ms"][s]) / 1000
              for s in timed]
    wait_ms = [points["train/data_wait_ms"][s] for s in timed]
    return step_s, wait_ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trainer", required=True)
    p.add_argument("--detector", default="fcos", choices=["fcos", "retinanet", "faster_rcnn"])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--batch-size", type=int, default=2, help="the global batch")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads, split over ranks")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (ours and torchvision's)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--dataset", default=os.path.join(CACHE, "demo/synthetic/annotations.json"))
    p.add_argument("--images", default=os.path.join(CACHE, "demo/synthetic/images"))
    args = p.parse_args()
    if args.precision == "fp16" and args.device == "cpu":
        p.error("fp16 needs CUDA (use bf16 on the CPU)")
    if args.batch_size % args.world_size:
        p.error("--batch-size must split evenly over --world-size ranks")
    num_classes = len(json.load(open(args.dataset))["categories"]) + 1

    ours, wait_ms = our_steps(args)
    theirs = torchvision_steps(args, num_classes)
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"{args.detector} {args.backbone}, global batch {args.batch_size} at {args.size}², "
          f"{args.precision}, {args.world_size} rank(s), {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.threads} threads in all")
    print(f"  ours        median {t_ours:.3f} s/step  {[round(x, 3) for x in ours]}")
    print(f"  torchvision median {t_theirs:.3f} s/step  {[round(x, 3) for x in theirs]}")
    wait = statistics.median(wait_ms)
    print(f"  data pipeline: median wait {wait:.1f} ms per step ({100 * wait / 1000 / t_ours:.1f}% "
          f"of a step)")
    print(f"  ratio torchvision / ours = {t_theirs / t_ours:.3f}  (≥ 1: ours is no slower)")
    if args.json:
        json.dump({"detector": args.detector, "precision": args.precision,
                   "world_size": args.world_size, "device": args.device,
                   "ours_s": t_ours, "torchvision_s": t_theirs, "ratio": t_theirs / t_ours,
                   "data_wait_ms": wait}, open(args.json, "w"))


if __name__ == "__main__":
    main()
