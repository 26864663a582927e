#!/usr/bin/env python3
"""Parity check: `trainer eval` against pycocotools 2.0.11 on random COCO bbox sets.

Usage: eval_parity.py --trainer PATH [--cases N] [--seed S]

Generates seeded random ground-truth/detection sets that exercise crowd regions, images
without ground truth, categories without detections (or without ground truth), tiny /
medium / large objects and areas on the range boundaries, score ties, more than 100
detections on an image, non-contiguous ids and detections on images without ground truth.
For every case the 12 summary stats (and per-class AP/AP50/AP75/AR100) must agree with
pycocotools within 1e-9. A few malformed inputs must fail with a message naming the
problem. Exits non-zero on any failure; the last line reads "N passed, M failed".
"""

import argparse
import json
import os
import random
import tempfile

import coco_parity


TOLERANCE = 1e-9


def rand_box(rng, img_w, img_h, size_kind, decimals):
    """A box whose area falls in the requested bucket (or on a bucket boundary)."""
    if size_kind == "tiny":
        w, h = rng.uniform(0.5, 12), rng.uniform(0.5, 12)
    elif size_kind == "small":
        w, h = rng.uniform(4, 32), rng.uniform(4, 32)
    elif size_kind == "medium":
        w, h = rng.uniform(32, 96), rng.uniform(28, 96)
    elif size_kind == "boundary":
        w, h = rng.choice([(32, 32), (96, 96), (16, 64), (48, 192)])
    else:
        w, h = rng.uniform(96, 400), rng.uniform(90, 300)
    x, y = rng.uniform(0, max(1.0, img_w - w)), rng.uniform(0, max(1.0, img_h - h))
    box = [x, y, w, h]
    if decimals is not None:
        box = [round(v, decimals) for v in box]
    return box


def jitter(rng, box, amount, decimals):
    x, y, w, h = box
    s = max(w, h) * amount
    nx, ny = x + rng.gauss(0, s), y + rng.gauss(0, s)
    nw, nh = max(0.0, w + rng.gauss(0, s)), max(0.0, h + rng.gauss(0, s))
    out = [nx, ny, nw, nh]
    if decimals is not None:
        out = [round(v, decimals) for v in out]
    return out


