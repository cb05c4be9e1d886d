"""Training plumbing shared by the scripts (imported after their early input checks: it pulls in torch
and transformers): the scripts' Trainer arguments (precision policy, T5 defaults), the token-weighted
loss that keeps gradient accumulation exact, T5's Adafactor, preemption and NaN guards, logging,
provenance and the loss-curve plot."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainingArguments

from cli import UserError, check_fp16, check_resume_flag
from outputs import PREEMPTED_EXIT_CODE, PREEMPTED_MARKER, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "sentencepiece", "numpy", "deepspeed", "wandb")


@dataclass
class ToolkitTrainingArguments(Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` plus the toolkit's shared flags.

    Changed default: `bf16` is None ("auto"): on for CUDA GPUs that support bf16, off on the CPU.
    """

    bf16: Optional[bool] = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision. Default: on for CUDA GPUs that support it, off elsewhere; on a CPU, "
            "--bf16 turns on CPU autocast (with bf16 instructions: 1.5x faster than fp32 eager, 2.3x with "
            "--torch_compile; bench/README.md). --bf16 False forces fp32."
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
    no_train: bool = field(default=False, metadata={"help": "Skip training: only evaluate (and predict) the given model."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Checkpoint directory to resume from, or 'auto': the latest checkpoint in the output dir (none: start fresh)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that holds a finished run (its results are replaced)."}
    )

    def __post_init__(self) -> None:
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
        if self.hub_token:
            # huggingface_hub reads HF_TOKEN; kept out of the arguments, no saved file (training_args.bin,
            # provenance.json) can carry it, and out of sys.argv, which W&B records as run metadata.
            os.environ["HF_TOKEN"] = self.hub_token
            self.hub_token = None
            sys.argv[:] = redact_argv(sys.argv)
        check_reporting(self.report_to)
        check_resume_flag(self.resume_from_checkpoint)
        if not cuda:
            self.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns on a CPU
        super().__post_init__()

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"


class ExactEvalMixin:
    """Trainer mixin: evaluation metrics and predictions cover each example exactly once.

    Under several processes the distributed sampler pads the last batch with repeated examples; in
    our runs (transformers 5.23, accelerate 1.15, gloo) the gathered predictions kept them (64 rows
    for 61 examples), so metrics counted some examples twice. This trims predictions and labels to
    the dataset's length before `compute_metrics` runs.
    """

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        from transformers.trainer_utils import EvalLoopOutput, EvalPrediction

        compute_metrics, self.compute_metrics = self.compute_metrics, None
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        n = output.num_samples
        predictions = _first_rows(output.predictions, n)
        labels = _first_rows(output.label_ids, n)
        metrics = dict(output.metrics)
        if compute_metrics is not None and predictions is not None and labels is not None:
            for key, value in compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels)).items():
                metrics[key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}"] = value
        return EvalLoopOutput(predictions=predictions, label_ids=labels, metrics=metrics, num_samples=n)


def _first_rows(value: Any, n: int) -> Any:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_first_rows(v, n) for v in value)
    return value[:n]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def finite_loss(loss_fn: Any) -> Any:
    """`loss_fn` (a Trainer `compute_loss_func`) that raises `NonFiniteLoss` on a NaN/inf training loss.

    Checked where the loss is computed, every micro-step: the Trainer only logs every logging_steps,
    and its logging_nan_inf_filter hides non-finite values. Evaluation losses are not checked.
    """

    def checked(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)
        if torch.is_grad_enabled() and not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLoss(f"{loss.detach().float().item()}")
        return loss

    return checked


class PreemptionCallback:
    """Turns SIGTERM / SIGUSR1 (Slurm's warning signal) into a checkpoint at the next step boundary.

    The handler only sets a flag; at each step end the processes agree (an all-reduce of the flag, so
    every rank saves the same step or the save deadlocks), the Trainer saves a checkpoint and stops.
    """

    def __init__(self) -> None:
        import signal

        self.requested = False
        self.stopped_at: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                from cli import preemption_requested

                flag = outer.requested or preemption_requested()
                if args.world_size > 1:
                    import torch.distributed as dist

                    tensor = torch.tensor([1.0 if flag else 0.0], device=args.device)
                    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
                    flag = bool(tensor.item())
                if flag:
                    outer.stopped_at = state.global_step
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return _Callback()


