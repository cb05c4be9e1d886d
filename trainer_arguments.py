"""The scripts' Trainer arguments: `Seq2SeqTrainingArguments` plus the toolkit's shared flags, and
each script's defaults (T5's pre-training and fine-tuning recipes). Imports torch and transformers;
`arguments.py` reads the same flags early from `trainer_flags.json` (regenerate it with
`python arguments.py` after changing a field here)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from transformers import Seq2SeqTrainingArguments

from arguments import check_fp16, check_resume_flag, sweep_run_dir
from controls import TrainingControls, check_control_values
from errors import UserError
from provenance import redact_argv

logger = logging.getLogger(__name__)

# The classes scripts name in their ARGUMENTS (and trainer_flags.json holds).
SCRIPT_CLASSES = ("PreTrainingArguments", "FineTuningArguments", "MountRunArguments", "LMTrainingArguments", "BiasRunArguments")


@dataclass
class ToolkitTrainingArguments(Seq2SeqTrainingArguments, TrainingControls):
    """`Seq2SeqTrainingArguments` plus the toolkit's shared flags and the training controls (controls.py: KL to
    the starting model, early stopping, freezing, new tokens).

    Changed default: `bf16` is None ("auto"): on for CUDA GPUs that support bf16, off on the CPU.
    """

    bf16: Optional[bool] = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision. Default: on for CUDA GPUs that support it, off elsewhere; on a CPU, "
            "--bf16 turns on CPU autocast (with bf16 instructions, AVX-512 BF16 or AMX: 1.5x faster than fp32 eager, "
            "2.3x with --torch_compile; without them ~50x slower, and the run warns; bench/README.md). "
            "--bf16 False forces fp32."
        },
    )
    allow_fp16: bool = field(
        default=False, metadata={"help": "Allow --fp16, which T5 refuses by default: its activations overflow float16."}
    )
    adafactor_scale_parameter: bool = field(
        default=True,
        metadata={
            "help": "With --optim adafactor, scale each update by the parameter's RMS as T5's Adafactor does "
            "(mesh-TF multiply_by_parameter_scale); transformers' own adafactor turns this off "
            "(--no_adafactor_scale_parameter gives its behaviour)."
        },
    )
    push_to_hub_dry_run: bool = field(
        default=False,
        metadata={"help": "At the end of a finished run, write what --push_to_hub would upload (model or adapter, tokenizer, "
                  "results, model card) into <output_dir>/hub without uploading (hub.py)."},
    )
    no_train: bool = field(default=False, metadata={"help": "Skip training: only evaluate (and predict) the given model."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Checkpoint directory to resume from, or 'auto': the latest checkpoint in the output dir (none: start fresh)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that holds a finished run (its results are replaced)."}
    )

    def __post_init__(self) -> None:
        self.output_dir = sweep_run_dir(self.output_dir, "--output_dir")  # {run_id} / {sweep_id} under `wandb agent`
        # Decided before the parent's checks, which turn bf16 into accelerate's mixed_precision.
        check_fp16(self.fp16, self.allow_fp16)
        cuda = torch.cuda.is_available() and not self.use_cpu
        if self.bf16 is None:
            self.bf16 = bool(not self.fp16 and cuda and torch.cuda.is_bf16_supported())
        if not cuda and not _other_accelerator():
            # Say so: transformers then runs CPU bf16 autocast (it refuses bf16 on a CPU otherwise) and,
            # under torchrun / accelerate launch, DDP over gloo (otherwise every process trains alone).
            self.use_cpu = True
        if isinstance(self.report_to, str) and "," in self.report_to:  # --report_to wandb,tensorboard
            self.report_to = [name.strip() for name in self.report_to.split(",") if name.strip()]
            if "none" in self.report_to:
                raise UserError(f"--report_to {','.join(self.report_to)}: 'none' turns reporting off and cannot be combined; "
                                "give 'none' alone or a list of integrations (wandb, tensorboard, ...)")
        if self.hub_token:
            # huggingface_hub reads HF_TOKEN; kept out of the arguments, no saved file (training_args.bin,
            # provenance.json) can carry it, and out of sys.argv, which W&B records as run metadata.
            os.environ["HF_TOKEN"] = self.hub_token
            self.hub_token = None
            sys.argv[:] = redact_argv(sys.argv)
        check_reporting(self.report_to)
        check_resume_flag(self.resume_from_checkpoint)
        check_control_values(self)
        if not cuda:
            self.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns on a CPU
        super().__post_init__()

    run_dir_flag = "--output_dir"  # the flag that names the run dir (resume commands repeat it)

    @property
    def run_dir_value(self) -> str:
        return self.output_dir

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"


def check_reporting(report_to: Any) -> None:
    """Refuse `--report_to wandb` that would fail mid-run for want of an API key (W&B's own error
    comes from inside trainer.train(), after the output directory exists)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in names and "all" not in names:
        return
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    if os.path.isfile(netrc):
        with open(netrc, encoding="utf-8", errors="replace") as f:
            if "api.wandb.ai" in f.read():
                return
    raise UserError("--report_to wandb: no W&B API key; set WANDB_API_KEY, run `wandb login`, or set WANDB_MODE=offline")


