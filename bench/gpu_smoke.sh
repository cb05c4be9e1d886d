#!/usr/bin/env bash
# Smoke test of every script on a GPU machine: a few steps in bf16, then under DeepSpeed ZeRO-2, and the
# training throughput (samples/s, from each run's all_results.json).
#
#   make install && bash bench/gpu_smoke.sh                 # on a GPU machine: T5 v1.1 small-sized, bf16
#   CPU=1 bash bench/gpu_smoke.sh                           # plumbing check on a CPU: tiny model, fp32
#
# Environment: STEPS (default 30), GPUS (default: all visible), OUT (default runs/gpu_smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
STEPS=${STEPS:-30}
OUT=${OUT:-runs/gpu_smoke}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
if [ "${CPU:-0}" = 1 ]; then
  export DS_ACCELERATOR=cpu
  PRECISION=(--bf16 False)
  SIZE=(--d_model 64 --d_ff 128 --d_kv 16 --num_layers 2 --num_heads 4 --max_seq_length 128 --train_tokenizer_vocab_size 1000)
  BATCH=8
  GPUS=${GPUS:-1}
else
  PRECISION=(--bf16)
  SIZE=(--max_seq_length 512 --train_tokenizer_vocab_size 8000)  # T5 v1.1 small sizes by default
  BATCH=32
  GPUS=${GPUS:-$("$PY" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
fi
rm -rf "$OUT"
mkdir -p "$OUT/mount/models" "$OUT/mount/data"
cp mount/data/example.json mount/data/clf_example.json "$OUT/mount/data/"
COMMON=(--max_steps "$STEPS" --logging_steps 10 --save_strategy no --disable_tqdm True --report_to none)

throughput() {  # name, run dir
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[2] + '/all_results.json')); \
print(f\"{sys.argv[1]:<34}{r.get('train_samples_per_second', float('nan')):>10.1f} samples/s   train_loss {r.get('train_loss', float('nan')):.3f}\")" "$1" "$2"
}

run_both() {  # name, script, run dir flag builder..., args
  local name=$1 script=$2 dir=$3; shift 3
  "$PY" "$script" "$@" "${PRECISION[@]}" "${COMMON[@]}" > "$dir.log" 2>&1 || { echo "$name failed: see $dir.log"; exit 1; }
  RESULTS+=("$name (${PRECISION[*]})|$dir")
}

RESULTS=()
# 1. Pre-training (its model and tokenizer feed the other scripts).
run_both pre_train_t5 pre_train_t5.py "$OUT/pretrain" --output_dir "$OUT/pretrain" "${SIZE[@]}" \
  --per_device_train_batch_size "$BATCH"
cp -r "$OUT/pretrain" "$OUT/mount/models/smoke"
# 2. Fine-tuning on the toy task; 3. seq2seq on the shipped example; 4. clf on its example.
run_both fine_tune_t5 fine_tune_t5.py "$OUT/finetune" --output_dir "$OUT/finetune" --benchmark toy \
  --dataset_name sentiment --model_name_or_path "$OUT/pretrain" --per_device_train_batch_size "$BATCH"
run_both seq2seq seq2seq.py "$OUT/mount/models/s2s" --mount_dir "$OUT/mount" --model_init_name smoke \
  --data_name example --training_run_name s2s --train_batch_size "$BATCH" --max_target_length 32
run_both clf clf.py "$OUT/mount/models/clf" --mount_dir "$OUT/mount" --model_pretrain_name smoke \
  --data_name clf_example --training_run_name clf --train_batch_size "$BATCH" \
  --yes_token "$("$PY" -c "import sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1]); print(next(w for w in ('yes', 'true', 'a', 'the') if len(t(w, add_special_tokens=False).input_ids) == 1))" "$OUT/pretrain")" \
  --no_token "$("$PY" -c "import sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1]); print(next(w for w in ('no', 'false', 'of', 'to') if len(t(w, add_special_tokens=False).input_ids) == 1))" "$OUT/pretrain")"

# 5. Pre-training and fine-tuning under ZeRO-2 on every GPU.
"$BIN/torchrun" --nproc_per_node "$GPUS" pre_train_t5.py --deepspeed zero_stage2_config.json \
  --output_dir "$OUT/pretrain_zero2" "${SIZE[@]}" --per_device_train_batch_size "$BATCH" "${PRECISION[@]}" "${COMMON[@]}" \
  > "$OUT/pretrain_zero2.log" 2>&1 || { echo "pre_train_t5 ZeRO-2 failed: see $OUT/pretrain_zero2.log"; exit 1; }
RESULTS+=("pre_train_t5 ZeRO-2 x$GPUS|$OUT/pretrain_zero2")
"$BIN/torchrun" --nproc_per_node "$GPUS" fine_tune_t5.py --deepspeed zero_stage2_config.json \
  --output_dir "$OUT/finetune_zero2" --benchmark toy --dataset_name sentiment --model_name_or_path "$OUT/pretrain" \
  --per_device_train_batch_size "$BATCH" "${PRECISION[@]}" "${COMMON[@]}" \
  > "$OUT/finetune_zero2.log" 2>&1 || { echo "fine_tune_t5 ZeRO-2 failed: see $OUT/finetune_zero2.log"; exit 1; }
RESULTS+=("fine_tune_t5 ZeRO-2 x$GPUS|$OUT/finetune_zero2")

echo "device: $("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"), $STEPS steps each"
for entry in "${RESULTS[@]}"; do
  throughput "${entry%%|*}" "${entry##*|}"
done
