#!/usr/bin/env bash
# The GPU check of the trainer (issue 16, part 5), for a machine with CUDA, PyTorch in
# /opt/torch/.venv, no Rust and no network. Under 8 minutes on an H100/H200. Prints one table.
#
# Here (with Rust):   scripts/device_check.sh --bundle   # release trainer, stripped, into .device/
# There:              scripts/device_check.sh            # with .device/ carried along
#
# Rows: `trainer doctor`; a fine-tune and a box-domain pre-training through `trainer run` on
# cuda:0 (synthetic data made there by `trainer synth`); our training step against torchvision's
# (FCOS, RetinaNet, Faster R-CNN, ResNet-50-FPN, fp32 and bf16) with scripts/bench_train.py; the
# GPU's busy share during a fine-tune (nvidia-smi); NCCL at world size 1 (from `trainer doctor`).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$ROOT/.device"

if [ "${1:-}" = "--bundle" ]; then
  set -e
  cd "$ROOT"
  cargo build -q --release -p aligndet-trainer --bin trainer
  mkdir -p "$BUNDLE"
  cp target/release/trainer "$BUNDLE/trainer"
  strip "$BUNDLE/trainer"
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  ls -la "$BUNDLE"
  exit 0
fi

PY=/opt/torch/.venv/bin/python
TORCH_LIB="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TRAINER="$BUNDLE/trainer"
WORK="${OUT:-/tmp}/device-check"
mkdir -p "$WORK"
TABLE="$WORK/table.md"
: > "$TABLE"
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" | tee -a "$TABLE"; }
echo "| check | result | detail |" | tee -a "$TABLE"
echo "| --- | --- | --- |" | tee -a "$TABLE"

# 1. doctor
if doctor="$("$TRAINER" doctor 2>&1)"; then
  row "trainer doctor" ok "$(echo "$doctor" | tr '\n' ' ' | cut -c1-160)"
else
  row "trainer doctor" FAILED "$(echo "$doctor" | tail -1)"
fi

# 2. data made on the machine
DATA="$WORK/synthetic"
rm -rf "$DATA"
"$TRAINER" synth --out "$DATA" --train 64 --val 16 --size 256 >/dev/null 2>&1 || row "trainer synth" FAILED ""
SPLITS="$(cat "$DATA/splits.json")"
spec() {  # spec RUN_ID CONFIG_JSON
  printf '{"run_id": %s, "attempt": 1, "name": "device", "lease_seconds": 0, "config": %s, "dataset": {"dataset_id": 1, "name": "synthetic", "annotations_path": "%s", "image_root": "%s", "splits": %s}}' \
    "$1" "$2" "$DATA/annotations.json" "$DATA/images" "$SPLITS"
}
last_line() { grep '"event":"status"' "$1/events.jsonl" 2>/dev/null | tail -1 | cut -c1-160; }

# 3. a fine-tune on cuda:0, with the GPU's busy share sampled meanwhile
FT='{"kind": "finetune", "dataset_id": 1, "detector": "fcos", "backbone": "resnet50", "init": {"from": "scratch"}, "eval_every": 1000, "final_eval_max_images": 16, "optim": {"steps": 60, "batch_size": 8, "warmup_steps": 5, "lr": 0.01, "checkpoint_every": 1000, "loader_threads": 8, "precision": "bf16"}, "augment": {"min_sizes": [512], "max_size": 512}}'
spec 1 "$FT" > "$WORK/ft.json"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$WORK/util.txt" 2>/dev/null &
SMI=$!
start=$(date +%s.%N)
"$TRAINER" run "$WORK/ft.json" --out "$WORK/ft" --device cuda:0 > "$WORK/ft.log" 2>&1
ft_rc=$?
kill $SMI 2>/dev/null
secs=$("$PY" -c "print(round($(date +%s.%N) - $start, 1))")
busy=$(awk '{s+=$1; n++} END {if (n) printf "%.0f", s/n; else print "n/a"}' "$WORK/util.txt")
row "fine-tune FCOS R50 bf16, 60 steps, cuda:0" "$([ $ft_rc = 0 ] && echo ok || echo FAILED)" "${secs}s wall, GPU busy ${busy}% (mean of 200 ms samples); $(last_line "$WORK/ft")"
wait_ms=$("$PY" - "$WORK/ft/events.jsonl" <<'PYEOF'
import json, statistics, sys
v = [p["value"] for l in open(sys.argv[1]) for p in json.loads(l).get("points", []) if p["key"] == "train/data_wait_ms"]
print(f"{statistics.median(v[5:]):.1f}" if len(v) > 5 else "n/a")
PYEOF
)
row "fine-tune loader wait (median, after 5 steps)" "${wait_ms} ms" "train/data_wait_ms"

