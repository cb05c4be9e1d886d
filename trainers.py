"""The toolkit's Trainer: one base class every script trains with, and its evaluation variants.

`ToolkitTrainer` (a `Seq2SeqTrainer`, model-agnostic: T5, causal and masked LMs) gives every run, by
construction:
- exact gradient accumulation: the task loss is token-weighted over the whole optimizer step
  (`losses.token_weighted_cross_entropy`, shifted for causal LMs), and every extra `LossTerm` is divided
  by the accumulation steps; `loss_is_scaled_for_ga` is set, not guessed;
- pluggable loss terms: `loss = task_loss + sum(term(model, inputs, outputs))`, each term logged under
  its own name (train logs and `eval_<name>`), correct under DDP and DeepSpeed (see `compute_loss`);
- a guard that stops training on a NaN / inf loss (`losses.NonFiniteLoss`), checked every micro-step;
- T5's Adafactor for `--optim adafactor` (`optimizer_cls_and_kwargs`);
- exact distributed evaluation: metrics see each example once;
- preemption handling: SIGTERM / SIGUSR1 end in a checkpoint at the next step boundary (`runner`),
  and DataLoader workers outlive those signals so that the save can finish (`_get_dataloader`);
- atomic checkpoints: a `checkpoint-N` dir appears only once its save is complete (`_save_checkpoint`).

Evaluation variants are small subclasses: `LabelScoringTrainer` (rank classification) and
`SamplingTrainer` (sampled completions, seq2seq.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
from functools import partial
from typing import Any, Callable, Sequence

import torch
from transformers import Seq2SeqTrainer

from losses import LossTerm, NonFiniteLoss, causal_cross_entropy, token_weighted_cross_entropy
from outputs import RESUME_AFTER_DISK_FULL, disk_full, no_space_left

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"  # `.tmp-checkpoint-N`: a save in progress, hidden from the `checkpoint-*` glob of rotation


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


def _preemption_proof_worker_init(init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """`worker_init_fn` of every DataLoader: the worker ignores SIGTERM and SIGUSR1, then runs the loader's own
    init (the Trainer's `seed_worker` for training).

    Slurm signals every process of a job step. A worker that dies of SIGTERM (torch's worker handler re-raises
    it) makes the main process raise "DataLoader worker ... killed by signal" before it can save; ignored, the
    main process, which caught the signal too, saves and stops. The workers still end: torch's shutdown sends
    them a stop message, they exit when the main process dies, and `_kill_workers_left_at_exit` covers the rest.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if init_fn is not None:
        init_fn(worker_id)


def _kill_workers_left_at_exit() -> None:
    """At exit multiprocessing SIGTERMs its daemonic children and joins them without a timeout: a DataLoader
    worker still alive then (persistent workers, or an iterator kept by a traceback) ignores that and would hang
    the exit. Registered after multiprocessing's own exit hook, this runs before it and kills them (daemonic
    children end with their parent anyway; torch starts its workers as daemons)."""
    import multiprocessing
    import signal

    # torch's SIGCHLD handler would report each kill as "DataLoader worker ... killed by signal".
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for process in multiprocessing.active_children():
        if process.daemon:
            process.kill()


def is_causal_lm(model: Any) -> bool:
    """A decoder-only LM whose logits at position t predict the label at t + 1."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    names = list(getattr(config, "architectures", None) or []) + [type(model).__name__]
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names)


class ToolkitTrainer(Seq2SeqTrainer):
    """The Trainer of every script (see the module docstring).

    `compute_loss_func` is the task loss (default: token-weighted cross-entropy, shifted for causal LMs);
    `loss_terms` are extra `losses.LossTerm`s.
    """

    # The task loss divides by the label tokens of the whole step and the terms are divided by the
    # accumulation steps in compute_loss: training_step must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, loss_terms: Sequence[LossTerm] = (), record_batches: bool = False,
                 eval_data_collator: Callable | None = None, kl_first_step: bool = False, **kwargs: Any) -> None:
        from runner import PreemptionCallback

        if kwargs.get("model") is not None:  # --lora_r: the Trainer gets the adapted model (its peft handling keys on it)
            kwargs["model"] = self._with_lora(kwargs["model"], kwargs.get("args"))
        model = kwargs.get("model", args[0] if args else None)
        causal = is_causal_lm(model)
        if kwargs.get("compute_loss_func") is None:
            kwargs["compute_loss_func"] = causal_cross_entropy if causal else token_weighted_cross_entropy
        super().__init__(*args, **kwargs)
        self._loss_shifts_labels = causal  # the Trainer counts num_items_in_batch over labels[..., 1:] then
        self._given_terms = list(loss_terms)
        self._kl_first_step = kl_first_step
        self.freezer: Any = None
        self._freezer_callback: Any = None
        self.loss_terms: list[LossTerm] = []
        self._term_totals: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._eval_batches = 0
        self._terms_logged_at = 0  # global step of the last train log that carried the terms
        self.preemption = PreemptionCallback()
        self.add_callback(self.preemption.callback())
        self._apply_controls(self.model)
        self._staging_dir: str | None = None  # while a checkpoint is saved: where the parent's save writes
        # With record_batches: each batch's losses, {"dataset_type": "train" | "validation", "epoch", "loss", <term>: ...}
        # (values as 0-d tensors until read: no device sync per batch), for finetune_lm.py's metrics.csv.gz.
        self.batch_records: list[dict[str, Any]] | None = [] if record_batches else None
        self.eval_data_collator = eval_data_collator  # evaluation batches' own collator (default: data_collator)

    def _apply_controls(self, model: Any) -> None:
        """The training controls (controls.py) from the arguments, for `model`: what trains (a `controls.Freezer`
        and its callback) and the loss terms, the given ones plus the KL term to `model` as it is now. Run again
        for each model a hyper-parameter trial initialises, with the trial's values."""
        from controls import Freezer, kl_loss_term

        args = self.args
        if getattr(args, "patience", None) is not None and args.eval_strategy == "no":
            from errors import UserError

            raise UserError(f"--patience {args.patience}: early stopping needs evaluations; set --eval_strategy epoch (or steps) "
                            "and give validation data")
        if self._freezer_callback is not None:
            self.remove_callback(self._freezer_callback)
            self.freezer = self._freezer_callback = None
        terms = list(self._given_terms)
        if getattr(args, "head_mask", None):  # before the KL term's copy: the starting model is the masked one
            from controls import apply_head_mask_flag

            apply_head_mask_flag(args.head_mask, model)
        if hasattr(args, "kl_dataset"):
            if args.frozen_params or args.unfrozen_params or args.freeze_words or args.unfreeze_words:
                self.freezer = Freezer(model, args, self.processing_class)
                self._freezer_callback = self.freezer.callback()
                self.add_callback(self._freezer_callback)
            if args.kl_dataset:
                if self.processing_class is None:
                    raise ValueError("--kl_dataset needs the Trainer's processing_class (the tokenizer) to read the KL data")
                encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
                task = "seq2seq" if encoder_decoder else "lm" if is_causal_lm(model) else "mlm"
                terms.append(kl_loss_term(args, model, self.processing_class, task, self._kl_first_step, args.seed))
        names = [term.name for term in terms]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"loss terms need distinct names other than 'loss': {names}")
        for term in terms:
            if hasattr(term, "bind"):  # a term that reads the step, the accumulation or the device (losses.KLBaselineLoss)
                term.bind(self)
        self.loss_terms = terms

    @staticmethod
    def _with_lora(model: Any, args: Any) -> Any:
        """`model` with fresh LoRA adapters when --lora_r asks for them (adapters.py); as it is otherwise, and when it
        already carries an adapter (loaded from an adapter directory: training continues it)."""
        from adapters import add_lora, is_peft_model

        if getattr(args, "lora_r", None) is None or is_peft_model(model):
            return model
        if not getattr(model, "name_or_path", None):
            from errors import UserError

            raise UserError(f"--lora_r {args.lora_r}: LoRA adapts a pretrained model, and this run builds a new one; give "
                            "--model_name_or_path (or train the new model without --lora_r)")
        return add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)

    def call_model_init(self, trial: Any = None) -> Any:
        """A trial's fresh model, with the training controls applied to it. transformers 5.23's `train()` calls this
        before `_hp_search_setup` sets the trial's values on the arguments, so a study sets them first
        (`studies.run_study` does) for the KL term and freezing to use them."""
        model = super().call_model_init(trial)
        if hasattr(self, "_given_terms"):  # a trial's fresh model (not the parent's __init__, before ours has run)
            model = self._with_lora(model, self.args)
            self._apply_controls(model)
        return model

    # --- data ----------------------------------------------------------------------------------------

    def _get_dataloader(self, *args: Any, **kwargs: Any) -> Any:
        """The parent's DataLoader, with workers that outlive a preemption signal (`_preemption_proof_worker_init`),
        and evaluation batches made by `eval_data_collator` when there is one."""
        training = kwargs.get("is_training", args[4] if len(args) > 4 else False)
        collator = self.data_collator
        if not training and self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            dataloader = super()._get_dataloader(*args, **kwargs)
        finally:
            self.data_collator = collator
        # accelerate's DataLoaderShard iterates a torch DataLoader it holds (and reads its attributes from it,
        # e.g. when skip_first_batches copies the loader on resume); each new iterator reads worker_init_fn.
        torch_loader = getattr(dataloader, "base_dataloader", dataloader)
        if torch_loader.num_workers > 0:
            torch_loader.worker_init_fn = partial(_preemption_proof_worker_init, torch_loader.worker_init_fn)
            import multiprocessing.util  # noqa: F401  (registers its exit hook, if not yet, before ours: ours runs first)

            atexit.unregister(_kill_workers_left_at_exit)  # registered once
            atexit.register(_kill_workers_left_at_exit)
        return dataloader

    # --- checkpoints ---------------------------------------------------------------------------------

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The parent's save, made atomic: it writes into `.tmp-checkpoint-N/checkpoint-N`, which is renamed
        to `checkpoint-N` once every process has written its part. A save killed mid-way (kill -9) leaves
        only the hidden dir, which the next save removes; `--resume_from_checkpoint auto` never
        sees it, nor does rotation (`save_total_limit`), which runs here after the rename. A save that runs out
        of disk space removes its hidden dir and ends the run with one line (`outputs.disk_full`).

        The staging dir is named from the step alone so that every process agrees on it without talking.
        """
        from transformers.trainer import TRAINER_STATE_NAME
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, final = os.path.join(run_dir, STAGING_PREFIX + name), os.path.join(run_dir, name)
        if self.args.should_save:
            for stale in os.listdir(run_dir) if os.path.isdir(run_dir) else ():
                if stale.startswith(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-"):  # a save that was killed
                    shutil.rmtree(os.path.join(run_dir, stale), ignore_errors=True)
            os.makedirs(staging, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:
            if not no_space_left(err, run_dir):
                raise
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)  # the half-written save, and its space
            raise disk_full(run_dir, name, RESUME_AFTER_DISK_FULL) from None
        finally:
            self._staging_dir = None
        # The parent points best_model_checkpoint at the staging copy when this step is the best.
        if self.state.best_model_checkpoint == os.path.join(staging, name):
            self.state.best_model_checkpoint = final
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staging, name, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every process has written its part
        if self.args.should_save:
            if os.path.exists(final):  # a checkpoint of this step from an earlier run: replaced whole
                os.rename(final, os.path.join(staging, "replaced"))
            os.rename(os.path.join(staging, name), final)
            shutil.rmtree(staging)
        if self.args.should_save:
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    # --- the Hub: one push of a finished run (hub.py, from RunOutputs.finish), none of the Trainer's own ---------------

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Off: the Trainer would create the repository as it is built; hub.py creates it when the finished run is pushed."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Off: checkpoints are not pushed."""

    def push_to_hub(self, *args: Any, **kwargs: Any) -> None:
        """Off (the Trainer calls it from save_model with --push_to_hub): hub.push_run pushes the finished run."""

    # --- early stopping ------------------------------------------------------------------------------

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """With --patience, the original finetune-lm rule decides both the best model and when to stop
        (controls.early_stopping_state): only an evaluation better than best - delta is a new best; training stops
        once `patience` evaluations in a row were not, and at least --min_epochs epochs have run. The state comes
        from the log history, so a resumed run continues the count. Without --patience: the parent's."""
        patience = getattr(self.args, "patience", None)
        if patience is None:
            return super()._determine_best_metric(metrics, trial)
        from controls import early_stopping_state

        key = self.args.metric_for_best_model or "loss"
        key = key if key.startswith("eval_") else f"eval_{key}"
        if key not in metrics:
            raise KeyError(f"early stopping monitors {key}, which the evaluation does not report: {sorted(metrics)}")
        values = [entry[key] for entry in self.state.log_history if key in entry]
        if not values or values[-1] != metrics[key]:  # the current evaluation, if the log does not hold it yet
            values.append(metrics[key])
        best, counter, at = early_stopping_state(values, self.args.delta, bool(self.args.greater_is_better))
        new_best = at == len(values) - 1
        if new_best:
            self.state.best_metric = best
            self.state.best_global_step = self.state.global_step
        if counter >= patience and (self.state.epoch or 0) >= self.args.min_epochs - 1e-9:
            logger.info("early stopping at epoch %.2f: %d evaluations without an improvement of more than %g on %s "
                        "(best %.6g)", self.state.epoch or 0, counter, self.args.delta, key, best)
            self.control.should_training_stop = True
        return new_best

    # --- optimizer -------------------------------------------------------------------------------

    def create_optimizer(self, model: Any = None) -> Any:
        # Read the arguments when the optimizer is built: a hyper-parameter trial sets its learning
        # rate after the Trainer was made.
        t5_adafactor = optimizer_cls_and_kwargs(self.args)
        if self.optimizer is None and t5_adafactor is not None:
            self.optimizer_cls_and_kwargs = t5_adafactor
        return super().create_optimizer(model)

    # --- loss --------------------------------------------------------------------------------------

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """Task loss plus the loss terms.

        The terms are added after the parent's scaling: with `average_tokens_across_devices` (on by
        default) the parent multiplies the task loss by the number of processes, because it divides by
        the label tokens of all processes and DDP then averages the gradients; a term is a per-process
        mean, which DDP's averaging already makes the global mean, so it must not be multiplied.
        """
        loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True, num_items_in_batch=num_items_in_batch)
        training = model.training
        record = self._batch_record(loss, training) if self.batch_records is not None else None
        if self.loss_terms:
            split = "train" if training else "eval"
            steps = self.current_gradient_accumulation_steps if training else 1
            bare = self.accelerator.unwrap_model(model)  # parameter names as in the checkpoint, not DDP's module.*
            for term in self.loss_terms:
                if term.train_only and not training:
                    continue
                value = term(bare, inputs, outputs) / steps
                loss = loss + value
                if record is not None:
                    record[term.name] = value.detach() * steps
                totals = self._term_totals[split]
                totals[term.name] = totals.get(term.name, 0.0) + value.detach().float()
            if not training:
                self._eval_batches += 1
        if training and torch.is_grad_enabled() and not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLoss(f"{loss.detach().float().item()}")
        return (loss, outputs) if return_outputs else loss

    def _batch_record(self, loss: torch.Tensor, training: bool) -> dict[str, Any]:
        """A `batch_records` entry for this batch. The task loss is divided by the label tokens of the whole optimizer
        step (and multiplied by the process count, see compute_loss): undone here, exactly for one batch per step
        on one process, else as the step's token mean."""
        scale = 1.0
        if training:
            scale = self.current_gradient_accumulation_steps
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                scale /= self.args.world_size
        epoch = self.state.epoch or 0.0
        record = {"dataset_type": "train" if training else "validation",
                  "epoch": int(epoch) + 1 if training else max(round(epoch), 1), "loss": loss.detach() * scale}
        self.batch_records.append(record)
        return record

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Train logs also carry each term's mean per optimizer step since the last log, over all processes."""
        if "loss" in logs and self._term_totals["train"]:
            steps = max(self.state.global_step - self._terms_logged_at, 1)
            for name, total in self._term_totals["train"].items():
                logs[name] = self._mean_over_processes(total) / steps
            self._term_totals["train"] = {}
            self._terms_logged_at = self.state.global_step
        super().log(logs, start_time)

    def _mean_over_processes(self, value: Any) -> float:
        tensor = torch.as_tensor(value, dtype=torch.float32, device=self.args.device).reshape(1)
        if self.args.world_size > 1:
            tensor = self.accelerator.reduce(tensor, reduction="mean")
        return float(tensor.item())

    # --- evaluation --------------------------------------------------------------------------------

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        """The parent's loop, with metrics computed on each example exactly once, plus the loss terms.

        Under several processes the distributed sampler pads the last batch with repeated examples; in
        our runs (transformers 5.23, accelerate 1.15, gloo) the gathered predictions kept them (64 rows
        for 61 examples), so metrics counted some examples twice. This trims predictions and labels to
        the dataset's length before `compute_metrics` runs.
        """
        from transformers.trainer_utils import EvalLoopOutput, EvalPrediction

        self._term_totals["eval"], self._eval_batches = {}, 0
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
        for term in self.loss_terms if self._eval_batches else ():  # generate-mode evaluation computes no loss
            if not term.train_only:
                total = self._term_totals["eval"].get(term.name, 0.0)
                metrics[f"{metric_key_prefix}_{term.name}"] = self._mean_over_processes(total) / max(self._eval_batches, 1)
        return EvalLoopOutput(predictions=predictions, label_ids=labels, metrics=metrics, num_samples=n)


