#!/usr/bin/env bash
# One-command GPU check of kdbias (at most ~10 minutes on a fresh single-GPU machine):
#   1. a venv (.venv, reused when present) with kdbias[dev];
#   2. the throughput benchmark of every run at the plan's per-GPU batches, eager (compile off);
#   3. the same with torch.compile (runs started only while the time budget lasts: compilation
#      dominates; runs left out are listed as skipped);
#   4. a bf16 exp3 training run at the paper's batch (512, DINOv2-S/14 at 224 px; offline random
#      weights unless EXP3_TEACHER_WEIGHTS is a local .safetensors/.pth file) for ~2 minutes:
#      peak memory (torch.cuda.max_memory_allocated) and whether the loss falls;
#   5. a short table of all of it, printed last.
# Results: $OUT if set (the device harness collects it), else ./gpu_check_out:
#   bench_eager.json, bench_compile.json, train_exp3.json, summary.txt, gpu_check.log
# Environment knobs: GPU_CHECK_BUDGET_S (total seconds, default 570), TRAIN_CHECK_S (default 120),
# EXP3_TEACHER_WEIGHTS (see 4.); for dry runs of this script: GPU_CHECK_ALLOW_CPU=1 and
# GPU_CHECK_BENCH_ARGS (appended to every benchmark call, e.g. "--tiny --batch-size 4").
set -uo pipefail

cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-570}
TRAIN_S=${TRAIN_CHECK_S:-120}
read -r -a EXTRA <<< "${GPU_CHECK_BENCH_ARGS:-}"
OUT_DIR=${OUT:-./gpu_check_out}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
stage() { echo; echo "=== [$(elapsed) s] $*"; }

# -- 1. environment ------------------------------------------------------------------------------
stage "environment"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import kdbias, lightning, timm, torchvision, torch" 2>/dev/null; then
  echo "reusing .venv"
else
  # System site packages let a preinstalled CUDA torch satisfy the requirement (no 3 GB download).
  python3 -m venv --system-site-packages .venv
  .venv/bin/python -m pip install -q -e ".[dev]" \
    || .venv/bin/python -m pip install -q --no-build-isolation -e ".[dev]" \
    || .venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python - <<'EOF' || { echo "FATAL: kdbias or CUDA torch missing in .venv"; exit 1; }
import torch, kdbias, lightning
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {lightning.__version__}, "
      f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE'}")
import os
assert torch.cuda.is_available() or os.environ.get("GPU_CHECK_ALLOW_CPU") == "1", "no CUDA device visible"
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

# Time plan (seconds): the eager pass, then compile with what the training check leaves.
TRAIN_RESERVE=$(( TRAIN_S + 45 ))   # model build, data, start-up, teardown
SUMMARY_RESERVE=15

# -- 2. throughput, eager ------------------------------------------------------------------------------
EAGER_HARD=$(( $(left) - TRAIN_RESERVE - SUMMARY_RESERVE - 60 ))
[ "$EAGER_HARD" -gt 180 ] && EAGER_HARD=180
stage "throughput, compile off (hard limit ${EAGER_HARD} s)"
if [ "$EAGER_HARD" -gt 30 ]; then
  timeout --signal=INT --kill-after=10 "$EAGER_HARD" \
    python -m kdbias.benchmark --no-compile --runs all --warmup 2 --steps 6 --time-budget $(( EAGER_HARD - 25 )) \
    --json "$OUT_DIR/bench_eager.json" ${EXTRA[@]+"${EXTRA[@]}"}
  echo "exit status $?"
else
  echo "skipped: no time left"
fi

# -- 3. throughput, compiled -----------------------------------------------------------------------------
COMPILE_HARD=$(( $(left) - TRAIN_RESERVE - SUMMARY_RESERVE ))
stage "throughput, compile on (hard limit ${COMPILE_HARD} s)"
if [ "$COMPILE_HARD" -gt 60 ]; then
  # Ordered so that cached student graphs are reused early; no data/DINOv2 sections (eager has them).
  timeout --signal=INT --kill-after=10 "$COMPILE_HARD" \
    python -m kdbias.benchmark --compile --runs baseline,exp1,exp3_112,exp3_224,exp2,teacher_resnet18,teacher_convnextv2 \
    --no-data-bench --no-dinov2 --rounds 2 --warmup 2 --steps 6 --time-budget $(( COMPILE_HARD * 55 / 100 )) \
    --json "$OUT_DIR/bench_compile.json" ${EXTRA[@]+"${EXTRA[@]}"}
  echo "exit status $?"
else
  echo "skipped: no time left"
fi