def run_training(trainer: Any) -> dict[str, float]:
    """`trainer.train()` with the toolkit's safety nets; returns the train metrics.

    - `--resume_from_checkpoint auto` resumes from the latest checkpoint in the output dir, if any;
      a resumed run warns where its arguments differ from the checkpoint's (HF #28867).
    - On SIGTERM / SIGUSR1 it saves a checkpoint, writes the PREEMPTED marker and exits with 75.
    - On a NaN / inf loss it stops with a one-line error naming the step; checkpoints stay.
    """
    from transformers.trainer_utils import get_last_checkpoint

    args = trainer.args
    resume = args.resume_from_checkpoint
    if resume == "auto":
        resume = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        logger.info("resume_from_checkpoint auto: %s", resume or "no checkpoint, starting fresh")
    if resume not in (None, True, "True", "true"):
        warn_changed_arguments(resume, args)
    preemption = PreemptionCallback()
    trainer.add_callback(preemption.callback())
    try:
        metrics = trainer.train(resume_from_checkpoint=resume).metrics
    except NonFiniteLoss as err:
        last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        raise UserError(
            f"training stopped: the loss is {err} at step {trainer.state.global_step + 1}; "
            f"last good checkpoint: {last or 'none'} (lower --learning_rate, or check the data)"
        ) from None
    if preemption.stopped_at is not None:
        if trainer.is_world_process_zero():
            write_text_atomic(os.path.join(args.output_dir, PREEMPTED_MARKER), f"{preemption.stopped_at}\n")
        logger.warning("preempted: checkpoint at step %d saved; resume with --resume_from_checkpoint auto", preemption.stopped_at)
        raise SystemExit(PREEMPTED_EXIT_CODE)
    marker = os.path.join(args.output_dir, PREEMPTED_MARKER)
    if trainer.is_world_process_zero() and os.path.exists(marker):
        os.remove(marker)  # this run finished what the preempted one started
    return metrics


def warn_changed_arguments(checkpoint: str, args: Any) -> None:
    """Warn about arguments that differ from the ones the checkpoint was trained with."""
    saved = os.path.join(checkpoint, "training_args.bin")
    if not os.path.isfile(saved):
        return
    try:
        old = torch.load(saved, weights_only=False).to_dict()
    except Exception:  # an incompatible pickle: nothing to compare
        return
    ignore = {"resume_from_checkpoint", "output_dir", "overwrite_output_dir", "max_steps", "num_train_epochs", "logging_dir"}
    changed = [k for k, v in args.to_dict().items() if k not in ignore and k in old and old[k] != v]
    if changed:
        logger.warning("resuming %s with arguments that differ from its own: %s", checkpoint, ", ".join(sorted(changed)))


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


def use_t5_adafactor(trainer: Any) -> None:
    """With `--optim adafactor`, have the Trainer build T5's Adafactor (see `optimizer_cls_and_kwargs`).

    Seq2SeqTrainer's constructor does not take `optimizer_cls_and_kwargs`; the Trainer reads the
    attribute when it creates the optimizer.
    """
    if optimizer_cls_and_kwargs(trainer.args) is None:
        return
    create = type(trainer).create_optimizer

    def create_optimizer(*args: Any, **kwargs: Any) -> Any:
        # Read the arguments when the optimizer is built: a hyper-parameter trial sets its
        # learning rate after the Trainer was made.
        trainer.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs(trainer.args)
        return create(trainer, *args, **kwargs)

    trainer.create_optimizer = create_optimizer