def _first_rows(value: Any, n: int) -> Any:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_first_rows(v, n) for v in value)
    return value[:n]


class LabelScoringTrainer(ToolkitTrainer):
    """Evaluation predictions are label scores instead of generated tokens (rank classification).

    `prediction_step` returns (teacher-forced loss on the reference, scores (batch, num_labels),
    reference label ids); see `scoring.score_labels`.
    """

    def __init__(self, *args: Any, candidates: torch.Tensor, length_normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.candidates = candidates
        self.length_normalize = length_normalize

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        from scoring import score_labels

        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss = None
        if labels is not None:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, dict(inputs)).detach()
        if prediction_loss_only:
            return loss, None, None
        with self.compute_loss_context_manager():
            scores = score_labels(  # the bare model: a DDP wrapper has no get_encoder()
                self.accelerator.unwrap_model(model), inputs["input_ids"], inputs.get("attention_mask"),
                self.candidates, self.length_normalize,
            )
        return loss, scores, labels


class SamplingTrainer(ToolkitTrainer):
    """Evaluation adds sampled-completion metrics to the eval loss (seq2seq.py).

    `sampler` (seq2seq.CompletionSampler) has the eval `records`, an `evaluate(trainer)` that samples
    and scores them, and keeps the merged metrics in `last_metrics`. The metrics are merged before the
    Trainer logs them, so W&B, callbacks and `metric_for_best_model` see `eval_exact_match` etc.
    """

    def __init__(self, *args: Any, sampler: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler = sampler

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if metric_key_prefix == "eval" and self.sampler.records:
            sampled = self.sampler.evaluate(self)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in sampled.items()})
            self.sampler.last_metrics = dict(output.metrics)
        return output
