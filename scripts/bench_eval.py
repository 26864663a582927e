#!/usr/bin/env python3
"""Benchmark `trainer eval` against pycocotools and faster-coco-eval.

Usage: bench_eval.py --trainer PATH [--images 5000] [--dets-per-image 40] [--classes 10]
                     [--seed S] [--threads N] [--repeats 3]

Generates a seeded COCO bbox set (default 5,000 images, ~200k detections, 10 classes),
times each evaluator end to end from the JSON files to the 12 stats (ours: wall time of
the CLI process, median of --repeats runs; the others: one in-process run each), checks
that all three agree on the stats, and prints the times and ratios.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def generate(images, dets_per_image, classes, seed):
    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.choice(np.arange(1, 10 * images + 1), size=images, replace=False))
    cat_ids = [int(c) for c in np.sort(rng.choice(np.arange(1, 100), size=classes, replace=False))]
    gt_images = [{"id": int(i), "width": 1024, "height": 768, "file_name": f"{int(i)}.jpg"} for i in image_ids]
    annotations, detections = [], []
    ann_id = 1
    for img in image_ids:
        img = int(img)
        num_gt = int(rng.integers(0, 15))
        # Log-uniform sizes give a mix of small, medium and large objects.
        wh = np.exp(rng.uniform(np.log(4), np.log(400), size=(num_gt, 2)))
        xy = rng.uniform(0, 1, size=(num_gt, 2)) * (np.array([1024, 768]) - wh).clip(1)
        cats = rng.choice(cat_ids, size=num_gt)
        crowd = rng.random(num_gt) < 0.01
        gt_boxes = []
        for j in range(num_gt):
            box = [round(float(v), 2) for v in (xy[j, 0], xy[j, 1], wh[j, 0], wh[j, 1])]
            gt_boxes.append((int(cats[j]), box))
            annotations.append({
                "id": ann_id, "image_id": img, "category_id": int(cats[j]), "bbox": box,
                "area": round(box[2] * box[3] * float(rng.uniform(0.6, 1.0)), 2),
                "iscrowd": int(crowd[j]), "segmentation": [],
            })
            ann_id += 1
        # About half the detections are jittered ground truth (sometimes misclassified), the
        # rest random boxes; scores rounded to 3 decimals so ties occur.
        num_dets = int(rng.integers(dets_per_image // 2, dets_per_image * 3 // 2 + 1))
        for j in range(num_dets):
            if gt_boxes and rng.random() < 0.5:
                cat, (x, y, w, h) = gt_boxes[int(rng.integers(len(gt_boxes)))]
                if rng.random() < 0.1:
                    cat = int(rng.choice(cat_ids))
                s = 0.05 * max(w, h)
                box = [x + rng.normal(0, s), y + rng.normal(0, s), max(1.0, w + rng.normal(0, s)), max(1.0, h + rng.normal(0, s))]
                score = rng.uniform(0.3, 1.0)
            else:
                cat = int(rng.choice(cat_ids))
                w, h = np.exp(rng.uniform(np.log(4), np.log(400), size=2))
                box = [rng.uniform(0, 1024 - w), rng.uniform(0, 768 - h), w, h]
                score = rng.uniform(0.0, 0.7)
            detections.append({
                "image_id": img, "category_id": cat,
                "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 3),
            })
    categories = [{"id": c, "name": f"class_{c}"} for c in cat_ids]
    return {"images": gt_images, "annotations": annotations, "categories": categories}, detections


def run_ours(trainer, gt_path, dt_path, threads):
    cmd = [trainer, "eval", "--gt", gt_path, "--dt", dt_path]
    if threads:
        cmd += ["--threads", str(threads)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"trainer eval failed: {proc.stderr}")
    out = json.loads(proc.stdout)
    return elapsed, out["stats"], out["timings"]


def run_python(module, gt_path, dt_path):
    """End-to-end time of a pycocotools-compatible evaluator, from files to stats."""
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Evaluator
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Evaluator
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = Evaluator(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - started, [float(s) for s in ev.stats]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", required=True, help="path to the trainer binary")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=40)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="--threads for our CLI (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gt, dets = generate(args.images, args.dets_per_image, args.classes, args.seed)
    print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} ground-truth boxes, "
          f"{len(dets)} detections, {len(gt['categories'])} classes; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(dt_path, "w") as f:
            json.dump(dets, f)
        del gt, dets

        ours = [run_ours(args.trainer, gt_path, dt_path, args.threads) for _ in range(args.repeats)]
        ours_time = statistics.median(t for t, _, _ in ours)
        ours_stats, stage = ours[0][1], ours[0][2]
        fast_time, fast_stats = run_python("faster_coco_eval", gt_path, dt_path)
        ref_time, ref_stats = run_python("pycocotools", gt_path, dt_path)

    def worst(a, b):
        return max(abs(x - y) for x, y in zip(a, b))

    print(f"stats (pycocotools): {[round(s, 4) for s in ref_stats]}")
    print(f"max |ours - pycocotools|      = {worst(ours_stats, ref_stats):.3g}")
    print(f"max |faster - pycocotools|    = {worst(fast_stats, ref_stats):.3g}")
    print(f"ours (median of {args.repeats}): {ours_time:.3f} s  "
          f"[runs: {', '.join(f'{t:.3f}' for t, _, _ in ours)}; stages of run 1: load {stage['load']:.3f}, "
          f"evaluate {stage['evaluate']:.3f}, accumulate {stage['accumulate']:.3f}]")
    print(f"faster-coco-eval: {fast_time:.3f} s")
    print(f"pycocotools:      {ref_time:.3f} s")
    print(f"speed-up vs faster-coco-eval: {fast_time / ours_time:.1f}x")
    print(f"speed-up vs pycocotools:      {ref_time / ours_time:.1f}x")
    if worst(ours_stats, ref_stats) > 1e-9:
        sys.exit("stats disagree with pycocotools")


if __name__ == "__main__":
    main()
