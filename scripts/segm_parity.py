#!/usr/bin/env python3
"""Parity check: `trainer eval --iou-type segm` against pycocotools 2.0.11 (iouType="segm").

Usage: segm_parity.py --trainer PATH [--cases N] [--ops N] [--seed S]

1. Direct mask checks (--ops of them) through the hidden `trainer eval-mask-ops`: for random masks, random
   uncompressed counts (zero-length runs included), random polygons (multi-part, concave,
   partly outside the image, degenerate later parts), merges and crowd IoUs, the
   compressed string, area, toBbox and IoU must equal pycocotools.mask's exactly.
2. Random seeded evaluation cases: ground truth as polygons, uncompressed and compressed RLE,
   crowd regions as RLE, images without ground truth; results as compressed RLE alone (area
   from the mask) or with a bbox (area from the box) and RLE / polygon / no segmentation;
   score ties and more than 100 detections on an image. The 12 stats and per-class values
   must equal pycocotools' within 1e-9.
3. Malformed segmentations must fail with a message naming the annotation or result.

Exits non-zero on any failure; the last line reads "N passed, M failed".
"""

import argparse
import copy
import json
import os
import random
import subprocess
import tempfile

import numpy as np
from pycocotools import mask as mask_utils

import coco_parity

TOLERANCE = 1e-9
IMAGE_SIZES = [(64, 48), (120, 90), (200, 160), (97, 131)]


# ---------------------------------------------------------------- shapes


def star_polygon(rng, cx, cy, radius, decimals):
    """A random star-shaped (often concave) polygon as [x0, y0, x1, y1, ...]."""
    n = rng.randint(3, 12)
    angles = sorted(rng.uniform(0, 2 * np.pi) for _ in range(n))
    pts = []
    for a in angles:
        r = radius * rng.uniform(0.3, 1.0)
        x, y = cx + r * np.cos(a), cy + r * np.sin(a)
        if decimals is not None:
            x, y = round(x, decimals), round(y, decimals)
        pts += [float(x), float(y)]
    return pts


def random_mask(rng, h, w):
    """Union of a few ellipses and rectangles, as a uint8 array."""
    m = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.randint(1, 3)):
        cx, cy = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5)
        rx, ry = rng.uniform(1, w / 2), rng.uniform(1, h / 2)
        if rng.random() < 0.5:
            m |= (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)
        else:
            m |= ((abs(xx - cx) <= rx) & (abs(yy - cy) <= ry)).astype(np.uint8)
    return m