def make_case(seed):
    rng = random.Random(seed)
    decimals = rng.choice([None, 2, 1, 0])
    # Every 10th case is larger, so each category spans several parallel work chunks.
    num_images = rng.randint(100, 220) if seed % 10 == 0 else rng.randint(1, 25)
    num_cats = rng.randint(1, 8)
    image_ids = rng.sample(range(1, 10**6), num_images)
    cat_ids = rng.sample(range(1, 500), num_cats)
    crowd_rate = rng.choice([0.0, 0.05, 0.2])
    empty_image_rate = rng.choice([0.0, 0.2, 0.5])
    sizes = ["tiny", "small", "medium", "large", "boundary"]
    size_weights = [rng.random() + 0.05 for _ in sizes]
    # Some categories get no ground truth at all, some no detections.
    cats_without_gt = set(c for c in cat_ids if rng.random() < 0.15)
    cats_without_dt = set(c for c in cat_ids if rng.random() < 0.15)
    gt_cats = [c for c in cat_ids if c not in cats_without_gt] or cat_ids[:1]

    images, annotations, detections = [], [], []
    next_ann_id = rng.choice([1, 1, 1, 0, 1000])  # id 0 exercises pycocotools' truthiness quirk
    for img_id in image_ids:
        img_w, img_h = rng.choice([(640, 480), (1333, 800), (300, 200)])
        images.append({"id": img_id, "width": img_w, "height": img_h, "file_name": f"{img_id}.jpg"})
        gts_here = []
        if rng.random() >= empty_image_rate:
            for _ in range(rng.randint(0, 12)):
                cat = rng.choice(gt_cats)
                kind = rng.choices(sizes, size_weights)[0]
                box = rand_box(rng, img_w, img_h, kind, decimals)
                area_mode = rng.random()
                if area_mode < 0.6:
                    area = box[2] * box[3]
                elif area_mode < 0.9:
                    area = box[2] * box[3] * rng.uniform(0.5, 1.0)  # like a polygon's area
                else:
                    area = rng.choice([1024.0, 9216.0, 1024.0000001, 9215.999])
                ann = {
                    "id": next_ann_id,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": area,
                    "iscrowd": 1 if rng.random() < crowd_rate else 0,
                    "segmentation": [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3]]],
                }
                if rng.random() < 0.05:
                    ann["ignore"] = 1  # pycocotools overwrites this with iscrowd
                next_ann_id += 1
                annotations.append(ann)
                gts_here.append(ann)
        # Detections: jittered copies of ground truth (some with the wrong class), plus noise.
        dets_here = []
        for g in gts_here:
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                cat = g["category_id"] if rng.random() < 0.85 else rng.choice(cat_ids)
                dets_here.append((cat, jitter(rng, g["bbox"], rng.choice([0.02, 0.08, 0.2]), decimals)))
        num_noise = rng.choice([0, 1, 3, 8]) if rng.random() > 0.05 else rng.randint(100, 160)
        for _ in range(num_noise):
            kind = rng.choices(sizes, size_weights)[0]
            dets_here.append((rng.choice(cat_ids), rand_box(rng, img_w, img_h, kind, decimals)))
        if rng.random() < 0.03 and gts_here:
            # Many detections of one class on one image: exceeds maxDets=100.
            g = gts_here[0]
            for _ in range(rng.randint(100, 140)):
                dets_here.append((g["category_id"], jitter(rng, g["bbox"], 0.1, decimals)))
        score_decimals = rng.choice([None, 1, 2, 3])
        for cat, box in dets_here:
            if cat in cats_without_dt:
                continue
            score = rng.random()
            if score_decimals is not None:
                score = round(score, score_decimals)  # creates ties
            if rng.random() < 0.02:
                box[2] = 0.0  # degenerate box
            detections.append({"image_id": img_id, "category_id": cat, "bbox": box, "score": score})
    rng.shuffle(detections)
    if not detections:  # pycocotools cannot load an empty results list
        detections.append({"image_id": image_ids[0], "category_id": cat_ids[0], "bbox": [1, 1, 5, 5], "score": 0.5})
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in cat_ids]
    rng.shuffle(categories)
    rng.shuffle(images)
    gt = {"info": {"description": f"case {seed}"}, "images": images, "annotations": annotations, "categories": categories}
    return gt, detections


def pycocotools_eval(gt, dets):
    return coco_parity.pycocotools_eval(gt, dets, "bbox")


def run_trainer(trainer, gt_path, dt_path, threads=None):
    return coco_parity.run_trainer_eval(trainer, gt_path, dt_path, "bbox", threads)


def close(a, b):
    return abs(a - b) <= TOLERANCE


def check_case(trainer, tmp, seed):
    gt, dets = make_case(seed)
    gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    with open(dt_path, "w") as f:
        json.dump(dets, f)
    proc = run_trainer(trainer, gt_path, dt_path, threads=1 + seed % 2)
    if proc.returncode != 0:
        return f"trainer failed: {proc.stderr.strip()}", 0.0
    ours = json.loads(proc.stdout)
    ref_stats, ref_per_class = pycocotools_eval(gt, dets)
    worst = max(abs(a - b) for a, b in zip(ours["stats"], ref_stats))
    bad = [i for i, (a, b) in enumerate(zip(ours["stats"], ref_stats)) if not close(a, b)]
    if bad:
        return f"stats differ at {bad}: ours {ours['stats']} pycocotools {ref_stats}", worst
    for entry in ours["per_class"]:
        mine = [entry["ap"], entry["ap50"], entry["ap75"], entry["ar100"]]
        ref = ref_per_class[entry["category_id"]]
        if not all(close(a, b) for a, b in zip(mine, ref)):
            return f"per-class differs for category {entry['category_id']}: ours {mine} pycocotools {ref}", worst
    return None, worst


