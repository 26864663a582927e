#!/usr/bin/env python3
"""The miniature semi-supervised table: AlignDet pre-training vs. the image-domain baseline.

For every dataset × detector this creates one experiment through the platform's JSON API
(`POST /api/v1/experiments`): pseudo-boxes (made once per dataset and shared by its detectors),
box-domain pre-training, and for every seed and
labeled fraction a fine-tune from the pre-trained detector ("AlignDet") and one from the
image-domain backbone alone ("baseline"), with the same seed, labeled split, schedule, steps,
batch and augmentation. It polls until every run has finished, printing progress, then prints
for each dataset × detector × fraction the baseline and AlignDet AP (mean ± sample std over
seeds), the margin (AlignDet − baseline) and the per-seed paired differences.

The fine-tunes train on the labeled splits `{fraction}pct_seed{seed}`; the val split is only
evaluated (by the platform, at the end of each fine-tune) and only reported here.

    export ALIGNDET_TOKEN=adt_...   # a personal API token (editor): the account page, or
                                    # aligndet-server tokens create NAME --name semi-table
    scripts/semi_table.py --url http://127.0.0.1:8080 \\
        --datasets 1,2 --detectors fcos,retinanet --fractions 5,10 --seeds 1,2,3 \\
        --pretrain-steps 200 --finetune-steps 300 --batch-size 4 --image-size 256
    scripts/semi_table.py --url ... --experiments 4,5   # only print the table (a viewer's token will do)
    scripts/semi_table.py ... --datasets 2 --detectors fcos --pretrained-run 17 --lr-multiplier 1 \
        --wd-multiplier 1 --image-size 192 --finetune-steps 100 --batch-size 4   # fine-tuning ablation

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request

TERMINAL = {"succeeded", "failed", "cancelled"}


class Api:
    def __init__(self, url: str, token: str):
        self.base = url.rstrip("/") + "/api/v1/"
        self.token = token

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                pass
            raise SystemExit(f"{method} {path}: HTTP {e.code}: {text}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"{method} {path}: {e.reason}") from None

    def experiment(self, exp_id: int):
        return self.call("GET", f"experiments/{exp_id}")


def ints(text: str) -> list[int]:
    return [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]


def words(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def per_detector(text: str) -> dict[str, int]:
    """`256` (every detector, key "*") or `retinanet=256,fcos=2048`."""
    out = {}
    for part in words(text):
        det, sep, value = part.rpartition("=")
        out[det.strip() if sep else "*"] = int(value)
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var)


def fmt(ms, signed: bool = False) -> str:
    if ms is None:
        return "–"
    m, s = ms
    return (f"{m:+.1f}" if signed else f"{m:.1f}") + f" ± {s:.1f}"


MASK_AP = "segm_AP"


def ap_of(run, key: str = "AP") -> float | None:
    """AP (0.5:0.95) ×100 of a succeeded fine-tune, from its final evaluation: box AP, or mask
    AP with key="segm_AP" (the API's `eval` carries it for detectors with masks)."""
    if run.get("status") != "succeeded":
        return None
    ev = run.get("eval") or {}
    ap = ev.get(key)
    if ap is None or ap < 0:
        return None
    return 100.0 * ap


def has_masks(exp) -> bool:
    """Whether a fine-tune of the experiment reported mask AP (Mask R-CNN)."""
    return any(MASK_AP in (r.get("eval") or {}) for r in exp["runs"])


def arms(finetunes, frac, key: str):
    """Baseline and AlignDet mean ± std of one statistic at one labeled fraction, the margin
    of the means, and the per-seed paired differences (seed, Δ) and seeds."""
    by_seed: dict[int, dict[str, float | None]] = {}
    for r in finetunes:
        if r.get("fraction") != frac:
            continue
        by_seed.setdefault(r["seed"], {})[r["role"]] = ap_of(r, key)
    seeds = sorted(by_seed)
    base_v = [v for v in (by_seed[s].get("baseline") for s in seeds) if v is not None]
    ours_v = [v for v in (by_seed[s].get("aligndet") for s in seeds) if v is not None]
    paired = [
        (s, by_seed[s]["aligndet"] - by_seed[s]["baseline"])
        for s in seeds
        if by_seed[s].get("aligndet") is not None and by_seed[s].get("baseline") is not None
    ]
    b, o = mean_std(base_v), mean_std(ours_v)
    margin = None if b is None or o is None else f"{o[0] - b[0]:+.1f}"
    return b, o, margin, paired, seeds


def check_no_val_training(exp) -> None:
    for r in exp["runs"]:
        if r.get("kind") == "finetune" and r.get("train_split") in ("val", None):
            raise SystemExit(
                f"experiment {exp['id']}: run {r['id']} trains on {r.get('train_split')!r}; "
                "the val split is for reporting only"
            )


def progress_line(exps) -> str:
    parts = []
    for e in exps:
        counts: dict[str, int] = {}
        for r in e["runs"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        done = sum(v for k, v in counts.items() if k in TERMINAL)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        parts.append(f"#{e['id']} {done}/{len(e['runs'])} ({detail})")
    return time.strftime("%H:%M:%S ") + " | ".join(parts)


def wait_all(api: Api, ids: list[int], poll: float, timeout: float | None):
    start = time.time()
    last = ""
    while True:
        exps = [api.experiment(i) for i in ids]
        line = progress_line(exps)
        if line[9:] != last:
            print(line, flush=True)
            last = line[9:]
        if all(e["done"] for e in exps):
            return exps
        if timeout is not None and time.time() - start > timeout:
            print("timed out waiting; the table shows the runs finished so far", file=sys.stderr)
            return exps
        time.sleep(poll)


def table(exps) -> str:
    masks = any(has_masks(e) for e in exps)
    header = (
        "dataset", "detector", "labeled", "baseline AP", "AlignDet AP", "margin",
        "paired Δ per seed", "n",
    )
    if masks:
        header += ("baseline mask AP", "AlignDet mask AP", "mask margin")
    rows = []
    for e in sorted(exps, key=lambda e: (e["spec"]["dataset_id"], e["spec"]["detector"], e["id"])):
        check_no_val_training(e)
        spec = e["spec"]
        finetunes = [r for r in e["runs"] if r["role"] in ("aligndet", "baseline")]
        fractions = sorted({r["fraction"] for r in finetunes if r.get("fraction") is not None})
        for frac in fractions:
            b, o, margin, paired, seeds = arms(finetunes, frac, "AP")
            deltas = " ".join(f"s{s}:{d:+.1f}" for s, d in paired) or "–"
            pd = mean_std([d for _, d in paired])
            if pd is not None:
                deltas += f"  (mean {fmt(pd, signed=True)})"
            ds = (e.get("dataset") or {}).get("name") or f"#{spec['dataset_id']}"
            row = (
                ds, spec["detector"], f"{frac}%", fmt(b), fmt(o),
                margin or "–", deltas, f"{len(paired)}/{len(seeds)}",
            )
            if masks:
                mb, mo, mmargin, _, _ = arms(finetunes, frac, MASK_AP) if has_masks(e) else (None,) * 5
                row += (fmt(mb), fmt(mo), mmargin or "–")
            rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append("")
    out.append(
        "AP = COCO AP 0.5:0.95 ×100 on the val split (reported only; fine-tunes train on "
        "{fraction}pct_seed{seed}); mean ± sample std over seeds; margin = AlignDet − baseline "
        "means; paired Δ = AlignDet − baseline at the same seed and split; n = paired seeds / seeds."
    )
    if masks:
        out.append(
            "mask AP = COCO mask AP 0.5:0.95 ×100 (detectors with masks), by the same rules; "
            "mask margin = AlignDet − baseline means."
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="platform address, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", help="a personal API token (default: $ALIGNDET_TOKEN); the worker token is refused")
    p.add_argument("--token-file", help="a file holding a personal API token")
    p.add_argument("--datasets", default="", help="dataset ids, comma list")
    p.add_argument("--detectors", default="fcos,retinanet")
    p.add_argument("--fractions", default="5,10", help="labeled percentages")
    p.add_argument("--seeds", default="1,2,3", help="at least 3 seeds")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--label-free", action="store_true",
                   help="pre-train the backbone on the images too (pretrain_image) instead of ImageNet")
    p.add_argument("--image-steps", type=int)
    p.add_argument("--image-batch-size", type=int)
    p.add_argument("--proposals-max-images", type=int)
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--pretrain-batch-size", type=int)
    p.add_argument("--pretrain-samples", type=per_detector, default={},
                   help="locations/anchors/RoIs the pretext task samples: N for every detector, "
                        "or a list such as retinanet=256 (RetinaNet on a CPU: 256-512)")
    p.add_argument("--proposals-run", type=int,
                   help="reuse this proposals run (succeeded, running or queued) for every detector "
                        "of a single dataset")
    p.add_argument("--pretrained-run", type=int,
                   help="reuse this pretrain_box run (one dataset, one detector): only the fine-tunes "
                        "are made, e.g. to compare learning-rate rules on one pre-training")
    p.add_argument("--image-size", type=int,
                   help="shorter side (px) for fine-tuning and evaluation; the views scale with it")
    p.add_argument("--finetune-steps", type=int)
    p.add_argument("--finetune-batch-size", type=int)
    p.add_argument("--batch-size", type=int, help="both batch sizes at once")
    p.add_argument("--finetune-lr", type=float)
    p.add_argument("--finetune-weight-decay", type=float)
    p.add_argument("--lr-multiplier", type=float,
                   help="the AlignDet arm's lr = base × this (default: the method's 1.5)")
    p.add_argument("--wd-multiplier", type=float,
                   help="the AlignDet arm's weight decay = base × this (default: the method's 0.5)")
    p.add_argument("--name", default="semi", help="experiment name prefix")
    p.add_argument("--experiments", default="", help="only print the table of these experiments")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between progress polls")
    p.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    a = p.parse_args(argv)

    token = a.token or os.environ.get("ALIGNDET_TOKEN", "")
    if a.token_file:
        with open(a.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    if not token:
        sys.exit("a personal API token is needed: --token, --token-file or ALIGNDET_TOKEN "
                 "(create one on the server's /account page)")
    api = Api(a.url, token)

    if a.experiments:
        ids = ints(a.experiments)
        exps = [api.experiment(i) for i in ids]
        print(progress_line(exps))
        print()
        print(table(exps))
        return 0

    datasets, detectors = ints(a.datasets), words(a.detectors)
    fractions, seeds = ints(a.fractions), ints(a.seeds)
    if not datasets:
        p.error("--datasets: give at least one dataset id (or --experiments)")
    if len(seeds) < 3:
        p.error("--seeds: give at least 3 seeds (mean ± std needs them)")
    if a.proposals_run is not None and len(datasets) != 1:
        p.error("--proposals-run: pseudo-boxes belong to one dataset; give one --datasets id")
    if a.pretrained_run is not None and (len(datasets) != 1 or len(detectors) != 1):
        p.error("--pretrained-run: a pre-training belongs to one dataset and detector; give one of each")
    if not detectors or not fractions:
        p.error("--detectors and --fractions must not be empty")

    ids = []
    for ds in datasets:
        # The first detector's experiment makes the pseudo-boxes; the others wait for that run.
        shared_proposals = a.proposals_run
        for det in detectors:
            spec = {
                "name": f"{a.name} d{ds} {det}",
                "dataset_id": ds,
                "detector": det,
                "backbone": a.backbone,
                "label_free": a.label_free,
                "seeds": seeds,
                "fractions": fractions,
            }
            optional = {
                "image_steps": a.image_steps,
                "image_batch_size": a.image_batch_size,
                "proposals_max_images": a.proposals_max_images,
                "pretrain_steps": a.pretrain_steps,
                "pretrain_batch_size": a.pretrain_batch_size or a.batch_size,
                "pretrain_samples": a.pretrain_samples.get(det, a.pretrain_samples.get("*")),
                "image_size": a.image_size,
                "finetune_steps": a.finetune_steps,
                "finetune_batch_size": a.finetune_batch_size or a.batch_size,
                "finetune_lr": a.finetune_lr,
                "finetune_weight_decay": a.finetune_weight_decay,
                "lr_multiplier": a.lr_multiplier,
                "wd_multiplier": a.wd_multiplier,
            }
            spec.update({k: v for k, v in optional.items() if v is not None})
            if a.pretrained_run is not None:
                # the reused run fixed its own pre-training settings (--batch-size sets both)
                for k in [k for k in spec if k.startswith(("pretrain_", "image_steps", "image_batch", "proposals_"))]:
                    del spec[k]
                spec["pretrained_run_id"] = a.pretrained_run
            elif shared_proposals is not None:
                spec["proposals_run_id"] = shared_proposals
            created = api.call("POST", "experiments", spec)
            shared_proposals = shared_proposals or next(
                (r["id"] for r in created["runs"] if r["role"] == "proposals"), None
            )
            print(f"experiment #{created['id']}: dataset {ds}, {det}, {len(created['runs'])} runs "
                  f"({a.url.rstrip('/')}/experiments/{created['id']})", flush=True)
            ids.append(created["id"])

    exps = wait_all(api, ids, a.poll, a.timeout)
    print()
    print(table(exps))
    print(f"\nreprint with: --experiments {','.join(map(str, ids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
