#!/usr/bin/env python3
"""Training-step time: our trainer against torchvision, same model, batch and resolution, one run.

Usage: bench_train.py --trainer PATH [--detector fcos] [--backbone resnet50] [--batch-size 2]
                      [--size 512] [--steps 5] [--warmup 2] [--threads 2]
                      [--dataset COCO.json --images DIR]

Ours: `trainer bench-step` (forward, backward, SGD step; batches from our data pipeline, whose
wait is reported separately). torchvision: the same architecture built with weights=None and
weights_backbone=None (batch norm, every stage trainable, as ours in the bench), SGD, random
images of the same size with a few boxes. Both use --threads intra-op threads. Prints the median
step times and ours / theirs as a speed ratio (theirs / ours: above 1 means we are faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import torch

CACHE = os.environ.get("ALIGNDET_CACHE", os.path.expanduser("~/.cache/aligndet-studio"))


def torchvision_steps(args, num_classes):
    from torchvision.models import detection as d

    build = {
        ("fcos", "resnet50"): d.fcos_resnet50_fpn,
        ("retinanet", "resnet50"): d.retinanet_resnet50_fpn,
        ("faster_rcnn", "resnet50"): d.fasterrcnn_resnet50_fpn,
    }[(args.detector, args.backbone)]
    torch.manual_seed(0)
    model = build(weights=None, weights_backbone=None, num_classes=num_classes,
                  min_size=args.size, max_size=args.size).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001,
                          momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.warmup + args.steps):
        images = [torch.rand(3, args.size, args.size, generator=g) for _ in range(args.batch_size)]
        targets = []
        for _ in images:
            xy = torch.rand(6, 2, generator=g) * args.size * 0.7
            wh = torch.rand(6, 2, generator=g) * args.size * 0.3 + 12
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(1, num_classes, (6,), generator=g)})
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trainer", required=True)
    p.add_argument("--detector", default="fcos", choices=["fcos", "retinanet", "faster_rcnn"])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", default=os.path.join(CACHE, "demo/synthetic/annotations.json"))
    p.add_argument("--images", default=os.path.join(CACHE, "demo/synthetic/images"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    num_classes = len(json.load(open(args.dataset))["categories"]) + 1

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = [args.trainer, "bench-step", "--detector", args.detector.replace("_", "-"),
           "--backbone", args.backbone.replace("_", "-"), "--batch-size", str(args.batch_size),
           "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--dataset", args.dataset, "--images", args.images]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    theirs = torchvision_steps(args, num_classes)
    t_ours, t_theirs = ours["median_step_s"], statistics.median(theirs)
    print(f"{args.detector} {args.backbone}, batch {args.batch_size} at {args.size}², "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.threads} threads")
    print(f"  ours        median {t_ours:.3f} s/step  {[round(x, 3) for x in ours['step_s']]}"
          f"  (forward + loss {ours['median_forward_s']:.3f} s, optimizer {ours['median_optimizer_s']:.3f} s)")
    print(f"  torchvision median {t_theirs:.3f} s/step  {[round(x, 3) for x in theirs]}")
    print(f"  data pipeline: median wait {ours['median_data_wait_ms']:.1f} ms per step "
          f"({100 * ours['median_data_wait_ms'] / 1000 / t_ours:.1f}% of a step)")
    print(f"  ratio torchvision / ours = {t_theirs / t_ours:.3f}  (≥ 1: ours is no slower)")


if __name__ == "__main__":
    main()
