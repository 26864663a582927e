#!/usr/bin/env python3
"""Benchmark our selective search (the `trainer proposals` CLI) against OpenCV's fast mode.

Both run on one thread over the same images: NEON tree-crown 400x400 tiles (a COCO set from
--coco/--images, the platform's demo set, or tiles cut here from deepforest's VOC data) and a
few synthetic scenes with known boxes. Prints per-image median times, the speed ratio, and GT
recall at IoU 0.5 for the top 100 / 300 / 1000 and all boxes.

Needs: numpy, pillow, opencv-contrib-python-headless (in the AlignDet Studio venv).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CACHE = Path("/root/.cache/aligndet-studio")
DEMO_NEON = CACHE / "demo" / "neon"
WHEELS = CACHE / "wheels"
NEON_SCENES = [
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "OSBS_029",
    "SOAP_061",
]
COUNTS = [100, 300, 1000, None]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data sets

def load_coco(annotations, images_dir):
    data = json.loads(Path(annotations).read_text())
    gt = {}
    for a in data.get("annotations", []):
        if not a.get("iscrowd", 0):
            gt.setdefault(a["image_id"], []).append(a["bbox"])
    return [(Path(images_dir) / im["file_name"], gt.get(im["id"], [])) for im in data["images"]]


def deepforest_data_dir():
    """The deepforest package's data folder, downloading the wheel if needed."""
    target = WHEELS / "deepforest-data"
    data = target / "deepforest" / "data"
    if data.is_dir():
        return data
    WHEELS.mkdir(parents=True, exist_ok=True)
    wheels = sorted(WHEELS.glob("deepforest-2.1.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "deepforest==2.1.0",
                        "-d", str(WHEELS)], check=True)
        wheels = sorted(WHEELS.glob("deepforest-2.1.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if name.startswith("deepforest/data/"):
                z.extract(name, target)
    return data


def voc_boxes(xml_path):
    root = ET.parse(xml_path).getroot()
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1, y1))
    return boxes


def neon_tiles(out_dir, tile=400):
    """Non-overlapping tile x tile crops of the deepforest NEON scenes with their clipped boxes.
    A box is kept in a tile when at least half of its area lies inside."""
    out_dir = Path(out_dir)
    index = out_dir / "tiles.json"
    if index.exists():
        return [(out_dir / f, b) for f, b in json.loads(index.read_text())]
    data = deepforest_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for scene in NEON_SCENES:
        img = Image.open(data / f"{scene}.png").convert("RGB")
        boxes = voc_boxes(data / f"{scene}.xml")
        for ty in range(0, img.height - tile + 1, tile):
            for tx in range(0, img.width - tile + 1, tile):
                kept = []
                for x0, y0, x1, y1 in boxes:
                    cx0, cy0 = max(x0, tx), max(y0, ty)
                    cx1, cy1 = min(x1, tx + tile), min(y1, ty + tile)
                    if cx1 <= cx0 or cy1 <= cy0:
                        continue
                    if (cx1 - cx0) * (cy1 - cy0) < 0.5 * (x1 - x0) * (y1 - y0):
                        continue
                    kept.append([cx0 - tx, cy0 - ty, cx1 - cx0, cy1 - cy0])
                if not kept:
                    continue
                name = f"{scene}_{tx}_{ty}.png"
                img.crop((tx, ty, tx + tile, ty + tile)).save(out_dir / name)
                items.append((name, kept))
    index.write_text(json.dumps(items))
    return [(out_dir / f, b) for f, b in items]


