#!/usr/bin/env python3
"""The 12 COCO statistics of a results file by pycocotools 2.0.11, for checking a run's numbers.

Usage: pycocotools_stats.py --gt ANNOTATIONS.json --dt predictions.json [--iou-type bbox|segm]
                            [--splits splits.json --split val] [--max-images N]
                            [--compare eval.json]

--split restricts the evaluation to a split's images (the first --max-images of them, in the
split's order, as a fine-tune's final evaluation with final_eval_max_images does). --compare
prints the largest difference to a run's eval.json (its box stats, or its `segm` stats for
--iou-type segm) and exits non-zero when it is above 1e-9.
"""

import argparse
import contextlib
import io
import json
import sys

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def split_images(path, name, max_images):
    splits = json.load(open(path))
    ids = splits[name] if name in splits else splits["labeled"][name]
    return ids[:max_images] if max_images else ids


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True)
    p.add_argument("--dt", required=True)
    p.add_argument("--iou-type", default="bbox", choices=["bbox", "segm"])
    p.add_argument("--splits")
    p.add_argument("--split")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--compare")
    args = p.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
        dt = gt.loadRes(args.dt)
        ev = COCOeval(gt, dt, args.iou_type)
        if args.split:
            ev.params.imgIds = split_images(args.splits, args.split, args.max_images)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    print(json.dumps({"iou_type": args.iou_type, "images": len(ev.params.imgIds), "stats": stats}))
    if args.compare:
        report = json.load(open(args.compare))
        ours = report["segm"]["stats"] if args.iou_type == "segm" else report["stats"]
        diff = max(abs(a - b) for a, b in zip(ours, stats))
        print(f"largest difference to {args.compare}: {diff:.3g}")
        sys.exit(0 if diff <= 1e-9 else 1)


if __name__ == "__main__":
    main()
