"""What eval_parity.py (boxes) and segm_parity.py (masks) share: pycocotools' statistics of a case,
`trainer eval` on a case, and the run over random cases and malformed inputs that counts what
passed and exits non-zero when anything failed.
"""

import contextlib
import copy
import io
import subprocess
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycocotools_eval(gt, dets, iou_type):
    """pycocotools' 12 summary statistics and, per category, [AP, AP50, AP75, AR100] over all areas."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    recall = ev.eval["recall"]  # [T, K, A, M]

    def mean_valid(a):
        a = a[a > -1]
        return -1.0 if a.size == 0 else float(np.mean(a))

    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        per_class[cat] = [
            mean_valid(precision[:, :, k, 0, -1]),
            mean_valid(precision[0, :, k, 0, -1]),
            mean_valid(precision[5, :, k, 0, -1]),
            mean_valid(recall[:, k, 0, -1]),
        ]
    return [float(s) for s in ev.stats], per_class


def run_trainer_eval(trainer, gt_path, dt_path, iou_type, threads=None):
    """`trainer eval` on a ground-truth file and a results file; the finished process."""
    cmd = [trainer, "eval", "--iou-type", iou_type, "--gt", gt_path, "--dt", dt_path]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.run(cmd, capture_output=True, text=True)


class Tally:
    """Checks passed and failed; a failure is printed with its label as it happens."""

    def __init__(self):
        self.passed = self.failed = 0
        self.worst = 0.0

    def record(self, label, problem):
        if problem:
            self.failed += 1
            print(f"{label}: FAIL {problem}")
        else:
            self.passed += 1

    def random_cases(self, check_case, trainer, tmp, first_seed, cases):
        """`check_case(trainer, tmp, seed)` → (problem or None, largest stat difference)."""
        for seed in range(first_seed, first_seed + cases):
            try:
                problem, diff = check_case(trainer, tmp, seed)
            except Exception as e:  # a crash in one case is a failure, not the end of the run
                problem, diff = f"{type(e).__name__}: {e}", 0.0
            self.worst = max(self.worst, diff)
            self.record(f"case seed={seed}", problem)

    def malformed(self, results):
        """`results`: (name, problem or None) of each malformed input."""
        for name, problem in results:
            self.record(f"malformed input '{name}'", problem)

    def finish(self, summary):
        print(summary.format(worst=self.worst))
        print(f"{self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)