MALFORMED = [
    # (name, detections text or object, substrings the error must contain)
    ("unknown image id", [{"image_id": 999999999, "category_id": None, "bbox": [1, 1, 5, 5], "score": 0.5}],
     ["dt.json", "index 1", "image_id 999999999"]),
    ("unknown category id", [{"image_id": None, "category_id": 123456, "bbox": [1, 1, 5, 5], "score": 0.5}],
     ["dt.json", "index 1", "category_id 123456"]),
    ("negative width", [{"image_id": None, "category_id": None, "bbox": [1, 1, -5, 5], "score": 0.5}],
     ["dt.json", "index 1", "negative"]),
    ("NaN score", '{"image_id": IMG, "category_id": CAT, "bbox": [1, 1, 5, 5], "score": NaN}',
     ["dt.json", "detection at index 1", "NaN"]),
    ("infinite score", '{"image_id": IMG, "category_id": CAT, "bbox": [1, 1, 5, 5], "score": 1e999}',
     ["dt.json", "detection at index 1", "out of range"]),
    ("NaN size", '{"image_id": IMG, "category_id": CAT, "bbox": [1, 1, NaN, 5], "score": 0.5}',
     ["dt.json", "detection at index 1", "NaN"]),
    ("missing score", [{"image_id": None, "category_id": None, "bbox": [1, 1, 5, 5]}],
     ["dt.json", "index 1", "score"]),
    ("missing bbox", [{"image_id": None, "category_id": None, "score": 0.5}],
     ["dt.json", "index 1", "bbox"]),
    ("short bbox", [{"image_id": None, "category_id": None, "bbox": [1, 1, 5], "score": 0.5}],
     ["dt.json", "index 1", "length"]),
    ("broken JSON", "TRUNCATE", ["dt.json", "JSON"]),
    ("not an array", 'RAW:{"image_id": 1}', ["dt.json"]),
]


def check_malformed(trainer, tmp):
    """Returns a list of (name, failure message or None)."""
    gt, dets = make_case(12345)
    img, cat = gt["images"][0]["id"], gt["categories"][0]["id"]
    good = {"image_id": img, "category_id": cat, "bbox": [1, 1, 5, 5], "score": 0.9}
    gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    results = []
    for name, bad, expected in MALFORMED:
        if bad == "TRUNCATE":
            text = json.dumps([good, good])[:-7]
        elif isinstance(bad, str) and bad.startswith("RAW:"):
            text = bad[len("RAW:"):]
        elif isinstance(bad, str):
            text = "[" + json.dumps(good) + ", " + bad.replace("IMG", str(img)).replace("CAT", str(cat)) + "]"
        else:
            entry = dict(bad[0])
            for key, value in (("image_id", img), ("category_id", cat)):
                if key in entry and entry[key] is None:
                    entry[key] = value
            text = json.dumps([good, entry])
        with open(dt_path, "w") as f:
            f.write(text)
        proc = run_trainer(trainer, gt_path, dt_path)
        message = proc.stderr.strip()
        if proc.returncode == 0:
            results.append((name, "exit status 0"))
        elif not all(s in message for s in expected):
            results.append((name, f"message {message!r} lacks one of {expected}"))
        else:
            results.append((name, None))
    # A broken ground-truth file must name that file.
    with open(gt_path, "w") as f:
        f.write('{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, -3, 2]}]}')
    with open(dt_path, "w") as f:
        json.dump([good], f)
    proc = run_trainer(trainer, gt_path, dt_path)
    ok = proc.returncode != 0 and "gt.json" in proc.stderr and "annotation at index 0" in proc.stderr
    results.append(("negative ground-truth size", None if ok else f"got {proc.returncode}: {proc.stderr.strip()!r}"))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", required=True, help="path to the trainer binary")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()

    tally = coco_parity.Tally()
    with tempfile.TemporaryDirectory() as tmp:
        tally.random_cases(check_case, args.trainer, tmp, args.seed, args.cases)
        tally.malformed(check_malformed(args.trainer, tmp))
    tally.finish("largest |stat difference| over random cases: {worst:.3g}")

if __name__ == "__main__":
    main()