def synthetic_scenes(out_dir, count, size=400, seed=0):
    """Random rectangles and ellipses on a noisy two-tone background; boxes are exact."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        bg = tuple(rng.randrange(40, 200) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        # A second background tone so the background is not a single flat region.
        draw.rectangle([0, rng.randrange(size // 2, size), size, size],
                       fill=tuple(min(255, c + 30) for c in bg))
        boxes = []
        for _ in range(rng.randrange(4, 10)):
            w, h = rng.randrange(16, 160), rng.randrange(16, 160)
            x, y = rng.randrange(0, size - w), rng.randrange(0, size - h)
            colour = tuple(rng.randrange(0, 256) for _ in range(3))
            if rng.random() < 0.5:
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
            else:
                draw.ellipse([x, y, x + w - 1, y + h - 1], fill=colour)
            # Shapes drawn later may hide parts of earlier ones; the box stays the full shape,
            # which makes occluded shapes hard for both methods alike.
            boxes.append([x, y, w, h])
        arr = np.asarray(img).astype(np.int16)
        arr = np.clip(arr + nrng.normal(0, 18, arr.shape), 0, 255).astype(np.uint8)
        path = out_dir / f"synthetic_{i:02d}.png"
        Image.fromarray(arr).save(path)
        items.append((path, boxes))
    return items


# ---------------------------------------------------------------- methods

def run_ours(trainer, image, strategy, seed, out_json, extra=()):
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([trainer, "proposals", "--image", str(image), "--strategy", strategy,
                           "--seed", str(seed), "--out", out_json, *extra],
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"trainer failed on {image}: {proc.stderr.strip()}")
    # The CLI also reports the time of selective search alone ("... in 0.123 s ...").
    words = proc.stdout.split()
    algo = float(words[words.index("in") + 1]) if "in" in words else elapsed
    return elapsed, algo, json.loads(Path(out_json).read_text())


def run_opencv(image):
    import cv2
    img = cv2.imread(str(image))
    start = time.perf_counter()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(img)
    ss.switchToSelectiveSearchFast()
    rects = ss.process()
    elapsed = time.perf_counter() - start
    return elapsed, [list(map(int, r)) for r in rects]


# ---------------------------------------------------------------- recall

def best_iou_prefix(gt, proposals):
    """best[g, n-1] = best IoU of GT g among the first n proposals."""
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    if len(g) == 0 or len(p) == 0:
        return np.zeros((len(g), max(len(p), 1)))
    ix = np.minimum(g[:, None, 0] + g[:, None, 2], p[None, :, 0] + p[None, :, 2]) - \
        np.maximum(g[:, None, 0], p[None, :, 0])
    iy = np.minimum(g[:, None, 1] + g[:, None, 3], p[None, :, 1] + p[None, :, 3]) - \
        np.maximum(g[:, None, 1], p[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = g[:, None, 2] * g[:, None, 3] + p[None, :, 2] * p[None, :, 3] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return np.maximum.accumulate(iou, axis=1)


def recall_at(results, count, threshold=0.5):
    hit = total = 0
    for gt, proposals in results:
        if not gt:
            continue
        best = best_iou_prefix(gt, proposals)
        n = len(proposals) if count is None else min(count, len(proposals))
        total += len(gt)
        if n > 0:
            hit += int((best[:, n - 1] >= threshold).sum())
    return hit / total if total else float("nan")


# ---------------------------------------------------------------- main

def bench(name, items, args):
    import cv2
    cv2.setNumThreads(1)
    ours_t, ours_algo, cv_t, ours_res, cv_res, ours_n, cv_n = [], [], [], [], [], [], []
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    cache_path = Path(args.work_dir) / "opencv_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        out_json = str(Path(tmp) / "boxes.json")
        for path, gt in items:
            times_o, algo_o, times_c = [], [], []
            for _ in range(args.repeats):
                t, algo, boxes_o = run_ours(args.trainer, path, args.strategy, args.seed, out_json,
                                     args.extra.split())
                times_o.append(t)
                algo_o.append(algo)
                cached = cache.get(str(path)) if args.reuse_opencv else None
                if cached:
                    t, boxes_c = cached
                else:
                    t, boxes_c = run_opencv(path)
                    cache[str(path)] = (t, boxes_c)
                times_c.append(t)
            ours_t.append(statistics.median(times_o))
            ours_algo.append(statistics.median(algo_o))
            cv_t.append(statistics.median(times_c))
            ours_res.append((gt, boxes_o))
            cv_res.append((gt, boxes_c))
            ours_n.append(len(boxes_o))
            cv_n.append(len(boxes_c))
            log(f"  {path.name}: ours {ours_t[-1]:.3f} s / {len(boxes_o)} boxes, "
                f"opencv {cv_t[-1]:.3f} s / {len(boxes_c)} boxes")
    cache_path.write_text(json.dumps(cache))
    mo, mc = statistics.median(ours_t), statistics.median(cv_t)
    print(f"\n== {name}: {len(items)} images, {sum(len(g) for _, g in items)} GT boxes ==")
    ma = statistics.median(ours_algo)
    print(f"median time per image (one thread): ours ({args.strategy}) {mo:.3f} s "
          f"(whole process incl. start, decode and JSON; {ma:.3f} s selective search alone), "
          f"OpenCV fast {mc:.3f} s (process() alone), speed-up x{mc / mo:.2f} "
          f"(x{mc / ma:.2f} algorithm to algorithm)")
    print(f"mean boxes per image: ours {np.mean(ours_n):.0f}, OpenCV {np.mean(cv_n):.0f}")
    header = "".join(f"{('top ' + str(c)) if c else 'all':>10}" for c in COUNTS)
    print(f"recall@0.5       {header}")
    for label, res in (("ours", ours_res), ("OpenCV fast", cv_res)):
        print(f"{label:<17}" + "".join(f"{recall_at(res, c):>10.3f}" for c in COUNTS))
    return {"images": len(items), "ours_median_s": mo, "ours_algorithm_median_s": ma,
            "opencv_median_s": mc,
            "speedup": mc / mo, "ours_boxes": float(np.mean(ours_n)),
            "opencv_boxes": float(np.mean(cv_n)),
            "ours_recall50": {str(c): recall_at(ours_res, c) for c in COUNTS},
            "opencv_recall50": {str(c): recall_at(cv_res, c) for c in COUNTS}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", required=True, help="path of the trainer binary")
    ap.add_argument("--coco", help="COCO annotations of a NEON-like tile set")
    ap.add_argument("--images", help="image folder of --coco")
    ap.add_argument("--strategy", default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", default="", help="extra arguments for `trainer proposals`, "
                    "e.g. '--strategy-file my_strategy.json'")
    ap.add_argument("--reuse-opencv", action="store_true",
                    help="reuse OpenCV's times and boxes from an earlier run (work dir cache), "
                    "handy when only our side changed")
    ap.add_argument("--repeats", type=int, default=3, help="runs per image; the median counts")
    ap.add_argument("--synthetic", type=int, default=6, help="number of synthetic scenes (0: none)")
    ap.add_argument("--max-images", type=int, default=0, help="cap on NEON images (0: all)")
    ap.add_argument("--work-dir", default=str(CACHE / "bench-proposals"))
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()

    if args.coco:
        if not args.images:
            ap.error("--coco needs --images")
        neon = load_coco(args.coco, args.images)
    elif (DEMO_NEON / "annotations.json").exists():
        neon = load_coco(DEMO_NEON / "annotations.json", DEMO_NEON / "images")
    else:
        neon = neon_tiles(Path(args.work_dir) / "neon_tiles")
    if args.max_images:
        neon = neon[: args.max_images]
    # A --coco set is named after its folder (the demo's neon/ or synthetic/).
    name = "NEON tree crowns"
    if args.coco:
        name = f"{Path(args.coco).resolve().parent.name} (--coco)"
    summary = {"neon": bench(name, neon, args)}
    if args.synthetic:
        synth = synthetic_scenes(Path(args.work_dir) / "synthetic", args.synthetic)
        summary["synthetic"] = bench("synthetic scenes", synth, args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
