#!/usr/bin/env python3
"""Reference outputs from torchvision for our parity tests (run by the tests, nothing committed).

    torchvision_reference.py backbone --arch resnet50|resnet18 --extra p6p7|maxpool --out DIR

    torchvision_reference.py fcos|fcos-losses --out DIR

    torchvision_reference.py fcos-train --steps N --out DIR   (the losses of N SGD steps)

writes DIR/weights.safetensors (a torchvision BackboneWithFPN state dict, randomised including the
frozen batch-norm statistics so that they matter) and DIR/io.safetensors (the input and every
pyramid level in eval mode).
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d


def randomise_norms(model):
    """Random affine and statistics in every batch norm, so that they matter for parity."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) * 0.5 + 0.75)
        for name, p in model.named_parameters():
            if ".bn" in name or "downsample.1" in name or name.startswith("bn1") or ".bn1" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))


def backbone(args):
    torch.manual_seed(args.seed)
    body = {"resnet50": resnet50, "resnet18": resnet18}[args.arch](weights=None, norm_layer=FrozenBatchNorm2d)
    if args.extra == "p6p7":
        returned, extra = [2, 3, 4], LastLevelP6P7(256, 256)
    else:
        returned, extra = [1, 2, 3, 4], LastLevelMaxPool()
    model = _resnet_fpn_extractor(body, 3, returned_layers=returned, extra_blocks=extra).eval()
    randomise_norms(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        out = model(x)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    io = {"input": x}
    for i, (k, v) in enumerate(out.items()):
        io[f"out{i}"] = v.contiguous()
    save_file(io, os.path.join(args.out, "io.safetensors"))


def fcos(args):
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(args.seed)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                              min_size=256, max_size=512).eval()
    randomise_norms(model)
    with torch.no_grad():
        # Untrained heads score everything near the prior (0.01); lift the biases so that many
        # boxes pass the 0.2 threshold and NMS has work to do.
        model.head.classification_head.cls_logits.bias.normal_(0.0, 1.0)
        model.head.regression_head.bbox_ctrness.bias.fill_(2.0)
        model.head.regression_head.bbox_reg.bias.uniform_(0.5, 2.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 180)]
    with torch.no_grad():
        dets = model(images)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    io = {}
    for i, (img, d) in enumerate(zip(images, dets)):
        io[f"image{i}"] = img.contiguous()
        for k in ("boxes", "scores", "labels"):
            io[f"{k}{i}"] = d[k].contiguous()
    save_file(io, os.path.join(args.out, "io.safetensors"))


def fcos_losses(args):
    """Training losses of the same randomised FCOS on a batch with targets.

    The body's batch norms stay in eval mode (running statistics), which is what our frozen
    batch norm computes; everything else is in training mode.
    """
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(args.seed)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                              min_size=256, max_size=512)
    randomise_norms(model)
    model.train()
    model.backbone.body.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(args.seed + 1)
    images = [torch.rand(3, 200, 260, generator=g), torch.rand(3, 240, 180, generator=g)]
    targets = []
    for img, n in zip(images, (5, 3)):
        h, w = img.shape[1:]
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, args.num_classes, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
    losses = model(images, targets)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    io = {}
    for i, (img, t) in enumerate(zip(images, targets)):
        io[f"image{i}"] = img.contiguous()
        io[f"boxes{i}"] = t["boxes"].contiguous()
        io[f"labels{i}"] = t["labels"].contiguous()
    for k, v in losses.items():
        io[f"loss_{k}"] = v.detach().reshape(1)
    save_file(io, os.path.join(args.out, "io.safetensors"))


def fcos_train(args):
    """N steps of SGD on the same randomised FCOS from torchvision's own initialisation of the
    heads (box regression starts near zero under its ReLU, the box loss near 1.0): the losses of
    every step, for our loop's optimizer, clipping and warm-up to reproduce step by step.

    Settings are the fine-tune form's: SGD momentum 0.9, weight decay 1e-4 on every tensor,
    gradient norm clipped at 10, linear warm-up from 0.001 × lr (then constant).
    """
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(args.seed)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                              min_size=160, max_size=266)
    randomise_norms(model)
    # Frozen batch norm, as ours: statistics and affine fixed.
    for m in model.backbone.body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    # cloned: the state dict's tensors share storage with the parameters that training updates
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(3):
        images = [torch.rand(3, 150, 180, generator=g), torch.rand(3, 170, 140, generator=g)]
        targets = []
        for img, n in zip(images, (4, 3)):
            h, w = img.shape[1:]
            xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
            wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 16
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(1, args.num_classes, (n,), generator=g)})
        batches.append((images, targets))
    params = [p for p in model.parameters() if p.requires_grad]
    io = {"trainable": torch.tensor([sum(p.numel() for p in params)])}
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    for step in range(args.steps):
        images, targets = batches[step % len(batches)]
        model.train()
        model.backbone.body.eval()
        losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        io[f"grad_norm_{step}"] = torch.nn.utils.clip_grad_norm_(params, 10.0).detach().double().reshape(1)
        alpha = step / args.warmup
        lr = args.lr * (0.001 * (1 - alpha) + alpha) if step < args.warmup else args.lr
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for k, v in losses.items():
            io[f"loss_{k}_{step}"] = v.detach().reshape(1)
        io[f"lr_{step}"] = torch.tensor([lr], dtype=torch.float64)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    for b, (images, targets) in enumerate(batches):
        for i, (img, t) in enumerate(zip(images, targets)):
            io[f"image{b}_{i}"] = img.contiguous()
            io[f"boxes{b}_{i}"] = t["boxes"].contiguous()
            io[f"labels{b}_{i}"] = t["labels"].contiguous()
    save_file(io, os.path.join(args.out, "io.safetensors"))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backbone")
    b.add_argument("--arch", default="resnet50")
    b.add_argument("--extra", default="p6p7")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True)
    f = sub.add_parser("fcos")
    f.add_argument("--num-classes", type=int, default=5)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True)
    fl = sub.add_parser("fcos-losses")
    fl.add_argument("--num-classes", type=int, default=5)
    fl.add_argument("--seed", type=int, default=0)
    fl.add_argument("--out", required=True)
    ft = sub.add_parser("fcos-train")
    ft.add_argument("--num-classes", type=int, default=5)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--steps", type=int, default=12)
    ft.add_argument("--lr", type=float, default=0.01)
    ft.add_argument("--warmup", type=int, default=2)
    ft.add_argument("--out", required=True)
    args = p.parse_args()
    {"backbone": backbone, "fcos": fcos, "fcos-losses": fcos_losses, "fcos-train": fcos_train}[args.cmd](args)


if __name__ == "__main__":
    main()
