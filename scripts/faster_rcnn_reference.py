#!/usr/bin/env python3
"""Faster R-CNN reference outputs from torchvision for trainer/tests/faster_rcnn_parity.rs (run by
the tests, nothing committed).

    faster_rcnn_reference.py roi_align --out DIR
        DIR/io.safetensors: random maps and RoIs (some partly or wholly outside the map, some
        thinner than a pixel), torchvision.ops.roi_align at several scales (aligned=False,
        sampling_ratio=2), and MultiScaleRoIAlign over a 4-level pyramid.

    faster_rcnn_reference.py faster_rcnn --out DIR
        DIR/weights.safetensors: fasterrcnn_resnet50_fpn(num_classes=5, min_size=256,
        max_size=512) with randomised batch-norm statistics and a predictor whose scores spread
        out; DIR/io.safetensors: two images, their eval-mode detections, training targets and the
        four training losses. The balanced samplers draw deterministically (`even_draw`, the
        rule the Rust test injects), so that both sides sample the same anchors, and the box
        branch samples up to 1024 proposals, so that it takes every proposal of this batch.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_reference import randomise_norms  # noqa: E402


def roi_align(args):
    from collections import OrderedDict

    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops import roi_align as tv_roi_align

    torch.manual_seed(args.seed)
    io = {}
    feats = torch.randn(2, 8, 20, 28)
    io["input"] = feats
    n = 60
    xy = torch.rand(n, 2) * torch.tensor([140.0, 100.0]) - 20.0  # some start left of / above the map
    wh = torch.rand(n, 2) * 80.0
    wh[:8] *= 0.005  # thinner than a map pixel
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[8:12] = torch.tensor([[-60.0, -60.0, -30.0, -40.0], [130.0, 90.0, 200.0, 150.0],
                                [-10.0, 5.0, 30.0, 200.0], [0.0, 0.0, 112.0, 80.0]])
    rois = torch.cat([torch.randint(0, 2, (n, 1)).float(), boxes], 1)
    io["rois"] = rois
    for i, scale in enumerate([1.0, 0.25, 0.125]):
        io[f"out{i}"] = tv_roi_align(feats, rois, (7, 7), spatial_scale=scale, sampling_ratio=2, aligned=False)
    # gradient of a weighted sum of the pooled values with respect to the map
    x = feats.clone().requires_grad_(True)
    io["grad_weights"] = torch.randn(n, 8, 7, 7)
    (tv_roi_align(x, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2) * io["grad_weights"]).sum().backward()
    io["grad"] = x.grad
    io["out_5x3"] = tv_roi_align(feats, rois, (5, 3), spatial_scale=0.25, sampling_ratio=2, aligned=False)

    # MultiScaleRoIAlign: a padded 2-image batch of 256×288 with images 250×288 and 230×200
    image_sizes = [(250, 288), (230, 200)]
    levels = OrderedDict()
    for i, stride in enumerate([4, 8, 16, 32]):
        levels[str(i)] = torch.randn(2, 8, 256 // stride, 288 // stride)
        io[f"level{i}"] = levels[str(i)]
    per_image = []
    for img, (h, w) in enumerate(image_sizes):
        k = 40
        xy = torch.rand(k, 2) * torch.tensor([w * 0.9, h * 0.9])
        side = torch.exp(torch.rand(k, 2) * 5.5) + 1.0  # 2 to ~250 px: every level gets boxes
        b = torch.cat([xy, torch.minimum(xy + side, torch.tensor([float(w), float(h)]))], 1)
        per_image.append(b)
        io[f"boxes{img}"] = b
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    io["multiscale"] = pooler(levels, per_image, image_sizes)
    io["image_sizes"] = torch.tensor(image_sizes)
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(args.out, "io.safetensors"))


# box-branch sampling batch of the training reference (see faster_rcnn)
ROI_BATCH = 1024


def even_draw(num, n):
    """The deterministic draw: `n` of `num` candidates, evenly spread (k·num // n)."""
    return (torch.arange(n, dtype=torch.int64) * num) // n


def deterministic_sampler_call(self, matched_idxs):
    """BalancedPositiveNegativeSampler.__call__ with `even_draw` in place of torch.randperm."""
    pos_idx, neg_idx = [], []
    for m in matched_idxs:
        positive = torch.where(m >= 1)[0]
        negative = torch.where(m == 0)[0]
        num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
        if self.batch_size_per_image == ROI_BATCH:
            assert (num_pos, num_neg) == (positive.numel(), negative.numel()), "the box branch must take all"
        pos_mask = torch.zeros_like(m, dtype=torch.uint8)
        neg_mask = torch.zeros_like(m, dtype=torch.uint8)
        pos_mask[positive[even_draw(positive.numel(), num_pos)]] = 1
        neg_mask[negative[even_draw(negative.numel(), num_neg)]] = 1
        pos_idx.append(pos_mask)
        neg_idx.append(neg_mask)
    return pos_idx, neg_idx


def faster_rcnn(args):
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    det_utils.BalancedPositiveNegativeSampler.__call__ = deterministic_sampler_call
    torch.manual_seed(args.seed)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                                    min_size=256, max_size=512).eval()
    randomise_norms(model)
    with torch.no_grad():
        # Untrained predictors give every class about the same score: spread the logits so that
        # the ranking (and so NMS and the top 100) is not decided by rounding, give the classes
        # different biases so that all labels occur, and keep box deltas moderate.
        pred = model.roi_heads.box_predictor
        pred.cls_score.weight.normal_(0.0, 0.004)
        pred.cls_score.bias.normal_(0.0, 0.5)
        pred.cls_score.bias[0] = -1.0
        pred.bbox_pred.weight.normal_(0.0, 0.002)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 180)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 20.0, 250.0, 90.0], [60.0, 120.0, 90.0, 190.0]]),
         "labels": torch.tensor([1, 3, 4])},
        {"boxes": torch.tensor([[10.0, 10.0, 170.0, 200.0], [100.0, 150.0, 140.0, 230.0]]),
         "labels": torch.tensor([2, 1])},
    ]
    io = {}
    with torch.no_grad():
        dets = model(images)
    for i, (img, d) in enumerate(zip(images, dets)):
        io[f"image{i}"] = img
        for k in ("boxes", "scores", "labels"):
            io[f"{k}{i}"] = d[k]
    # Training mode with the batch norms frozen, as the Rust model's FrozenBn is.
    # The RPN's proposals are ranked by objectness, and proposals whose scores tie to within
    # rounding may come out in either order, which would move an index-based draw. So the box
    # branch samples up to 1024 proposals here: with this batch every proposal is taken (checked
    # in deterministic_sampler_call) and its losses do not depend on the ranking. The RPN
    # samples its fixed anchor grid with the default 256 and the deterministic draw.
    model.roi_heads.fg_bg_sampler.batch_size_per_image = ROI_BATCH
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    losses = model(images, targets)
    for i, t in enumerate(targets):
        io[f"target_boxes{i}"] = t["boxes"]
        io[f"target_labels{i}"] = t["labels"]
    for k, v in losses.items():
        io[k] = v.detach().reshape(1)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(args.out, "io.safetensors"))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("roi_align")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    f = sub.add_parser("faster_rcnn")
    f.add_argument("--num-classes", type=int, default=5)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True)
    args = p.parse_args()
    {"roi_align": roi_align, "faster_rcnn": faster_rcnn}[args.cmd](args)


if __name__ == "__main__":
    main()