def optimizer_cls_and_kwargs(args: Any) -> tuple[type, dict[str, Any]] | None:
    """T5's Adafactor for `--optim adafactor` (None: let the Trainer build its optimizer).

    Mesh-TF's Adafactor, which T5 trained with, multiplies the learning rate by each parameter's
    RMS. transformers' `--optim adafactor` fixes `scale_parameter=False`, which at T5's learning
    rates moves small weight matrices by 10-20% a step: a tiny T5 pre-trained that way fine-tuned
    to 90% on the toy task where the scaled one reached 99%. `optim.T5Adafactor` is transformers'
    Adafactor with a faster step (same results).
    """
    from transformers.training_args import OptimizerNames

    from optim import T5Adafactor

    if args.optim != OptimizerNames.ADAFACTOR or not getattr(args, "adafactor_scale_parameter", False):
        return None
    return T5Adafactor, {"lr": args.learning_rate, "scale_parameter": True, "relative_step": False, "warmup_init": False}


@dataclass
class T5FineTuningArguments(ToolkitTrainingArguments):
    """Trainer arguments with T5's fine-tuning recipe as defaults (Raffel et al. 2020, sec. 3.1.3;
    changed from the Trainer's): optim adafactor (with parameter scaling, see use_t5_adafactor),
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


def _other_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def token_weighted_cross_entropy(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Cross-entropy summed over label tokens and divided by the label tokens of the whole step.

    Passed to the Trainer as `compute_loss_func`. With gradient accumulation the Trainer counts the
    label tokens of all k micro-batches (`num_items_in_batch`), so k micro-batches give the same loss
    and gradient as one batch k times larger, token-weighted. transformers 5.23 gets this wrong for
    T5 by itself: T5's `forward` takes **kwargs, so the Trainer skips dividing by the accumulation
    steps while T5 returns a per-batch mean, and loss and gradient come out k times too large.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    total = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1).to(logits.device), ignore_index=-100, reduction="sum")
    if num_items_in_batch is None:  # evaluation, or a caller that did not count: the batch mean
        num_items_in_batch = labels.ne(-100).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def setup_logging(training_args: Any) -> None:
    """Log INFO on the main process and warnings elsewhere, for our modules and transformers alike."""
    import datasets
    import transformers

    level = logging.INFO if training_args.should_log else logging.WARNING
    # Progress goes to stdout, so stderr holds only warnings and errors (a user mistake: one line).
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: record.levelno < logging.WARNING)
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.WARNING)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level,
                        handlers=[handler, errors], force=True)
    logging.getLogger().setLevel(level)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    logging.getLogger("transformers.trainer").setLevel(level)  # keeps "***** Running training *****" and friends
    datasets.utils.logging.set_verbosity(logging.WARNING)


_SECRET_KEY = re.compile(r"(^|_)(token|api_key|key|secret|password|passwd)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40}|wandb_v1_[A-Za-z0-9_]{20,})\b")
REDACTED = "<redacted>"


def _is_secret_key(key: str) -> bool:
    name = key.lstrip("-").replace("-", "_")  # --hub-token is --hub_token to the parser
    return bool(_SECRET_KEY.search(name)) and not name.endswith(("_token_id", "yes_token", "no_token"))


def redact(value: Any) -> Any:
    """A copy of `value` with secrets (tokens, API keys) replaced, by key name and by value shape."""
    if isinstance(value, dict):
        return {k: (REDACTED if _is_secret_key(str(k)) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of secret flags (`--hub_token X`, `--hub_token=X`) replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg.startswith("--") and "=" in arg and _is_secret_key(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)
        elif arg.startswith("--") and _is_secret_key(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(_SECRET_VALUE.sub(REDACTED, arg))
    return out


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_provenance(output_dir: str, arg_objects: Sequence[Any], argv: Sequence[str] | None) -> None:
    """`provenance.json`: the resolved arguments (secrets redacted), the command line, the git commit
    and the installed package versions."""
    arguments: dict[str, Any] = {}
    for obj in arg_objects:
        arguments.update(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    command = [os.path.basename(sys.argv[0])] + list(sys.argv[1:] if argv is None else argv)
    write_json_atomic(
        os.path.join(output_dir, "provenance.json"),
        {
            "arguments": redact(arguments),
            "command": redact_argv(command),
            "git_commit": _git_commit(),
            "python": sys.version.split()[0],
            "packages": _package_versions(),
        },
    )


def plot_loss_curve(log_history: list[dict[str, Any]], path: str) -> None:
    """Training and evaluation loss against the step, from the Trainer's `state.log_history`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per label token")
    ax.set_yscale("log")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(path))) or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
