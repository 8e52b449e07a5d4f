#!/usr/bin/env bash
# One-command GPU check of kdbias, hard limit 8 minutes, nothing installed:
#
#   bash experiments/benchmark/gpu_check.sh            # on the GPU machine
#   bash experiments/benchmark/gpu_check.sh --dry-run  # every stage on the CPU at toy size (< 3 min)
#
# Interpreter: $GPU_CHECK_PYTHON, else python3, else python -- the first that imports torch,
# lightning and timm -- with this checkout on PYTHONPATH (no venv, no pip).
# Stages (each its own process under `timeout`; limits come from one overall budget):
#   environment  versions, GPU, whether LightningCLI's parser (jsonargparse) is there;
#   eager        python -m experiments.benchmark --stages eager: per run of the matrix with
#                compile off: images/s, GFLOP/img, teacher FLOP share, TFLOP/s, MFU (vs a
#                bf16 matmul measured in the run, and vs the H200 datasheet), peak memory,
#                host syncs per step; Lightning's overhead; data path; DINOv2 224 vs 112 px;
#   train        bf16 exp3 at batch 512 for TRAIN_CHECK_S (120) s with compile on: loss
#                falls, no recompiles after warm-up, peak memory;
#   compile      per run with compile on, as long as the budget lasts (runs left: skipped);
#   summary      the table, printed last.
# Results in $OUT (else gpu_check_out/ in the checkout): gpu_check.json (rewritten after each run and
# stage, so a time-out still leaves every figure measured), gpu_check.log, summary.txt.
# Knobs: GPU_CHECK_BUDGET_S (overall seconds; 455, dry 170), TRAIN_CHECK_S, GPU_CHECK_PYTHON.
set -uo pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT_DIR=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)  # absolute: a relative $OUT means the caller's directory
cd "$ROOT" || exit 1
JSON="$OUT_DIR/gpu_check.json"
rm -f "$JSON"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

START=$(date +%s)
if [ "$DRY" = 1 ]; then
  BUDGET=${GPU_CHECK_BUDGET_S:-170}; TRAIN_S=${TRAIN_CHECK_S:-8}
  EAGER_MAX=80; EAGER_MARGIN=12; TRAIN_EXTRA=40; COMPILE_MIN=20; COMPILE_MAX=35; COMPILE_MARGIN=8
  MODE=(--dry-run)
else
  BUDGET=${GPU_CHECK_BUDGET_S:-455}; TRAIN_S=${TRAIN_CHECK_S:-120}
  EAGER_MAX=170; EAGER_MARGIN=30; TRAIN_EXTRA=75; COMPILE_MIN=50; COMPILE_MAX=100000; COMPILE_MARGIN=35
  MODE=()
fi
SUMMARY=10
now() { date +%s; }
left() { echo $(( BUDGET - ($(now) - START) )); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
banner() { echo; echo "=== [$(( $(now) - START )) s] $*"; }
limited() {  # limited SECONDS CMD...: run under a hard time limit when coreutils' timeout exists
  local seconds=$1; shift
  if command -v timeout >/dev/null 2>&1; then timeout --signal=TERM --kill-after=10 "$seconds" "$@"; else "$@"; fi
}

# -- environment: the interpreter, versions, the GPU ----------------------------------------------
banner "environment"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export GPU_CHECK_DRY=$DRY
PY=""
for candidate in ${GPU_CHECK_PYTHON:-} python3 python; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  limited 120 "$candidate" - <<'EOF'
import importlib.util, os, sys
import torch, lightning, timm  # the check itself: these must import
spec = importlib.util.find_spec("experiments.benchmark")
if spec is None or not os.path.realpath(str(spec.origin)).startswith(os.path.realpath(os.getcwd())):
    print(f"experiments.benchmark resolves to {spec and spec.origin}, not this checkout")
    sys.exit(4)
try:
    import jsonargparse
    parser = f"jsonargparse {jsonargparse.__version__} (KDBiasCLI builds the Trainer)"
except ImportError:
    parser = "jsonargparse MISSING: the Trainer is built from the preset files + kdbias.experiment.run_callbacks"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"lightning {lightning.__version__}; timm {timm.__version__}; GPU: {gpu}; {parser}")
