#!/usr/bin/env bash
# The GPU checks, as one prepared script that finishes within about 8 minutes on one H100/H200-class GPU and
# writes every figure to one file ($SMOKE_OUT/gpu_figures.json, default runs/gpu_smoke, plus a readable .md):
#   1. pre-training throughput on a T5-v1.1-base-sized model in bf16: (c) hand-written fp32 loop, (a) the
#      pipeline's defaults (bf16 on the GPU), (b) the GPU recipe (+ --tf32 --torch_compile, 2 workers); MFU
#      against the measured bf16 matmul peak, beside nanoT5's ~31% (A100, bf16 + compile);
#   2. ZeRO-2 on one GPU: fine_tune_t5.py under DeepSpeed (skipped when deepspeed is missing);
#   3. LoRA: fine_tune_t5.py --lora_r 16 --bf16 (samples/s, trainable parameters) and bench/lora_memory.py's
#      CUDA peaks, whole model against LoRA;
#   4. the KL-to-base term's overhead (bench/kl_overhead.py).
#
#   bash bench/gpu_smoke.sh                       # on the GPU machine
#   CPU=1 bash bench/gpu_smoke.sh                 # dry run of the same steps on a CPU: tiny sizes, ~4 minutes
#
# The GPU machines are offline, with their own Python (3.12), their own torch and transformers, and no
# datasets or deepspeed. So the script first tries the Python it is given ($PY, default .venv/bin/python, else
# python3); when that lacks a package the checks need, it makes a venv that sees the machine's packages
# (--system-site-packages: its CUDA torch stays) and installs the missing ones from a folder of wheels carried
# along (WHEELS, default shared/wheels/gpu), offline, one package at a time, skipping with a line what cannot be
# installed; the set-up is cut at SETUP_SECONDS (60). Prepare the folder beforehand, where there is internet:
#   pip download --python-version 3.12 --platform manylinux_2_28_x86_64 --only-binary=:all: -d shared/wheels/gpu \
#       transformers==5.23.0 tokenizers==0.23.3 sentencepiece==0.2.3 datasets==5.2.0 accelerate==1.15.0 peft==0.21.2 \
#       numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 pyyaml==6.0.3 matplotlib==3.11.2 absl-py==2.5.1
# (deepspeed ships only a source distribution, which needs a build: without it, step 2 is skipped with a line.)
# Each step runs under its own time limit and records "skipped: <why>" instead of stopping the script.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${SMOKE_OUT:-runs/gpu_smoke}  # replaced on each run: only a folder this script made (it holds gpu_smoke.log)
WHEELS=${WHEELS:-shared/wheels/gpu}
SETUP_SECONDS=${SETUP_SECONDS:-60}
NEEDED=(transformers tokenizers sentencepiece datasets accelerate peft numpy scipy sklearn yaml matplotlib absl)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/gpu_smoke.log" ]; then
  echo "error: SMOKE_OUT=$OUT is a non-empty folder this script did not make; give another" >&2
  exit 2
fi
rm -rf "$OUT"
mkdir -p "$OUT"
FIGURES="$OUT/gpu_figures.jsonl"
: > "$FIGURES"
note() { echo "[$(date +%T)] $*" | tee -a "$OUT/gpu_smoke.log"; }
record() {  # step, a JSON file: one compact line of the figures file
  "$PY" -c 'import json, sys; print(json.dumps({"step": sys.argv[1], "result": json.load(open(sys.argv[2]))}))' "$1" "$2" >> "$FIGURES"
}
skip() {  # step, why
  printf '{"step": "%s", "result": {"skipped": "%s"}}\n' "$1" "$2" >> "$FIGURES"
}