# 4. box-domain pre-training on cuda:0 (pseudo-boxes from a proposals job, the backbone from step 3)
spec 5 '{"kind": "proposals", "dataset_id": 1, "strategy": "fast"}' > "$WORK/prop.json"
"$TRAINER" run "$WORK/prop.json" --out "$WORK/prop" > "$WORK/prop.log" 2>&1
mkdir -p "$WORK/inputs/5" && cp "$WORK/prop/artifacts/pseudo_boxes.json" "$WORK/inputs/5/" 2>/dev/null
# the frozen backbone must be complete: the fine-tune's model above stands in for an image-domain one
mkdir -p "$WORK/inputs/1" && cp "$WORK/ft/artifacts/model.safetensors" "$WORK/inputs/1/" 2>/dev/null
PB='{"kind": "pretrain_box", "dataset_id": 1, "proposals_run_id": 5, "detector": "fcos", "backbone": "resnet50", "backbone_init": {"from": "checkpoint", "artifact": {"run_id": 1, "name": "model.safetensors"}}, "views": {"min_sizes": [480, 512], "max_size": 640}, "optim": {"steps": 30, "batch_size": 8, "warmup_steps": 3, "checkpoint_every": 1000, "loader_threads": 8, "precision": "bf16"}}'
spec 7 "$PB" > "$WORK/pb.json"
start=$(date +%s.%N)
"$TRAINER" run "$WORK/pb.json" --out "$WORK/pb" --device cuda:0 --inputs "$WORK/inputs" > "$WORK/pb.log" 2>&1
pb_rc=$?
secs=$("$PY" -c "print(round($(date +%s.%N) - $start, 1))")
row "pretrain_box FCOS R50 bf16, 30 steps, cuda:0" "$([ $pb_rc = 0 ] && echo ok || echo FAILED)" "${secs}s wall; $(last_line "$WORK/pb")"

# 5. our step against torchvision's, same model, batch and resolution
for det in fcos retinanet faster_rcnn; do
  for prec in fp32 bf16; do
    if timeout 120 "$PY" "$ROOT/scripts/bench_train.py" --trainer "$TRAINER" --device cuda \
        --detector $det --backbone resnet50 --batch-size 8 --size 640 --steps 10 --warmup 5 \
        --threads 8 --precision $prec --dataset "$DATA/annotations.json" --images "$DATA/images" \
        --json "$WORK/bench-$det-$prec.json" > "$WORK/bench-$det-$prec.log" 2>&1; then
      row "step $det R50-FPN $prec, batch 8 at 640²" ok "$("$PY" -c "import json; r=json.load(open('$WORK/bench-$det-$prec.json')); print(f\"ours {r['ours_s']*1e3:.1f} ms, torchvision {r['torchvision_s']*1e3:.1f} ms, ratio {r['ratio']:.2f}\")")"
    else
      row "step $det R50-FPN $prec" FAILED "$(tail -1 "$WORK/bench-$det-$prec.log" | cut -c1-160)"
    fi
  done
done

# 6. NCCL at world size 1: `trainer doctor` joins a 1-rank group on cuda:0 (NCCL for CUDA tensors
#    when the trainer was built with it) and all-reduces and broadcasts a tensor there
c10d="$(echo "${doctor:-}" | grep -E '^c10d (backends|check)' | sed 's/  */ /g' | tr '\n' ' ')"
if echo "$c10d" | grep -q "over NCCL.*: ok"; then
  row "NCCL at world size 1" ok "$c10d"
else
  row "NCCL at world size 1" FAILED "${c10d:-no c10d lines from trainer doctor}"
fi
echo
echo "table: $TABLE"