if os.environ.get("GPU_CHECK_DRY") != "1" and not torch.cuda.is_available():
    sys.exit(3)
EOF
  status=$?
  if [ "$status" = 0 ]; then PY=$(command -v "$candidate"); break; fi
  if [ "$status" = 4 ]; then echo "FATAL: another package named 'experiments' shadows this checkout's"; exit 4; fi
  if [ "$status" = 3 ]; then
    echo "FATAL: no CUDA device visible to $candidate (use --dry-run for a CPU check)"
    "$candidate" -m experiments.benchmark.table --json "$JSON" --record-stage environment --rc 3 --wall 0 --limit 0
    exit 3
  fi
done
if [ -z "$PY" ]; then
  echo "FATAL: no python imports torch, lightning and timm (set GPU_CHECK_PYTHON)"
  python3 -m experiments.benchmark.table --json "$JSON" --record-stage environment --rc 1 --wall 0 --limit 0
  exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

record() {  # record STAGE RC SECONDS LIMIT
  "$PY" -m experiments.benchmark.table --json "$JSON" --record-stage "$1" --rc "$2" --wall "$3" --limit "$4" \
    || echo "could not record stage $1"
}
stage() {  # stage NAME LIMIT ARGS...: one benchmark process under a hard limit
  local name=$1 limit=$2; shift 2
  local began; began=$(now)
  banner "$name (hard limit ${limit} s)"
  limited "$limit" "$PY" -m experiments.benchmark ${MODE[@]+"${MODE[@]}"} --no-table --json "$JSON" --stages "$name" "$@"
  local rc=$?
  echo "stage $name: exit status $rc after $(( $(now) - began )) s"
  record "$name" "$rc" "$(( $(now) - began ))" "$limit"
}

# -- eager: every run with compile off; overhead, data path, DINOv2 ----------------------------------
LIMIT=$(min "$EAGER_MAX" $(( $(left) - TRAIN_S - TRAIN_EXTRA - COMPILE_MIN - SUMMARY )))
if [ "$LIMIT" -ge 30 ]; then
  stage eager "$LIMIT" --deadline $(( $(now) + LIMIT - EAGER_MARGIN ))
else
  echo "eager: skipped (no time left)"; record eager -1 0 0
fi

# -- train: a bf16 exp3 run at batch 512 with compile on --------------------------------------------
SECONDS_NOW=$(min "$TRAIN_S" $(( $(left) - TRAIN_EXTRA - COMPILE_MIN - SUMMARY )))
if [ "$SECONDS_NOW" -ge $(( TRAIN_S / 4 )) ] && [ "$SECONDS_NOW" -ge 3 ]; then
  stage train $(( SECONDS_NOW + TRAIN_EXTRA )) --train-s "$SECONDS_NOW"
else
  echo "train: skipped (no time left)"; record train -1 0 0
fi

# -- compile: every run with compile on, while the budget lasts ---------------------------------------
LIMIT=$(min "$COMPILE_MAX" $(( $(left) - SUMMARY )))
if [ "$LIMIT" -ge "$COMPILE_MIN" ]; then
  stage compile "$LIMIT" --deadline $(( $(now) + LIMIT - COMPILE_MARGIN ))
else
  echo "compile: skipped (no time left)"; record compile -1 0 0
fi

# -- summary ------------------------------------------------------------------------------------------------
banner "summary"
"$PY" -m experiments.benchmark.table --json "$JSON" --print | tee "$OUT_DIR/summary.txt"
echo "gpu_check done in $(( $(now) - START )) s; results in $OUT_DIR (gpu_check.json, gpu_check.log, summary.txt)"