# --- set-up: a Python with what the checks need ------------------------------------------------------------------
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
missing() { "$1" - "${NEEDED[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))
EOF
}
START=$(date +%s)
MISSING=$(missing "$PY")
if [ -n "$MISSING" ]; then
  note "$PY lacks: $MISSING; installing from $WHEELS into $OUT/venv (offline, at most ${SETUP_SECONDS}s)"
  "$PY" -m venv --system-site-packages "$OUT/venv" && PY="$OUT/venv/bin/python"
  declare -A DIST=([sklearn]=scikit-learn [yaml]=pyyaml [absl]=absl-py)
  for module in $MISSING deepspeed; do
    left=$(( SETUP_SECONDS - ($(date +%s) - START) ))
    dist=${DIST[$module]:-$module}
    if [ "$left" -le 0 ]; then note "skipped installing $dist: the set-up's ${SETUP_SECONDS}s are spent"; continue; fi
    if [ ! -d "$WHEELS" ]; then note "skipped installing $dist: no wheel folder $WHEELS"; continue; fi
    timeout "$left" "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$dist" > "$OUT/pip-$dist.log" 2>&1 \
      || note "skipped installing $dist: $(tail -n1 "$OUT/pip-$dist.log")"
  done
fi
"$PY" - 2>/dev/null <<'EOF' | tail -n1 > "$OUT/versions.json"
import json, importlib, platform
versions = {"python": platform.python_version()}
for name in ("torch", "transformers", "datasets", "accelerate", "peft", "deepspeed"):
    try:
        versions[name] = importlib.import_module(name).__version__
    except Exception as err:
        versions[name] = f"missing ({type(err).__name__})"
