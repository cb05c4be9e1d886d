"""The run loop around `trainer.train()`: logging set-up, preemption (SIGTERM / SIGUSR1 -> checkpoint,
exit 75), `--resume_from_checkpoint auto`, the NaN stop, and saving the trained model."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import torch

from errors import UserError, preemption_requested
from losses import NonFiniteLoss
from outputs import PREEMPTED_EXIT_CODE, PREEMPTED_MARKER, RESUME_AFTER_DISK_FULL, disk_full, no_space_left, write_text_atomic

logger = logging.getLogger(__name__)


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
    from trainer_arguments import warn_about_cpu_bf16

    warn_about_cpu_bf16(training_args)


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


def run_training(trainer: Any, model_dir: str | None = None) -> dict[str, float]:
    """`trainer.train()` with the toolkit's safety nets, then the model saved to `model_dir` (default: the
    output dir) and the trainer state to the output dir (every process calls this: DeepSpeed gathers the
    weights); returns the train metrics.
    `trainer` is a `trainers.ToolkitTrainer`, which listens for the signals from its construction on.

    - `--resume_from_checkpoint auto` resumes from the newest complete checkpoint in the output dir, if
      any (`last_complete_checkpoint`); a resumed run warns where its arguments differ from the
      checkpoint's (HF #28867).
    - On SIGTERM / SIGUSR1 it saves a checkpoint, writes the PREEMPTED marker and exits with 75.
    - On a NaN / inf loss it stops with a one-line error naming the step; checkpoints stay.
    - Out of disk space while saving (a checkpoint or the final model): one line naming the dir and the
      free space; the checkpoints saved before stay.
    """
    args = trainer.args
    resume = args.resume_from_checkpoint
    if resume == "auto":
        resume = last_complete_checkpoint(args.output_dir)
        logger.info("resume_from_checkpoint auto: %s", resume or "no checkpoint, starting fresh")
    if resume not in (None, True, "True", "true"):
        warn_changed_arguments(resume, args)
    preemption = trainer.preemption
    try:
        metrics = trainer.train(resume_from_checkpoint=resume).metrics
    except NonFiniteLoss as err:
        last = last_complete_checkpoint(args.output_dir)
        raise UserError(
            f"training stopped: the loss is {err} at step {trainer.state.global_step + 1}; "
            f"last good checkpoint: {last or 'none'} (lower --learning_rate, or check the data)"
        ) from None
    if preemption.stopped_at is not None:
        if trainer.is_world_process_zero():
            write_text_atomic(os.path.join(args.output_dir, PREEMPTED_MARKER), f"{preemption.stopped_at}\n")
        logger.warning("preempted: checkpoint at step %d saved in %s; resume with: %s", preemption.stopped_at, args.output_dir,
                       resume_command(sys.argv, args))
        mark_wandb_preempting()
        raise SystemExit(PREEMPTED_EXIT_CODE)
    marker = os.path.join(args.output_dir, PREEMPTED_MARKER)
    if trainer.is_world_process_zero() and os.path.exists(marker):
        os.remove(marker)  # this run finished what the preempted one started
    try:
        trainer.save_model(model_dir or args.output_dir)
        trainer.save_state()
        if getattr(args, "merge_lora", False) and trainer.is_world_process_zero():
            from adapters import MERGED_DIR, save_merged

            base_model = trainer.accelerator.unwrap_model(trainer.model).get_base_model()
            save_merged(model_dir or args.output_dir, os.path.join(model_dir or args.output_dir, MERGED_DIR), type(base_model),
                        trainer.processing_class)
    except Exception as err:
        if not no_space_left(err, args.output_dir):
            raise
        raise disk_full(model_dir or args.output_dir, "the trained model", RESUME_AFTER_DISK_FULL) from None
    return metrics


def mark_wandb_preempting() -> bool:
    """Tell W&B that this run stopped for preemption (`wandb.run.mark_preempting()`): a sweep then queues the run again
    instead of counting it failed or finished. Returns whether there was a W&B run to mark."""
    wandb = sys.modules.get("wandb")  # imported by the Trainer's W&B callback when --report_to wandb
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return False
    run.mark_preempting()
    logger.info("W&B run %s marked as preempting", getattr(run, "id", "?"))
    return True


def resume_command(argv: list[str], training_args: Any) -> str:
    """The command line that resumes this run: the same flags, the run dir named by the arguments' own
    flag (`run_dir_flag`: --output_dir, or --training_run_name in the mount layout) where the command
    left it to a default (a timestamped name), and `--resume_from_checkpoint auto`; secrets redacted."""
    import shlex

    from provenance import redact_argv

    args = list(argv[1:])
    extra: list[str] = []
    flag, value = training_args.run_dir_flag, training_args.run_dir_value
    if not any(a.split("=", 1)[0] == flag for a in args):
        extra += [flag, value]
    if not any(a.split("=", 1)[0] == "--resume_from_checkpoint" for a in args):
        extra += ["--resume_from_checkpoint", "auto"]
    return shlex.join(["python", os.path.basename(argv[0])] + redact_argv(args) + extra)


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that its save finished, or None; warns about each newer
    one it skips.

    transformers' `get_last_checkpoint` takes the highest N whatever the dir holds. `ToolkitTrainer`
    saves atomically, but a checkpoint written by an older version, or copied in, may be half written
    (killed or out of disk mid-save): resuming from it crashed on every requeue.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not os.path.isdir(output_dir):
        return None
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := pattern.match(name))]
    for _, name in sorted(found, reverse=True):
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path) if os.path.isdir(path) else "not a directory"
        if problem is None:
            return path
        logger.warning("skipping incomplete checkpoint %s (%s): its save did not finish", path, problem)
    return None


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint dir `path` is not one a save finished, or None if it is.

    The Trainer writes the weights, optimizer and RNG state first and `trainer_state.json` last, so a
    readable trainer state plus weights whose size matches their header mean the save got to its end.
    """
    import json

    from safetensors import safe_open

    state = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state):
        return "no trainer_state.json"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"unreadable trainer_state.json: {err}"
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(path, name), framework="pt"):
                    pass
            except Exception as err:  # safetensors raises its own error type for a truncated file
                return f"unreadable {name}: {err}"
    return None


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


def rank_zero_value(training_args: Any, value: Any) -> Any:
    """`value` as the main process has it, on every process (e.g. a run dir named after each process's
    own clock: two processes that straddle a second would otherwise pick different dirs). Reading
    `world_size` sets up the process group under torchrun / accelerate launch."""
    if training_args.world_size <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
