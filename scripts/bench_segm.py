#!/usr/bin/env python3
"""Benchmark `trainer eval --iou-type segm` against faster-coco-eval and pycocotools
(iouType="segm").

Usage: bench_segm.py --trainer PATH [--images 5000] [--dets-per-image 40] [--classes 10]
                     [--seed S] [--threads N] [--repeats 3] [--skip-pycocotools]

Generates a seeded COCO instance-segmentation set (polygon ground truth, about 2% crowd
regions as uncompressed RLE, results as compressed RLE: shifted copies of the ground truth
plus random shapes), times the evaluators end to end from the JSON files to the 12 stats
(median of --repeats runs each; ours is the CLI process's wall time, the Python ones run in
process), checks that they agree on the stats and prints the medians and the ratios.
"""

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

W, H = 640, 480


def star(rng, cx, cy, radius):
    n = int(rng.integers(5, 16))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.4, 1.0, n)
    xy = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def generate(images, dets_per_image, classes, seed):
    rng = np.random.default_rng(seed)
    cat_ids = [int(c) for c in np.sort(rng.choice(np.arange(1, 100), size=classes, replace=False))]
    gt_images, annotations, detections = [], [], []
    ann_id = 1
    for img in range(1, images + 1):
        gt_images.append({"id": img, "width": W, "height": H, "file_name": f"{img}.jpg"})
        objects = []
        for _ in range(int(rng.integers(0, 15))):
            cat = int(rng.choice(cat_ids))
            radius = float(np.exp(rng.uniform(np.log(3), np.log(200))))
            poly = star(rng, rng.uniform(0, W), rng.uniform(0, H), radius)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
            crowd = rng.random() < 0.02
            segm = [poly]
            if crowd:
                m = mask_utils.decode(rle).flatten(order="F").astype(np.int8)
                bounds = np.concatenate([[0], np.flatnonzero(np.diff(m)) + 1, [m.size]])
                runs = ([0] if m[0] else []) + np.diff(bounds).tolist()
                segm = {"size": [H, W], "counts": runs}
            annotations.append({"id": ann_id, "image_id": img, "category_id": cat, "iscrowd": int(crowd),
                                "area": float(mask_utils.area(rle)),
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "segmentation": segm})
            ann_id += 1
            objects.append((cat, poly))
        for _ in range(int(rng.integers(dets_per_image // 2, dets_per_image * 3 // 2 + 1))):
            if objects and rng.random() < 0.6:
                cat, poly = objects[int(rng.integers(len(objects)))]
                if rng.random() < 0.1:
                    cat = int(rng.choice(cat_ids))
                shift = rng.normal(0, 3, 2)
                poly = [v + shift[i % 2] for i, v in enumerate(poly)]
            else:
                cat = int(rng.choice(cat_ids))
                poly = star(rng, rng.uniform(0, W), rng.uniform(0, H), float(np.exp(rng.uniform(np.log(3), np.log(150)))))
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
            detections.append({"image_id": img, "category_id": cat, "score": round(float(rng.random()), 3),
                               "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}})
    gt = {"images": gt_images, "annotations": annotations,
          "categories": [{"id": c, "name": f"class_{c}"} for c in cat_ids]}
    return gt, detections


def segm_stats(coco_cls, eval_cls, gt_path, dt_path):
    """The 12 stats of one Python evaluator (pycocotools or faster-coco-eval), quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(gt_path)
        coco_dt = coco_gt.loadRes(dt_path)
        ev = eval_cls(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats[:12]]


def pycocotools_run(gt_path, dt_path):
    return segm_stats(COCO, COCOeval, gt_path, dt_path)


def faster_coco_eval_run(gt_path, dt_path):
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    return segm_stats(FastCOCO, COCOeval_faster, gt_path, dt_path)


def timed(repeats, fn):
    """Median wall time of `repeats` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=40)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-pycocotools", action="store_true",
                        help="time only ours and faster-coco-eval (pycocotools takes ~20 s at 5,000 images)")
    args = parser.parse_args()

    gt, dets = generate(args.images, args.dets_per_image, args.classes, args.seed)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} GT masks, {len(dets)} detections, "
          f"{args.classes} classes", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(dt_path, "w") as f:
            json.dump(dets, f)
        cmd = [args.trainer, "eval", "--iou-type", "segm", "--gt", gt_path, "--dt", dt_path]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        ours_s, ours_times, ours = timed(
            args.repeats,
            lambda: json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout),
        )
        fast_s, fast_times, fast = timed(args.repeats, lambda: faster_coco_eval_run(gt_path, dt_path))
        ref = None
        if not args.skip_pycocotools:
            ref_s, ref_times, ref = timed(args.repeats, lambda: pycocotools_run(gt_path, dt_path))
    import faster_coco_eval

    print(f"trainer eval --iou-type segm: median {ours_s:.2f} s of {[round(t, 2) for t in ours_times]} "
          f"(stages: {ours['timings']})")
    print(f"faster-coco-eval {faster_coco_eval.__version__} segm: median {fast_s:.2f} s of "
          f"{[round(t, 2) for t in fast_times]}")
    worst = max(abs(a - b) for a, b in zip(ours["stats"], fast))
    print(f"ratio vs faster-coco-eval: {fast_s / ours_s:.1f}x; largest stat difference {worst:.3g}")
    if ref is not None:
        diff = max(abs(a - b) for a, b in zip(ours["stats"], ref))
        print(f"pycocotools 2.0.11 segm:      median {ref_s:.2f} s of {[round(t, 2) for t in ref_times]}")
        print(f"ratio vs pycocotools: {ref_s / ours_s:.1f}x; largest stat difference {diff:.3g}")
        worst = max(worst, diff)
    # faster-coco-eval is not bit-exact with pycocotools; pycocotools is the reference
    sys.exit(0 if ref is None or diff <= 1e-9 else 1)


if __name__ == "__main__":
    main()
