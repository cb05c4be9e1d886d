# Two commands: `make demo` (the main job on an embedded offline default) and `make test`.
# Both start with `make install`, which creates .venv from requirements.txt once.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline by default: cluster compute nodes often have no internet, and neither does CI.
RUN := HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY)
DEMO_DIR ?= runs/demo

.PHONY: install demo test bench lock clean

install: $(VENV)/.installed

# The hashed lock (requirements.lock: every package but torch, exact versions and sha256 hashes) installs with
# --require-hashes. torch's wheel differs per platform (the CPU build here, a CUDA build on GPU hosts: same
# version, different files), so it is kept out of the lock and installed first by its exact pin from
# requirements.txt. `make lock` regenerates the locks from requirements*.txt (needs uv: pip install uv==0.13.9).
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
PIP := $(PY) -m pip --disable-pip-version-check

$(VENV)/.installed: requirements.txt requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q --require-hashes --no-deps -r requirements.lock
	$(PIP) check
	touch $@

# Pre-train a tiny T5 (tokenizer trained on the corpus) on the Python standard library's docstrings,
# then fine-tune it on the offline toy sentiment task and print its accuracy, and score the shipped
# garden-path stimuli per token with the pre-trained model (each word masked in turn), and rank the synthetic
# CrowS-Pairs fixture's sentence pairs with it (bias.py), with the 4 most bias-important heads masked too.
demo: install
	$(RUN) pre_train_t5.py --output_dir $(DEMO_DIR)/pretrain --overwrite_output_dir \
	  --train_tokenizer_vocab_size 1000 --d_model 128 --d_ff 256 --d_kv 32 --num_layers 2 --num_heads 4 \
	  --max_seq_length 128 --per_device_train_batch_size 32 --max_steps 600 --warmup_steps 30 \
	  --logging_steps 50 --eval_strategy steps --eval_steps 200 --save_strategy no \
	  --per_device_eval_batch_size 64 --disable_tqdm True
	$(RUN) fine_tune_t5.py --benchmark toy --dataset_name sentiment --model_name_or_path $(DEMO_DIR)/pretrain \
	  --output_dir $(DEMO_DIR)/finetune --overwrite_output_dir --max_steps 300 --per_device_train_batch_size 32 \
	  --logging_steps 50 --eval_strategy steps --eval_steps 100 --save_strategy no \
	  --per_device_eval_batch_size 64 --do_predict --disable_tqdm True
	rm -rf $(DEMO_DIR)/surprisal
	$(RUN) finetune_lm.py --model_name_or_path $(DEMO_DIR)/pretrain --test_file mount/data/stimuli.txt \
	  --data_preprocessing_fn.test expand_with_masks --output_dir $(DEMO_DIR)/surprisal --test_output_file_prefix demo
	rm -rf $(DEMO_DIR)/bias $(DEMO_DIR)/bias_data
	$(RUN) bias_data.py $(DEMO_DIR)/bias_data
	$(RUN) bias.py --dataset_name crows_pairs --dataset_dir $(DEMO_DIR)/bias_data --model_name_or_path $(DEMO_DIR)/pretrain \
	  --output_dir $(DEMO_DIR)/bias --head_importance --mask_top_k 4 --disable_tqdm True

# DeepSpeed is optional for users; the tests run ZeRO-2 on the CPU, so `make test` installs it too.
$(VENV)/.installed-deepspeed: requirements-deepspeed.lock $(VENV)/.installed
	$(PIP) install -q --require-hashes --no-deps -r requirements-deepspeed.lock
	$(PIP) check
	touch $@

# Packages of torch's CUDA build only: not locked (they come with torch's own install on GPU hosts).
TORCH_ONLY := torch triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc \
  nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse \
  nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
LOCK := uv pip compile --generate-hashes --universal --python-version 3.11 --no-header $(TORCH_ONLY:%=--no-emit-package %)

lock:
	$(LOCK) requirements.txt -o requirements.lock
	$(LOCK) requirements.txt requirements-deepspeed.txt $$(sed -nE 's/^([A-Za-z0-9._-]+)==.*/--no-emit-package \1/p' requirements.lock) \
	  -o requirements-deepspeed.lock

test: install $(VENV)/.installed-deepspeed
	$(RUN) -m pytest -q --durations=25 tests

bench: install
	$(RUN) bench/collator.py
	$(RUN) bench/eval_modes.py
	$(RUN) bench/pretrain_throughput.py
	$(RUN) bench/bias.py
	$(RUN) bench/lora_memory.py

clean:
	rm -rf runs
