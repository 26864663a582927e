#!/usr/bin/env python3
"""RetinaNet reference outputs from torchvision for trainer/tests/retinanet_parity.rs (run by the
test with the setup's venv; nothing is committed).

    retinanet_reference.py detect --out DIR   # eval-mode detections on 2 images
    retinanet_reference.py losses --out DIR   # train-mode losses on 3 images with given targets

Both write DIR/weights.safetensors (the state dict of torchvision's `retinanet_resnet50_fpn`,
num_classes=5, min_size=256, max_size=512, with frozen batch norms whose statistics are
randomised so that they matter) and DIR/io.safetensors (the images and what torchvision
returned; for `losses` also the targets, boxes in original pixels).
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

NUM_CLASSES = 5


def freeze_norms(module):
    """Swap every BatchNorm2d for a FrozenBatchNorm2d (the detection default with pretrained
    weights), so that train mode and eval mode compute the same body."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_norms(child)


def build(seed):
    torch.manual_seed(seed)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                   min_size=256, max_size=512)
    freeze_norms(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.copy_(torch.randn_like(m.weight) * 0.1 + 1.0)
                m.bias.copy_(torch.randn_like(m.bias) * 0.1)
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                m.running_var.copy_(torch.rand_like(m.running_var) * 0.5 + 0.75)
        # Untrained heads predict the anchors; move the boxes so that decoding matters.
        model.head.regression_head.bbox_reg.bias.normal_(0.0, 0.1)
        model.head.classification_head.cls_logits.weight.normal_(0.0, 0.04)
    return model


def calibrate_scores(model, images, passing=0.002):
    """Untrained heads score everything at the prior (0.01). Set each (anchor, class) logit's bias
    so that about `passing` of its locations score above the 0.05 threshold on these images:
    ~150 detections per image after NMS, every class among them."""
    cls = model.head.classification_head
    with torch.no_grad():
        cls.cls_logits.bias.zero_()
        image_list, _ = model.transform(images)
        logits = cls(list(model.backbone(image_list.tensors).values()))
        per_channel = logits.reshape(-1, cls.num_anchors * cls.num_classes)
        top = torch.quantile(per_channel, 1.0 - passing, dim=0)
        cls.cls_logits.bias.copy_(torch.logit(torch.tensor(0.05)) - top)


def save(model, io, out):
    os.makedirs(out, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, os.path.join(out, "weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "io.safetensors"))


def detect(args):
    model = build(args.seed).eval()
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 180)]
    calibrate_scores(model, images)
    with torch.no_grad():
        dets = model(images)
    io = {}
    for i, (img, d) in enumerate(zip(images, dets)):
        io[f"image{i}"] = img
        for k in ("boxes", "scores", "labels"):
            io[f"{k}{i}"] = d[k]
    save(model, io, args.out)


def losses(args):
    model = build(args.seed).eval()
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 180), torch.rand(3, 160, 160)]
    calibrate_scores(model, images)
    model.train()
    # Ordinary boxes; a 20:1 box whose best anchor IoU is ~0.19 and a 5:1 box at ~0.45, which only
    # the low-quality matches make foreground (with ties between anchors); an image without boxes.
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [100.0, 50.0, 250.0, 190.0],
                                [5.0, 5.0, 40.0, 35.0], [10.0, 100.0, 250.0, 112.0]]),
         "labels": torch.tensor([1, 3, 2, 2])},
        {"boxes": torch.tensor([[30.0, 40.0, 170.0, 220.0], [60.0, 10.0, 90.0, 70.0],
                                [20.0, 150.0, 36.0, 230.0]]),
         "labels": torch.tensor([4, 1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    loss = model(images, targets)
    io = {}
    for i, (img, t) in enumerate(zip(images, targets)):
        io[f"image{i}"] = img
        io[f"boxes{i}"] = t["boxes"]
        io[f"labels{i}"] = t["labels"]
    for k, v in loss.items():
        io[f"loss_{k}"] = v.detach().reshape(1)
    save(model, io, args.out)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("detect", "losses"):
        s = sub.add_parser(name)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", required=True)
    args = p.parse_args()
    {"detect": detect, "losses": losses}[args.cmd](args)


if __name__ == "__main__":
    main()