@dataclass
class T5FineTuningArguments(ToolkitTrainingArguments):
    """Trainer arguments with T5's fine-tuning recipe as defaults (Raffel et al. 2020, sec. 3.1.3;
    changed from the Trainer's): optim adafactor (with parameter scaling, see trainers.optimizer_cls_and_kwargs),
    learning_rate 1e-3, lr_scheduler_type constant_with_warmup (warmup_steps 0: constant)."""

    optim: str = field(default="adafactor", metadata={"help": "Optimizer (fine-tuning default: adafactor, as T5)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate (fine-tuning default: 1e-3, as T5)."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "Schedule (fine-tuning default: constant after --warmup_steps, as T5)."})


@dataclass
class MountRunArguments(T5FineTuningArguments):
    """T5 fine-tuning arguments under the names the `mount/` scripts' users type (seq2seq.py, clf.py;
    changed from the Trainer's: --train_batch_size / --eval_batch_size are the per-device batch
    sizes; output_dir is set from --training_run_name; --eval_steps alone turns on step evaluation)."""

    output_dir: str | None = field(default=None, metadata={"help": "Set from --mount_dir and --training_run_name; do not pass."})
    per_device_train_batch_size: int = field(default=8, metadata={"aliases": ["--train_batch_size"], "help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=8, metadata={"aliases": ["--eval_batch_size"], "help": "Eval, sampling and prediction batch size per device."})

    run_dir_flag = "--training_run_name"

    @property
    def run_dir_value(self) -> str:
        return os.path.basename(os.path.normpath(self.output_dir))

    def __post_init__(self) -> None:
        if self.output_dir is not None:
            raise UserError("--output_dir: results go to <mount_dir>/models/<training_run_name>; set --training_run_name instead")
        if self.eval_steps is not None and self.eval_strategy == "no":  # a str enum: equal to its value
            self.eval_strategy = "steps"  # `--eval_steps 2000` means evaluate every 2000 steps
        super().__post_init__()


# T5's schedule: lr = 0.01 * 1 / sqrt(max(step, 10k)). transformers' inverse_sqrt with timescale 10k
# gives 0.01 * sqrt(10k / (step + 10k - warmup)): the same decay past 10k steps, a gentle one before.
T5_INVERSE_SQRT = {"timescale": 10000}


@dataclass
class PreTrainingArguments(ToolkitTrainingArguments):
    """pre_train_t5.py's Trainer arguments, with pre-training defaults (changed from the Trainer's: optim adafactor,
    learning_rate 1e-2, lr_scheduler_type inverse_sqrt with timescale 10k, warmup_steps 0.01 of the
    run, i.e. T5's Adafactor recipe; remove_unused_columns False; plain AdamW at T5's learning rates diverges)."""

    optim: str = field(default="adafactor", metadata={"help": "Optimizer (pre-training default: adafactor, without relative steps or parameter scaling)."})
    learning_rate: float = field(default=1e-2, metadata={"help": "Peak learning rate (pre-training default: 1e-2 as in T5)."})
    lr_scheduler_type: str = field(default="inverse_sqrt", metadata={"help": "Schedule (pre-training default: inverse_sqrt, T5's)."})
    warmup_steps: float = field(default=0.01, metadata={"help": "Linear warm-up: steps, or a ratio of the run when below 1 (pre-training default: 0.01)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns the model does not take (pre-training default: False; the collator reads row_id)."})
    lr_scheduler_kwargs: dict | str | None = field(
        default_factory=lambda: dict(T5_INVERSE_SQRT), metadata={"help": "Scheduler options as JSON (pre-training default for inverse_sqrt: {\"timescale\": 10000})."}
    )

    def __post_init__(self) -> None:
        if self.lr_scheduler_type != "inverse_sqrt" and self.lr_scheduler_kwargs == T5_INVERSE_SQRT:
            self.lr_scheduler_kwargs = {}  # our default belongs to inverse_sqrt only
        super().__post_init__()


@dataclass
class FineTuningArguments(T5FineTuningArguments):
    """fine_tune_t5.py's Trainer arguments, with T5's fine-tuning defaults (see T5FineTuningArguments).
    `metric_for_best_model` defaults to the task's `metric_to_optimize`; `load_best_model_at_end`
    defaults to on when evaluation and saving share a schedule."""

    load_best_model_at_end: Optional[bool] = field(default=None, metadata={"help": "Reload the best checkpoint (by metric_for_best_model) at the end. Default: on when eval and save strategies match."})

    def __post_init__(self) -> None:
        if self.load_best_model_at_end is None:
            strategies_match = self.eval_strategy != "no" and self.save_strategy == self.eval_strategy
            eval_every = self.eval_steps or self.logging_steps  # the parent fills eval_steps from logging_steps
            steps_match = self.eval_strategy != "steps" or self.save_steps % eval_every == 0
            self.load_best_model_at_end = strategies_match and steps_match
        task_default = self.metric_for_best_model is None
        super().__post_init__()
        if task_default:  # the parent put "loss" here; the script sets the task's metric instead
            self.metric_for_best_model = None


@dataclass
class LMTrainingArguments(ToolkitTrainingArguments):
    """finetune_lm.py's Trainer arguments, under the original finetune-lm toolkit's names where they differ
    (--epochs, --lr, --per_device_validation_batch_size, --per_device_test_batch_size). Changed from the
    Trainer's defaults: evaluation and a checkpoint every epoch, the best model by validation loss kept
    (save_total_limit 1 plus the best) and reloaded at the end, batch sizes 32 (the original's), and
    output_dir chosen by the script (outputs/<train file>/<model>/<time>, or outputs/test_only/<model>)."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the run writes (default: outputs/<train file stem>/<model>/<time>; a test-only run: outputs/test_only/<model>)."})
    num_train_epochs: float = field(default=3.0, metadata={"aliases": ["--epochs"], "help": "Epochs to train."})
    learning_rate: float = field(default=5e-5, metadata={"aliases": ["--lr"], "help": "Peak learning rate (AdamW)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device (before a per_batch preprocessing function that changes the count)."})
    per_device_eval_batch_size: int = field(default=32, metadata={"aliases": ["--per_device_validation_batch_size"], "help": "Validation batch size per device."})
    per_device_test_batch_size: int = field(default=32, metadata={"help": "Test (surprisal) batch size per device; rows are sorted by length first."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on --validation_file (default: every epoch)."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint (default: every epoch)."})
    save_total_limit: Optional[int] = field(default=1, metadata={"help": "Checkpoints kept besides the best (default 1)."})
    load_best_model_at_end: Optional[bool] = field(default=True, metadata={"help": "Reload the checkpoint with the lowest validation loss at the end; it is saved to model/."})

    run_dir_flag = "--output_dir"

    def __post_init__(self) -> None:
        if self.per_device_test_batch_size < 1:
            raise UserError(f"--per_device_test_batch_size {self.per_device_test_batch_size}: must be at least 1")
        super().__post_init__()


@dataclass
class BiasRunArguments(ToolkitTrainingArguments):
    """bias.py's arguments from the Trainer's (it scores, it does not train): --output_dir (required),
    --per_device_eval_batch_size (model rows, i.e. masked copies and candidates, per forward pass; default 32,
    changed from the Trainer's 8), --bf16 (default off, also on GPUs: changed), --seed, --head_mask, --disable_tqdm."""

    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Model rows (masked copies, candidates) per forward pass."})
    bf16: Optional[bool] = field(
        default=False,
        metadata={"help": "Score under bf16 autocast. Default off, also on GPUs: bf16 logits move pseudo-log-likelihoods "
                  "by ~0.1 nats, enough to flip close pairs; the scores are fp32 unless you ask."},
    )


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX). Without them (AVX2 only, or AVX-512
    without BF16: `get_cpu_capability()` says "AVX512" either way) a bf16 matmul is emulated, ~50x slower
    than fp32 (0.84 vs 45 GFLOP/s on 1024 x 1024, measured on an AVX2 AMD EPYC)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


CPU_BF16_ADVICE = (
    "--bf16 on a CPU without bf16 instructions (no AVX-512 BF16 or AMX): bf16 matmuls are emulated there, "
    "about 50x slower than fp32; drop --bf16 (fp32 is the default on a CPU) and use --torch_compile for the "
    "fastest fp32 run (README: Fastest pre-training)"
)


def warn_about_cpu_bf16(training_args: Any) -> bool:
    """Warn (once per run, on the main process) when --bf16 would run CPU autocast on a CPU that emulates
    bf16. Returns whether it warned."""
    if not (getattr(training_args, "bf16", False) and getattr(training_args, "use_cpu", False)):
        return False
    if cpu_has_native_bf16() or not getattr(training_args, "should_log", True):
        return False
    logger.warning(CPU_BF16_ADVICE)
    return True


def _other_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())