# -- 4. bf16 exp3 training at the paper's batch --------------------------------------------------------------
TRAIN_NOW=$(( $(left) - SUMMARY_RESERVE - 45 ))
[ "$TRAIN_NOW" -gt "$TRAIN_S" ] && TRAIN_NOW=$TRAIN_S
stage "exp3 training check: batch 512, bf16-mixed, DINOv2-S/14 @ 224 px (random weights), ${TRAIN_NOW} s"
if [ "$TRAIN_NOW" -ge $(( TRAIN_S < 20 ? TRAIN_S : 20 )) ]; then
  timeout --signal=INT --kill-after=10 $(( TRAIN_NOW + 60 )) \
    python -m kdbias.benchmark --runs exp3_224 --train-check "$TRAIN_NOW" --precision bf16-mixed \
    ${EXP3_TEACHER_WEIGHTS:+--teacher-weights "$EXP3_TEACHER_WEIGHTS"} --json "$OUT_DIR/train_exp3.json" ${EXTRA[@]+"${EXTRA[@]}"}
  echo "exit status $?"
else
  echo "skipped: no time left"
fi

# -- 5. summary -------------------------------------------------------------------------------------------------
stage "summary"
python - "$OUT_DIR" <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])

def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None

eager, comp, train = load("bench_eager.json"), load("bench_compile.json"), load("train_exp3.json")
rows = {}
for tag, result in (("eager", eager), ("compile", comp)):
    for r in (result or {}).get("runs", []):
        rows.setdefault(r["run"], {})[tag] = r

def f(r, key, fmt, scale=1.0):
    if not r:
        return "-"
    status = r.get("status", "")
    if status != "ok":
        return "skip" if status.startswith("skipped") else "ERR"
    return "-" if r.get(key) is None else fmt.format(r[key] * scale)

machine = (eager or comp or {}).get("machine", {})
print(f"GPU check: {machine.get('gpu')} | torch {machine.get('torch')} | "
      f"bf16 matmul {((eager or comp or {}).get('matmul_bf16_tflops') or 0):.0f} TFLOP/s")
head = ("run", "batch", "img/s eager", "img/s compile", "x", "L/plain eager", "L/plain comp", "GFLOP/img",
        "MFU eager", "MFU comp", "GiB", "syncs/step")
print(" | ".join(head))
for run, by in rows.items():
    e, c = by.get("eager"), by.get("compile")
    speed = "-"
    if e and c and e.get("status") == "ok" and c.get("status") == "ok":
        speed = f"{c['lightning_images_per_s'] / e['lightning_images_per_s']:.2f}"
    ref = e if e and e.get("status") == "ok" else c
    syncs = "-"
    if ref and ref.get("status") == "ok":
        syncs = f"{sum((ref.get('host_sync_calls') or {}).values())}+{ref.get('cuda_sync_ops_per_step')}"
    print(" | ".join([run, str((ref or {}).get("batch_size", "-")), f(e, "lightning_images_per_s", "{:,.0f}"),
                      f(c, "lightning_images_per_s", "{:,.0f}"), speed, f(e, "lightning_overhead_ratio", "{:.3f}"),
                      f(c, "lightning_overhead_ratio", "{:.3f}"), f(ref, "flops_per_image", "{:.2f}", 1e-9),
                      f(e, "mfu", "{:.1%}"), f(c, "mfu", "{:.1%}"), f(ref, "max_memory_gib", "{:.1f}"), syncs]))
    for tag, r in (("eager", e), ("compile", c)):
        if r and r.get("status", "ok") != "ok" and not r.get("status", "").startswith("skipped"):
            print(f"    {tag}: {r['status'][:200]}")
if eager:
    for tag, result in (("eager", eager), ("compile", comp)):
        ratio = (result or {}).get("lightning_overhead_ratio")
        if ratio is not None:
            print(f"lightning_overhead_ratio ({tag}, median over runs) = {ratio:.3f}")
    d = eager.get("data")
    if d:
        print(f"data path: kdbias {d['kdbias_images_per_s']:,.0f} img/s vs torchvision {d['torchvision_images_per_s']:,.0f} "
              f"img/s (batch {d['batch_size']}, {d['num_workers']} workers) -> x{d['speedup']:.1f}")
    v = eager.get("dinov2")
    if v:
        print(f"DINOv2-S/14 teacher @ batch {v['batch_size']}: 224 px {v['224']['ms_per_batch']:.1f} ms, "
              f"112 px {v['112']['ms_per_batch']:.1f} ms (x{v['speedup_112_vs_224']:.2f}; FLOPs x{v['flop_ratio_224_vs_112']:.2f})")
if train:
    print(f"exp3 train check ({train['precision']}, batch {train['batch_size']}, {train['seconds']:.0f} s): "
          f"{train['steps']} steps, {train['images_per_s']:,.0f} img/s, peak {train['max_memory_gib'] or 0:.1f} GiB, "
          f"loss {train['loss_first']:.3f} -> {train['loss_last']:.3f} "
          f"({'falling' if train['loss_falling'] else 'NOT falling'}, {'finite' if train['finite'] else 'NON-FINITE'})")
else:
    print("exp3 train check: no result")
EOF
echo "gpu_check done in $(elapsed) s; files in $OUT_DIR"
