#!/usr/bin/env python3
"""Parity check: the predictions browser's TP/FP/miss matching against pycocotools 2.0.11.

Usage: match_parity.py --server PATH [--cases N] [--seed S]

For seeded random ground-truth/detection sets (crowd regions, several classes, score ties,
duplicate boxes, detections on images without ground truth, ground truth without detections,
IoU right at the threshold) `aligndet-server match-detections` must give, per image, the same
TP/FP/FN counts as pycocotools' `evaluateImg` (areaRng "all", maxDets above any image's count,
one IoU threshold), and the same outcome for every detection (TP / FP / ignored) and every
annotation (matched / missed / crowd). Exits non-zero on any difference; the last line reads
"N passed, M failed".
"""

import argparse
import contextlib
import copy
import io
import json
import random
import subprocess
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def rand_box(rng, size=200.0):
    w, h = rng.uniform(2, 80), rng.uniform(2, 80)
    x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def near(rng, box, amount):
    x, y, w, h = box
    s = max(w, h) * amount
    return [round(x + rng.gauss(0, s), 2), round(y + rng.gauss(0, s), 2),
            round(max(0.5, w + rng.gauss(0, s)), 2), round(max(0.5, h + rng.gauss(0, s)), 2)]


def make_case(rng):
    n_images = rng.randint(1, 6)
    cats = [1, 2, 3]
    images, anns, dets = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "width": 200, "height": 200, "file_name": f"{img}.png"})
        n_gt = rng.choice([0, 1, 3, 6, 10])
        gts = []
        for _ in range(n_gt):
            box = rand_box(rng)
            crowd = 1 if rng.random() < 0.12 else 0
            if crowd:
                box = [box[0], box[1], min(200 - box[0], box[2] * 2), min(200 - box[1], box[3] * 2)]
            a = {"id": len(anns) + 1, "image_id": img, "category_id": rng.choice(cats),
                 "bbox": box, "area": box[2] * box[3], "iscrowd": crowd}
            anns.append(a)
            gts.append(a)
        for g in gts:
            # Detections around each truth: good, sloppy, duplicated, of the wrong class.
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                cat = g["category_id"] if rng.random() < 0.85 else rng.choice(cats)
                score = round(rng.choice([rng.random(), 0.5]), 3)
                dets.append({"image_id": img, "category_id": cat,
                             "bbox": near(rng, g["bbox"], rng.choice([0.02, 0.1, 0.3])),
                             "score": score})
            if rng.random() < 0.1:
                # Exactly half of the box: IoU 0.5 on the threshold.
                x, y, w, h = g["bbox"]
                dets.append({"image_id": img, "category_id": g["category_id"],
                             "bbox": [x, y, w, h / 2], "score": 0.42})
        for _ in range(rng.choice([0, 1, 4])):
            dets.append({"image_id": img, "category_id": rng.choice(cats),
                         "bbox": rand_box(rng), "score": round(rng.random(), 3)})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in cats]}
    return gt, dets, rng.choice([0.5, 0.5, 0.3, 0.75])


def pycocotools_outcomes(gt, dets, iou):
    """Per-image counts and per-detection/annotation outcomes from evaluateImg."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        img_counts = {im["id"]: [0, 0, 0] for im in gt["images"]}
        det_out = ["fp"] * len(dets)
        ann_out = ["crowd" if a["iscrowd"] else "missed" for a in gt["annotations"]]
        if not dets:
            for a in gt["annotations"]:
                if not a["iscrowd"]:
                    img_counts[a["image_id"]][2] += 1
            return img_counts, det_out, ann_out
        dt = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, dt, "bbox")
        ev.params.iouThrs = np.array([iou])
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [10000]
        ev.evaluate()
    # loadRes numbers detections 1.. in input order.
    for e in ev.evalImgs:
        if e is None:
            continue
        c = img_counts[e["image_id"]]
        for k, d_id in enumerate(e["dtIds"]):
            matched, ignored = e["dtMatches"][0][k], e["dtIgnore"][0][k]
            if ignored:
                det_out[d_id - 1] = "ignored"
            elif matched:
                det_out[d_id - 1] = "tp"
                c[0] += 1
            else:
                c[1] += 1
        for k, g_id in enumerate(e["gtIds"]):
            if e["gtIgnore"][k]:
                continue
            if e["gtMatches"][0][k]:
                ann_out[g_id - 1] = "matched"
            else:
                c[2] += 1
    return img_counts, det_out, ann_out


def ours(server, gt, dets, iou):
    payload = json.dumps({"iou": iou, "annotations": gt["annotations"], "detections": dets})
    r = subprocess.run([server, "match-detections"], input=payload, capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"match-detections failed: {r.stderr.strip()}")
    out = json.loads(r.stdout)
    counts = {im["id"]: [0, 0, 0] for im in gt["images"]}
    for im in out["images"]:
        counts[im["image_id"]] = [im["tp"], im["fp"], im["fn"]]
    return counts, out["detections"], out["annotations"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="path of the aligndet-server binary")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    passed = failed = 0
    totals = [0, 0, 0]
    ignored = 0
    for case in range(args.cases):
        gt, dets, iou = make_case(rng)
        want = pycocotools_outcomes(gt, dets, iou)
        got = ours(args.server, gt, dets, iou)
        if want == got:
            passed += 1
            for c in want[0].values():
                totals = [t + v for t, v in zip(totals, c)]
            ignored += want[1].count("ignored")
        else:
            failed += 1
            print(f"case {case} (iou {iou}) differs:\n  pycocotools {want}\n  ours        {got}",
                  file=sys.stderr)
    # A malformed input must be refused with a message naming the problem.
    r = subprocess.run([args.server, "match-detections"], input='{"annotations": []}',
                       capture_output=True, text=True, check=False)
    if r.returncode == 0 or "detections" not in r.stderr:
        failed += 1
        print(f"malformed input not refused by name: rc {r.returncode}, {r.stderr!r}",
              file=sys.stderr)
    else:
        passed += 1
    print(f"TP/FP/FN summed over the passing cases: {totals}; detections on crowd regions "
          f"(ignored): {ignored}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
