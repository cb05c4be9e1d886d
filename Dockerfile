# syntax=docker/dockerfile:1
# Container for job runners: the toolkit's scripts and their exact pins on Python 3.11.
#   docker build -t t5-toolkit .
#   docker run --gpus all --ipc=host -v "$HOME":/app/mount t5-toolkit python seq2seq.py \
#       --model_init_name flan-t5-xl --data_name my_data --max_steps 6000 --eval_steps 2000 --bf16
#   docker run --gpus all --ipc=host -v "$HOME":/app/mount t5-toolkit \
#       accelerate launch --config_file configs/deepspeed_zero3.yaml seq2seq.py ...
# requirements.txt pins torch==2.13.0, which pip installs as the CUDA build on Linux x86_64 (the image
# needs no CUDA toolkit: the wheels bring the CUDA libraries; the host needs the NVIDIA driver and the
# NVIDIA container toolkit for --gpus). No secrets are baked in: pass them when running, e.g.
# `-e WANDB_API_KEY -e HF_TOKEN` (values taken from your shell), or `-e WANDB_MODE=offline`.
# --ipc=host (or --shm-size=16g): several GPU processes and DataLoader workers share memory through /dev/shm.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/app \
    HF_HOME=/app/mount/.cache/huggingface

WORKDIR /app

# Dependencies first: these layers are rebuilt only when the pins change. As `make install`: torch by its
# exact pin (its wheel differs per platform), then every other package from the hashed locks
# (--require-hashes). DeepSpeed (for the ZeRO configs) is built from its source distribution after torch,
# with no ops compiled ahead: ZeRO-2/3 with the Trainer's optimizer needs none. The BuildKit cache mount keeps
# downloaded wheels between builds (the image itself stays without them).
COPY requirements.txt requirements.lock requirements-deepspeed.lock ./
RUN --mount=type=cache,target=/root/.cache/pip PIP_NO_CACHE_DIR=0 pip install "$(grep -E '^torch==' requirements.txt)" \
    && PIP_NO_CACHE_DIR=0 pip install --require-hashes --no-deps -r requirements.lock \
    && PIP_NO_CACHE_DIR=0 pip install --require-hashes --no-deps -r requirements-deepspeed.lock && pip check

# The scripts, their shared modules, and the launch configs (a mount over /app/mount brings models and data).
COPY *.py ./
COPY zero_stage2_config.json zero_stage3_config.json zero_stage3_offload_config.json ./
COPY configs/ ./configs/
COPY sweeps/ ./sweeps/

# A non-root user (uid 1000). To write into the mount as yourself, run with --user "$(id -u):$(id -g)":
# /app is writable for any uid, and HOME=/app keeps caches (W&B, torch extensions) there; downloads from
# the Hub go to HF_HOME, in the mount, so they survive the container.
RUN useradd --uid 1000 --home-dir /app --no-create-home t5 && mkdir -p /app/mount && chmod -R a+rwX /app
USER 1000

CMD ["python", "seq2seq.py", "--help"]
