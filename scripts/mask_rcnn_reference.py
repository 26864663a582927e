#!/usr/bin/env python3
"""Mask R-CNN reference outputs from torchvision for trainer/tests/mask_rcnn_parity.rs (run by the
tests, nothing committed).

    mask_rcnn_reference.py mask_rcnn --out DIR
        DIR/weights.safetensors: maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
        num_classes=5, min_size=256, max_size=512) with randomised batch-norm statistics and the
        box predictor spread out as in faster_rcnn_reference.py; DIR/io.safetensors: two images,
        their eval-mode detections with masks thresholded at 0.5 (uint8, original pixels),
        training targets with elliptic instance masks, and the five training losses. The samplers
        draw as in faster_rcnn_reference.py (`even_draw`, the box branch samples up to 4096, so it takes every proposal).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faster_rcnn_reference import deterministic_sampler_call  # noqa: E402
from torchvision_reference import randomise_norms  # noqa: E402


# Box-branch sampling batch: this model's RPN keeps more proposals than the Faster R-CNN
# reference's, so the box branch samples up to 4096 to take every one of them.
ROI_BATCH = 4096


def sampler_taking_all(self, matched_idxs):
    """`deterministic_sampler_call`, checking that the box branch takes every proposal."""
    if self.batch_size_per_image == ROI_BATCH:
        for m in matched_idxs:
            pos, neg = int((m >= 1).sum()), int((m == 0).sum())
            assert pos <= int(ROI_BATCH * self.positive_fraction) and neg <= ROI_BATCH - pos, (pos, neg)
    return deterministic_sampler_call(self, matched_idxs)


def ellipse_mask(box, height, width):
    """A filled ellipse inscribed in `box` (x1, y1, x2, y2) on a height×width uint8 canvas."""
    x1, y1, x2, y2 = box.tolist()
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return ((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) <= 1.0).to(torch.uint8)


def mask_rcnn(args):
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    det_utils.BalancedPositiveNegativeSampler.__call__ = sampler_taking_all
    torch.manual_seed(args.seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                                  min_size=256, max_size=512).eval()
    randomise_norms(model)
    with torch.no_grad():
        # as in faster_rcnn_reference.py: spread class scores so rankings are not decided by rounding
        pred = model.roi_heads.box_predictor
        pred.cls_score.weight.normal_(0.0, 0.004)
        pred.cls_score.bias.normal_(0.0, 0.5)
        pred.cls_score.bias[0] = -1.0
        pred.bbox_pred.weight.normal_(0.0, 0.002)
        # the untrained mask logits are in the hundreds: scale them to a few units, so that the
        # pasted probabilities (bilinear, then > 0.5) and the loss are in their working range
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.01)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 180)]
    boxes = [
        torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 20.0, 250.0, 90.0], [60.0, 120.0, 90.0, 190.0]]),
        torch.tensor([[10.0, 10.0, 170.0, 200.0], [100.0, 150.0, 140.0, 230.0]]),
    ]
    labels = [torch.tensor([1, 3, 4]), torch.tensor([2, 1])]
    targets = []
    for img, b, lab in zip(images, boxes, labels):
        h, w = img.shape[1:]
        masks = torch.stack([ellipse_mask(bb, h, w) for bb in b])
        targets.append({"boxes": b, "labels": lab, "masks": masks})
    io = {}
    with torch.no_grad():
        dets = model(images)
    for i, (img, d) in enumerate(zip(images, dets)):
        io[f"image{i}"] = img
        for k in ("boxes", "scores", "labels"):
            io[f"{k}{i}"] = d[k]
        io[f"masks{i}"] = (d["masks"][:, 0] > 0.5).to(torch.uint8)
    # training mode with frozen batch norms, as the Rust model's FrozenBn
    model.roi_heads.fg_bg_sampler.batch_size_per_image = ROI_BATCH
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    losses = model(images, targets)
    for i, t in enumerate(targets):
        io[f"target_boxes{i}"] = t["boxes"]
        io[f"target_labels{i}"] = t["labels"]
        io[f"target_masks{i}"] = t["masks"]
    for k, v in losses.items():
        io[k] = v.detach().reshape(1)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(args.out, "io.safetensors"))


def project(args):
    """roi_align with adaptive sampling (sampling_ratio=-1) of binary masks, as
    project_masks_on_boxes calls it, on boxes of many sizes (several sample grids)."""
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    torch.manual_seed(args.seed)
    masks = (torch.rand(3, 90, 130) > 0.5).to(torch.uint8)
    n = 50
    xy = torch.rand(n, 2) * torch.tensor([120.0, 80.0]) - 5.0
    wh = torch.rand(n, 2) * 120.0 + 0.2
    boxes = torch.cat([xy, xy + wh], 1)
    matched = torch.randint(0, 3, (n,))
    io = {"masks": masks, "boxes": boxes, "matched": matched,
          "targets": project_masks_on_boxes(masks, boxes, matched, 28)}
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(args.out, "io.safetensors"))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mask_rcnn")
    m.add_argument("--num-classes", type=int, default=5)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    r = sub.add_parser("project")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    args = p.parse_args()
    {"mask_rcnn": mask_rcnn, "project": project}[args.cmd](args)


if __name__ == "__main__":
    main()