def counts_list(mask):
    """Uncompressed COCO RLE counts (column-major, starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return counts


def compressed(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def shifted(rng, mask):
    dy, dx = rng.randint(-4, 4), rng.randint(-4, 4)
    out = np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    if rng.random() < 0.3:
        out = out & np.roll(out, 1, axis=1)  # erode a little
    return out


# ---------------------------------------------------------------- direct mask checks


def mask_op_requests(rng, count):
    reqs, refs = [], []
    for _ in range(count):
        h, w = rng.randint(1, 40), rng.randint(1, 40)
        kind = rng.choice(["encode", "rle", "segm", "merge", "iou"])
        if kind == "encode":
            m = random_mask(rng, h, w) if rng.random() < 0.7 else (np.array(
                [[rng.random() < 0.3 for _ in range(w)] for _ in range(h)], dtype=np.uint8))
            reqs.append({"op": "encode", "height": h, "width": w,
                         "mask": "".join(str(v) for v in m.flatten(order="F"))})
            refs.append(mask_utils.encode(np.asfortranarray(m)))
        elif kind == "rle":
            counts, left = [], h * w
            while left > 0:
                c = min(left, rng.choice([0, 0, 1, 2, 5, rng.randint(0, h * w)]))
                counts.append(c)
                left -= c
            if rng.random() < 0.3:
                counts.append(0)
            rle = {"size": [h, w], "counts": counts}
            reqs.append({"op": "rle", "rle": rle})
            refs.append(mask_utils.frPyObjects(rle, h, w))
        elif kind == "segm":
            parts = [star_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, max(h, w)),
                                  rng.choice([None, 1, 0])) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.2:  # later parts of one or two points are rasterized too
                parts.append([round(rng.uniform(-2, w + 2), 1) for _ in range(rng.choice([2, 4]))])
            reqs.append({"op": "segm", "height": h, "width": w, "segmentation": parts})
            refs.append(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))
        elif kind == "merge":
            rles = [compressed(random_mask(rng, h, w)) for _ in range(rng.randint(1, 4))]
            intersect = rng.random() < 0.5
            reqs.append({"op": "merge", "rles": rles, "intersect": intersect})
            refs.append(mask_utils.merge(copy.deepcopy(rles), intersect=int(intersect)))
        else:
            dt = [compressed(random_mask(rng, h, w)) for _ in range(rng.randint(1, 4))]
            gt = [compressed(random_mask(rng, h, w)) for _ in range(rng.randint(1, 4))]
            crowd = [rng.random() < 0.4 for _ in gt]
            reqs.append({"op": "iou", "dt": dt, "gt": gt, "iscrowd": crowd})
            refs.append(np.asarray(mask_utils.iou(copy.deepcopy(dt), copy.deepcopy(gt), [int(c) for c in crowd])))
    return reqs, refs


def check_mask_ops(trainer, tmp, seed, count):
    rng = random.Random(seed)
    reqs, refs = mask_op_requests(rng, count)
    path = os.path.join(tmp, "ops.json")
    with open(path, "w") as f:
        json.dump(reqs, f)
    proc = subprocess.run([trainer, "eval-mask-ops", "--input", path], capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"eval-mask-ops failed: {proc.stderr.strip()}"]
    answers = json.loads(proc.stdout)
    problems = []
    for i, (req, ref, ans) in enumerate(zip(reqs, refs, answers)):
        if "error" in ans:
            problems.append(f"op {i} ({req['op']}): rejected: {ans['error']}")
            continue
        if req["op"] == "iou":
            mine = np.asarray(ans["iou"], dtype=np.float64).reshape(ref.shape)
            if not np.array_equal(mine, ref):
                problems.append(f"op {i} (iou): ours {mine.tolist()} pycocotools {ref.tolist()}")
            continue
        ref_counts = ref["counts"].decode() if isinstance(ref["counts"], bytes) else ref["counts"]
        ref_area = int(mask_utils.area(ref))
        ref_bbox = [float(v) for v in mask_utils.toBbox(ref)]
        got = (ans["counts"], list(ans["size"]), ans["area"], [float(v) for v in ans["bbox"]])
        want = (ref_counts, list(ref["size"]), ref_area, ref_bbox)
        if got != want or not ans["roundtrip"]:
            problems.append(f"op {i} ({req['op']}): ours {got} roundtrip={ans['roundtrip']} pycocotools {want}")
    if len(answers) != len(reqs):
        problems.append(f"{len(answers)} answers for {len(reqs)} requests")
    return problems


# ---------------------------------------------------------------- evaluation cases


def make_case(seed):
    rng = random.Random(seed)
    decimals = rng.choice([None, 2, 1, 0])
    num_images = rng.randint(1, 12)
    num_cats = rng.randint(1, 5)
    image_ids = rng.sample(range(1, 10**6), num_images)
    cat_ids = rng.sample(range(1, 500), num_cats)
    crowd_rate = rng.choice([0.0, 0.1, 0.25])
    empty_image_rate = rng.choice([0.0, 0.2, 0.5])
    result_mode = rng.choice(["rle", "rle", "bbox", "bbox", "mixed"])
    images, annotations, detections = [], [], []
    next_ann_id = rng.choice([1, 1000])
    for img_id in image_ids:
        w, h = rng.choice(IMAGE_SIZES)
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.jpg"})
        masks_here = []
        if rng.random() >= empty_image_rate:
            for _ in range(rng.randint(0, 8)):
                cat = rng.choice(cat_ids)
                crowd = rng.random() < crowd_rate
                form = "uncompressed" if crowd else rng.choice(["polygon", "polygon", "uncompressed", "compressed"])
                if form == "polygon":
                    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                    radius = rng.choice([rng.uniform(2, 8), rng.uniform(8, 30), rng.uniform(30, 80)])
                    parts = [star_polygon(rng, cx, cy, radius, decimals)]
                    if rng.random() < 0.25:  # multi-part object
                        parts.append(star_polygon(rng, cx + rng.uniform(-20, 20), cy + rng.uniform(-20, 20),
                                                  radius / 2, decimals))
                    segm = parts
                    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))
                else:
                    mask = random_mask(rng, h, w)
                    segm = {"size": [h, w], "counts": counts_list(mask)} if form == "uncompressed" else compressed(mask)
                rle = mask_utils.encode(np.asfortranarray(mask))
                area = float(mask_utils.area(rle))
                if rng.random() < 0.1:
                    area = rng.choice([1024.0, 9216.0, area * 1.3])  # file areas need not match masks
                ann = {"id": next_ann_id, "image_id": img_id, "category_id": cat,
                       "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": area,
                       "iscrowd": int(crowd), "segmentation": segm}
                next_ann_id += 1
                annotations.append(ann)
                masks_here.append((cat, mask, segm))
        dets_here = []
        for cat, mask, segm in masks_here:
            for _ in range(rng.choice([0, 1, 1, 2])):
                c = cat if rng.random() < 0.85 else rng.choice(cat_ids)
                if isinstance(segm, list) and rng.random() < 0.3:
                    dets_here.append((c, None, segm))  # the exact polygon as a result
                else:
                    dets_here.append((c, shifted(rng, mask), None))
        num_noise = rng.choice([0, 1, 3]) if rng.random() > 0.05 else rng.randint(100, 130)
        for _ in range(num_noise):
            dets_here.append((rng.choice(cat_ids), random_mask(rng, h, w), None))
        if rng.random() < 0.05 and masks_here:
            cat, mask, _ = masks_here[0]
            for _ in range(rng.randint(100, 120)):
                dets_here.append((cat, shifted(rng, mask), None))
        score_decimals = rng.choice([None, 1, 2])
        for cat, mask, polygon in dets_here:
            score = rng.random()
            if score_decimals is not None:
                score = round(score, score_decimals)
            det = {"image_id": img_id, "category_id": cat, "score": score}
            if mask is None:
                rle = mask_utils.merge(mask_utils.frPyObjects(polygon, h, w))
            else:
                rle = mask_utils.encode(np.asfortranarray(mask))
            box = [float(v) for v in mask_utils.toBbox(rle)]
            jittered = [round(v + rng.uniform(-2, 2), 1) for v in box[:2]] + [max(0.0, v + rng.uniform(-2, 2)) for v in box[2:]]
            if result_mode == "mixed" and rng.random() < 0.5:
                det["bbox"] = jittered  # ignored: the first result decides that areas come from masks
            if result_mode == "bbox":
                det["bbox"] = jittered
                form = rng.choice(["compressed", "uncompressed", "polygon", "none"])
                if polygon is not None and form in ("polygon", "none"):
                    det["segmentation"] = polygon
                elif mask is not None and form == "uncompressed":
                    det["segmentation"] = {"size": [h, w], "counts": counts_list(mask)}
                elif form != "none":
                    det["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
            else:
                det["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
            detections.append(det)
    rng.shuffle(detections)
    if result_mode == "mixed" and detections:
        detections.sort(key=lambda d: "bbox" in d)  # the first result has no bbox
    if not detections:  # pycocotools cannot load an empty results list
        w, h = images[0]["width"], images[0]["height"]
        detections.append({"image_id": image_ids[0], "category_id": cat_ids[0], "score": 0.5,
                           "segmentation": compressed(random_mask(rng, h, w))})
    categories = [{"id": c, "name": f"class_{c}"} for c in cat_ids]
    rng.shuffle(categories)
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, detections


def pycocotools_eval(gt, dets):
    return coco_parity.pycocotools_eval(gt, dets, "segm")


def run_trainer(trainer, gt_path, dt_path, threads=None):
    return coco_parity.run_trainer_eval(trainer, gt_path, dt_path, "segm", threads)


def write_case(tmp, gt, dets):
    gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    with open(dt_path, "w") as f:
        f.write(dets if isinstance(dets, str) else json.dumps(dets))
    return gt_path, dt_path


def check_case(trainer, tmp, seed):
    gt, dets = make_case(seed)
    proc = run_trainer(trainer, *write_case(tmp, gt, dets), threads=1 + seed % 2)
    if proc.returncode != 0:
        return f"trainer failed: {proc.stderr.strip()}", 0.0
    ours = json.loads(proc.stdout)
    ref_stats, ref_per_class = pycocotools_eval(gt, dets)
    worst = max(abs(a - b) for a, b in zip(ours["stats"], ref_stats))
    if worst > TOLERANCE:
        return f"stats differ: ours {ours['stats']} pycocotools {ref_stats}", worst
    for entry in ours["per_class"]:
        mine = [entry["ap"], entry["ap50"], entry["ap75"], entry["ar100"]]
        ref = ref_per_class[entry["category_id"]]
        worst = max([worst] + [abs(a - b) for a, b in zip(mine, ref)])
        if worst > TOLERANCE:
            return f"per-class differs for category {entry['category_id']}: ours {mine} pycocotools {ref}", worst
    return None, worst


# ---------------------------------------------------------------- malformed inputs


def check_malformed(trainer, tmp):
    """Returns a list of (name, failure message or None)."""
    img = {"id": 7, "width": 20, "height": 10}
    cat = {"id": 3, "name": "thing"}

    def gt_with(segm, **image):
        ann = {"id": 41, "image_id": 7, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
               "segmentation": segm}
        return {"images": [dict(img, **image)], "categories": [cat], "annotations": [ann]}

    good_gt = gt_with([[0, 0, 5, 0, 5, 5]])
    counts = compressed(random_mask(random.Random(1), 10, 20))["counts"]
    good_dt = {"image_id": 7, "category_id": 3, "score": 0.9, "segmentation": {"size": [10, 20], "counts": counts}}
    cases = [
        ("odd polygon", gt_with([[0, 0, 5, 0, 5]]), [good_dt], ["gt.json", "id 41", "even"]),
        ("flat polygon list", gt_with([0, 0, 5, 0, 5, 5]), [good_dt], ["gt.json", "id 41", "list of lists"]),
        ("two-point first polygon", gt_with([[0, 0, 5, 5]]), [good_dt], ["gt.json", "id 41", "at least 3 points"]),
        ("empty polygon list", gt_with([]), [good_dt], ["gt.json", "id 41", "empty"]),
        ("counts do not cover the mask", gt_with({"size": [10, 20], "counts": [3, 4]}), [good_dt],
         ["gt.json", "id 41", "200 pixels"]),
        ("negative count", gt_with({"size": [10, 20], "counts": [3, -4]}), [good_dt], ["gt.json", "id 41", "counts"]),
        ("polygon without image size", gt_with([[0, 0, 5, 0, 5, 5]], width=None), [good_dt],
         ["gt.json", "id 41", "height"]),
        ("segmentation is a string", gt_with("abc"), [good_dt], ["gt.json", "id 41", "polygons or an RLE"]),
        ("bad compressed character", good_gt, [good_dt, dict(good_dt, segmentation={"size": [10, 20], "counts": "0P T"})],
         ["dt.json", "index 1", "outside"]),
        ("truncated compressed counts", good_gt, [good_dt, dict(good_dt, segmentation={"size": [10, 20], "counts": "0Pd"})],
         ["dt.json", "index 1", "middle of a number"]),
        ("RLE size differs from image", good_gt, [good_dt, dict(good_dt, segmentation={"size": [20, 10], "counts": counts})],
         ["dt.json", "index 1", "differs"]),
        ("missing segmentation", good_gt, [good_dt, {"image_id": 7, "category_id": 3, "score": 0.5}],
         ["dt.json", "index 1", "segmentation"]),
        ("missing bbox after a bbox result", good_gt, [dict(good_dt, bbox=[0, 0, 2, 2]), good_dt],
         ["dt.json", "index 1", "bbox"]),
        ("unknown image", good_gt, [good_dt, dict(good_dt, image_id=8)], ["dt.json", "index 1", "image_id 8"]),
    ]
    results = []
    for name, gt, dets, expected in cases:
        gt = json.loads(json.dumps(gt).replace('"width": null, ', ""))
        proc = run_trainer(trainer, *write_case(tmp, gt, dets))
        message = proc.stderr.strip()
        if proc.returncode == 0:
            results.append((name, "exit status 0"))
        elif "panicked" in message or not all(s in message for s in expected):
            results.append((name, f"message {message!r} lacks one of {expected}"))
        else:
            results.append((name, None))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", required=True, help="path to the trainer binary")
    # Each case starts the trainer (~0.5 s: it links libtorch), so the default stays small.
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()

    tally = coco_parity.Tally()
    with tempfile.TemporaryDirectory() as tmp:
        for problem in check_mask_ops(args.trainer, tmp, args.seed, args.ops) or [None]:
            tally.record("mask ops", problem)
        tally.random_cases(check_case, args.trainer, tmp, args.seed, args.cases)
        tally.malformed(check_malformed(args.trainer, tmp))
    tally.finish(f"{args.cases} cases; largest |stat difference|: {{worst:.3g}}")

if __name__ == "__main__":
    main()