try:
    import torch
    versions["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
except ImportError:
    versions["device"] = "unknown: no torch"
print(json.dumps(versions))
EOF
record setup "$OUT/versions.json"
note "set-up done in $(( $(date +%s) - START ))s: $(cat "$OUT/versions.json")"
STILL_MISSING=$(missing "$PY")

if [ "${CPU:-0}" = 1 ]; then
  export DS_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES=""
  THROUGHPUT=(--size tiny --batch_size 4 --steps 2 --warmup_steps 1 --repeats 1 --matmul_size 256 --cpu_bf16 no)
  MODEL_FLAGS=(--per_device_train_batch_size 8 --max_steps 4 --bf16 False)
  KL=(--small --repeats 1)
  LORA_MEMORY=(--small --optims adafactor --max_steps 1)
  LIMIT=300
else
  THROUGHPUT=(--size base --batch_size 64 --steps 10 --warmup_steps 3 --repeats 1)
  MODEL_FLAGS=(--per_device_train_batch_size 64 --max_steps 30 --bf16)
  KL=(--repeats 2 --steps 10)
  LORA_MEMORY=(--optims adafactor,adamw_torch --batch_size 32 --max_steps 5)
  LIMIT=240
fi

step() {  # name, seconds, command...: run under a time limit, log to $OUT/<name>.log; 0 if it succeeded
  local name=$1 seconds=$2; shift 2
  note "step $name (at most ${seconds}s): $*"
  timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    note "step $name failed (exit $rc; 124: its time limit): see $OUT/$name.log"
    skip "$name" "exit $rc; see $name.log"
    return 1
  fi
}
needs() {  # module: 0 when importable, else records the skip
  if [[ " $STILL_MISSING " == *" $1 "* ]] || ! "$PY" -c "import $1" 2>/dev/null; then
    note "skipped $2: $1 is not installed"
    skip "$2" "$1 is not installed"
    return 1
  fi
}

# 1. Pre-training throughput (its initial model feeds steps 2 and 3).
if needs datasets pretrain_throughput && step pretrain_throughput "$LIMIT" "$PY" bench/pretrain_throughput.py "${THROUGHPUT[@]}" \
    --variants c,a,b --workdir "$OUT/pretrain" --json "$OUT/pretrain_throughput.json"; then
  record pretrain_throughput "$OUT/pretrain_throughput.json"
fi
MODEL="$OUT/pretrain/init"
COMMON=(--benchmark toy --dataset_name sentiment --model_name_or_path "$MODEL" --save_strategy no --report_to none
        --disable_tqdm True --max_eval_samples 64 --logging_steps 5)

# 2. ZeRO-2 on one GPU.
if [ -d "$MODEL" ] && needs deepspeed zero2 && step zero2 120 "$PY" -m torch.distributed.run --nproc_per_node 1 fine_tune_t5.py \
    --deepspeed zero_stage2_config.json --output_dir "$OUT/zero2" "${COMMON[@]}" "${MODEL_FLAGS[@]}"; then
  record zero2 "$OUT/zero2/all_results.json"
fi

# 3. LoRA.
if [ -d "$MODEL" ] && needs peft lora && step lora 120 "$PY" fine_tune_t5.py --output_dir "$OUT/lora" --lora_r 16 "${COMMON[@]}" \
    "${MODEL_FLAGS[@]}"; then
  "$PY" -c "import json, re, sys; r = json.load(open(sys.argv[1])); m = re.search(r'trainable parameters ([0-9,]+) of ([0-9,]+)', open(sys.argv[2]).read()); r['lora_trainable'] = m.group(0) if m else None; print(json.dumps(r))" "$OUT/lora/all_results.json" "$OUT/lora.log" > "$OUT/lora.json"
  record lora "$OUT/lora.json"
fi
if needs peft lora_memory && step lora_memory 150 "$PY" bench/lora_memory.py "${LORA_MEMORY[@]}" --json "$OUT/lora_memory.json"; then
  record lora_memory "$OUT/lora_memory.json"
fi

# 4. The KL term's overhead.
if needs datasets kl_overhead && step kl_overhead 120 "$PY" bench/kl_overhead.py "${KL[@]}" --json "$OUT/kl_overhead.json"; then
  record kl_overhead "$OUT/kl_overhead.json"
fi

# The figures, readable.
"$PY" - "$FIGURES" > "$OUT/gpu_figures.md" <<'EOF'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
print("# GPU checks\n")
for s in steps:
    r = s["result"]
    if isinstance(r.get("skipped"), str):  # a step that did not run (the throughput report has its own "skipped" map)
        print(f"- {s['step']}: skipped ({r['skipped']})")
    elif s["step"] == "setup":
        print(f"- set-up: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    elif s["step"] == "pretrain_throughput":
        print(f"- pre-training throughput, {r['size']} {r['batch']}, device {r['device']}, peak {r['peak_tflops_per_s']} TFLOP/s:")
        for v in r["variants"]:
            mfu = v["mfu_vs_bf16_peak"] if v["precision"] == "bf16" and v["mfu_vs_bf16_peak"] else v["mfu_vs_fp32_peak"]
            print(f"  - {v['variant']} {' '.join(v['flags'])}: {v['seconds_per_step']:.3f} s/step, {v['samples_per_s']:.1f} samples/s, "
                  f"MFU {mfu:.1%} ({v['precision']}; nanoT5: ~31% on an A100), {v['speedup_vs_baseline']:.2f}x vs c")
    elif s["step"] in ("zero2", "lora"):
        print(f"- {s['step']}: {r.get('train_samples_per_second')} samples/s, train_loss {r.get('train_loss')}, "
              f"eval_loss {r.get('eval_loss')}" + (f", {r['lora_trainable']}" if r.get("lora_trainable") else ""))
    elif s["step"] == "lora_memory":
        print(f"- LoRA memory: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k.startswith("ratio_")))
    elif s["step"] == "kl_overhead":
        print(f"- KL term: step time on / off {r['ratio']:.2f}x ({r['on_s'] * 1000:.1f} vs {r['off_s'] * 1000:.1f} ms)")
EOF
# One file with every figure.
"$PY" -c "import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))" "$FIGURES" > "$OUT/gpu_figures.json"
note "done in $(( $(date +%s) - START ))s; figures: $OUT/gpu_figures.json, $OUT/gpu_figures.md"
cat "$OUT/gpu_figures.md"
