"""Optuna studies over training arguments: one implementation for finetune_lm.py's `--do_optimize` and
fine_tune_t5.py's `--hp_search optuna`.

    python finetune_lm.py --model_name_or_path gpt2 --train_file data/x.txt.gz --validation_file data/x_dev.txt.gz \
        --do_optimize --params.learning_rate.values 2e-6 2e-5 --params.learning_rate.suggest_kwargs.log True \
        --optimize_kwargs.n_trials 20 --output_dir runs/lr_study

The settings are the original finetune-lm toolkit's (../shared/reference/finetune-lm.md, `OptimizationArguments`),
given as JSON mappings, in a `--config` file, or with its dotted flags:
- `params`: `{argument: {values: [low, high] or [choices], type: float | int | categorical, suggest_kwargs: {log: true}}}`
  over any Trainer or loss-term argument (learning_rate, weight_decay, kl_scaleby, ...). Without `type` a
  float argument is suggested with `suggest_float`, an int one with `suggest_int`, anything else among the
  values; list arguments (kl_scaleby, kl_examples_per_step) get one suggested value, as a one-element list.
- `study_kwargs`: optuna.create_study's settings, merged over the original's defaults (`DEFAULT_STUDY_KWARGS`);
  samplers and pruners are named by their class in optuna.samplers / optuna.pruners (no arbitrary imports).
- `optimize_kwargs`: Study.optimize's settings over `DEFAULT_OPTIMIZE_KWARGS`; `n_trials` counts the study's
  finished trials, so that a rerun adds only the missing ones.

`study_settings` checks all of that with the standard library only (a mistake is one line before torch is
imported); `run_study` runs the trials on a `trainers.ToolkitTrainer` through the Trainer's own optuna hooks
(each trial's values set on its arguments, the objective reported at every evaluation, pruning), each trial
from a fresh copy of the starting model, and writes the outputs (`STORAGE_FILE`, `TRIALS_FILE`, `PLOTS_FILE`).
The study lives in an optuna journal file (JournalStorage with a file backend, which several processes or Slurm
jobs may share; optuna advises against SQLite for that): a rerun with the same study name resumes it.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from arguments import json_mapping
from errors import UserError

logger = logging.getLogger(__name__)

STORAGE_FILE = "optimization_study.journal"  # the study (optuna JournalFileBackend), in the output dir by default
TRIALS_FILE = "optimization_trials.csv.gz"  # the original's code wrote this name; its README says optimization_results.csv.gz
PLOTS_FILE = "optimization_plots.pdf"

# optuna 5.0's classes, by name (tests/test_studies.py checks them against optuna).
SAMPLERS = ("BruteForceSampler", "CmaEsSampler", "GPSampler", "GridSampler", "NSGAIISampler", "NSGAIIISampler",
            "PartialFixedSampler", "QMCSampler", "RandomSampler", "TPESampler")
PRUNERS = ("HyperbandPruner", "MedianPruner", "NopPruner", "PatientPruner", "PercentilePruner", "SuccessiveHalvingPruner",
           "ThresholdPruner", "WilcoxonPruner")
# Keyword arguments that take a sampler or pruner, built from `<key>_kwargs` beside them.
NESTED = {"sampler": SAMPLERS, "pruner": PRUNERS, "wrapped_pruner": PRUNERS, "base_sampler": SAMPLERS, "independent_sampler": SAMPLERS}

# The original's defaults. PatientPruner(WilcoxonPruner(n_startup_steps=100)) never prunes a study that reports
# once per epoch, and GPSampler draws its first 10 trials at random.
DEFAULT_STUDY_KWARGS: dict[str, Any] = {
    "study_name": None,  # None: the script's default name (stable, so that a rerun resumes the study)
    "storage": None,  # None: <output dir>/optimization_study.journal; or a journal file path several runs share
    "sampler": "GPSampler",
    "sampler_kwargs": {"deterministic_objective": True},
    "pruner": "PatientPruner",
    "pruner_kwargs": {"wrapped_pruner": "WilcoxonPruner", "wrapped_pruner_kwargs": {"p_threshold": 0.1, "n_startup_steps": 100},
                      "patience": 30, "min_delta": 0.0},
    "direction": "minimize",
}
DEFAULT_OPTIMIZE_KWARGS: dict[str, Any] = {"n_trials": 2, "gc_after_trial": True, "show_progress_bar": False}
OPTIMIZE_KEYS = ("n_trials", "timeout", "gc_after_trial", "show_progress_bar", "n_jobs")
ORIGINAL_PARAMS = {"learning_rate": {"values": [2e-6, 2e-5]}}  # the original's default study: its `lr`
PARAM_KEYS = ("values", "type", "suggest_kwargs")
TYPES = ("float", "int", "categorical")
SUGGEST_KWARGS = ("log", "step")
DELETE = "__delete_field__"  # the original's way of removing a default key
EXAMPLE_ARGUMENTS = ("learning_rate", "weight_decay", "warmup_steps", "num_train_epochs", "lr_scheduler_type", "kl_scaleby")


@dataclass
class StudyArguments:
    """The study's settings (flags of the scripts that run studies; each a JSON mapping, a `--config` mapping or
    the original's dotted flags)."""

    params: Optional[str] = field(default=None, metadata={"help": "What the study varies: {argument: {values: [low, high] or [choices], type: float|int|categorical, suggest_kwargs: {log: true}}} over Trainer and loss-term arguments (learning_rate, kl_scaleby, ...); or --params.learning_rate.values 1e-5 1e-3. Default: learning_rate in [2e-6, 2e-5] (the original's)."})
    study_kwargs: Optional[str] = field(default=None, metadata={"help": "optuna.create_study settings over the original's defaults: sampler GPSampler (sampler_kwargs {deterministic_objective: true}), pruner PatientPruner(WilcoxonPruner(p_threshold 0.1, n_startup_steps 100), patience 30), direction minimize; study_name; storage (a journal file; default <output_dir>/optimization_study.journal). Classes by name."})
    optimize_kwargs: Optional[str] = field(default=None, metadata={"help": "Study.optimize settings over the defaults {n_trials: 2, gc_after_trial: true, show_progress_bar: false}; timeout (seconds). n_trials counts the study's finished trials: a rerun adds the missing ones."})


@dataclass(frozen=True)
class Param:
    """One argument the study varies."""

    name: str  # the Trainer argument (an alias resolved: lr -> learning_rate)
    values: tuple  # [low, high] or the choices
    type: str | None = None  # float, int, categorical; None: from the argument's type
    suggest_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySettings:
    params: tuple[Param, ...]
    study_kwargs: Mapping[str, Any]  # the defaults with the user's settings merged in
    optimize_kwargs: Mapping[str, Any]


# --- Settings (stdlib only) ---------------------------------------------------------------------------------


def trainer_argument_names(trainer_class: str) -> dict[str, str]:
    """Every name a study may vary for a script's Trainer-arguments class (its flags and their aliases, from
    trainer_flags.json) -> the argument it sets."""
    from arguments import trainer_flags

    names: dict[str, str] = {}
    for flag in trainer_flags(trainer_class):
        if flag.negates:
            continue
        for option in flag.options:
            names.setdefault(option.lstrip("-").replace("-", "_"), flag.dest)
    return names


def study_settings(params: str | Mapping | None, study_kwargs: str | Mapping | None, optimize_kwargs: str | Mapping | None,
                   argument_names: Mapping[str, str], default_params: Mapping = ORIGINAL_PARAMS,
                   direction: str = "minimize", kl_dataset: bool | None = None) -> StudySettings:
    """The checked study settings. Each setting is JSON text (a flag, a config file's mapping, dotted flags), a
    mapping, or None (the default). `params` replaces `default_params` (the original merged them, so a study
    over one argument also varied its default `lr` unless told `__delete_field__`); `study_kwargs` and
    `optimize_kwargs` are merged over the defaults (`direction` the script's). `kl_dataset`: whether KL data is
    given (None: not known), for the check that a KL setting the study varies has a KL term to act on."""
    given = json_mapping(params, "params")
    specs = given if params is not None else default_params
    checked = tuple(_param(key, spec, argument_names, kl_dataset) for key, spec in specs.items())
    names = [p.name for p in checked]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"--params: {name} is given twice (under its name and an alias); give it once")
    study = _merged({**DEFAULT_STUDY_KWARGS, "direction": direction}, json_mapping(study_kwargs, "study_kwargs"))
    _check_study_kwargs(study)
    optimize = _merged(DEFAULT_OPTIMIZE_KWARGS, json_mapping(optimize_kwargs, "optimize_kwargs"))
    _check_optimize_kwargs(optimize)
    return StudySettings(checked, study, optimize)


def _param(key: str, spec: Any, argument_names: Mapping[str, str], kl_dataset: bool | None) -> Param:
    where = f"--params.{key}"
    if key not in argument_names:
        close = difflib.get_close_matches(key, list(argument_names), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}? " if close else ""
        examples = ", ".join(n for n in EXAMPLE_ARGUMENTS if n in argument_names)
        raise UserError(f"{where}: no such training argument ({hint}a study varies Trainer and loss-term arguments, "
                        f"e.g. {examples})")
    name = argument_names[key]
    if not isinstance(spec, Mapping):
        raise UserError(f"{where}: must be a mapping {{values: [low, high] or [choices], type: ..., suggest_kwargs: ...}}, got {spec!r}")
    unknown = sorted(set(spec) - set(PARAM_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; keys are {', '.join(PARAM_KEYS)}")
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}.values: give [low, high] or a list of choices, got {values!r}")
    kind = spec.get("type")
    if kind is not None and kind not in TYPES:
        raise UserError(f"{where}.type {kind!r}: must be one of {', '.join(TYPES)}")
    suggest = spec.get("suggest_kwargs") or {}
    if not isinstance(suggest, Mapping):
        raise UserError(f"{where}.suggest_kwargs: must be a mapping such as {{log: true}}, got {suggest!r}")
    if kind != "categorical" and len(values) == 2 and all(_is_number(v) for v in values) and values[0] > values[1]:
        raise UserError(f"{where}.values {values}: low {values[0]} is above high {values[1]}; a range is [low, high] "
                        "(or type: categorical for a choice among the values)")
    if kl_dataset is False and name.startswith("kl_") and name != "kl_dataset":
        raise UserError(f"{where}: a setting of the KL term, but no --kl_dataset is given; add --kl_dataset FILE")
    return Param(name, tuple(values), kind, dict(suggest))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _merged(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`, nested mappings merged; `__delete_field__` removes a key. A class named anew
    (`pruner: MedianPruner`) drops the default's keyword arguments (`pruner_kwargs`) unless they are given too."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if f"{key}_kwargs" in out and value != defaults.get(key):
            del out[f"{key}_kwargs"]
    for key, value in given.items():
        if value == DELETE:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_study_kwargs(study: Mapping[str, Any], where: str = "--study_kwargs") -> None:
    for key, value in study.items():
        if key.endswith("_kwargs"):
            if key[: -len("_kwargs")] not in study:
                raise UserError(f"{where}.{key}: there is no {key[: -len('_kwargs')]} for these keyword arguments")
            if not isinstance(value, Mapping):
                raise UserError(f"{where}.{key}: must be a mapping of keyword arguments, got {value!r}")
            _check_study_kwargs(value, f"{where}.{key}")
        elif key in NESTED and value is not None and value not in NESTED[key]:
            kind = "sampler" if NESTED[key] is SAMPLERS else "pruner"
            raise UserError(f"{where}.{key} {value!r}: unknown {kind}; valid: {', '.join(NESTED[key])}")
    if where != "--study_kwargs":
        return
    unknown = sorted(set(study) - set(DEFAULT_STUDY_KWARGS))
    if unknown:
        raise UserError(f"--study_kwargs: unknown key {unknown[0]!r}; keys are {', '.join(DEFAULT_STUDY_KWARGS)}")
    if study.get("direction") not in ("minimize", "maximize"):
        raise UserError(f"--study_kwargs.direction {study.get('direction')!r}: must be minimize or maximize")
    storage = study.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" in storage):
        raise UserError(f"--study_kwargs.storage {storage!r}: give a file path; the study is kept in an optuna journal file "
                        "(several runs can share one)")
    if study.get("study_name") is not None and not isinstance(study["study_name"], str):
        raise UserError(f"--study_kwargs.study_name {study['study_name']!r}: must be a string")


def _check_optimize_kwargs(optimize: Mapping[str, Any]) -> None:
    unknown = sorted(set(optimize) - set(OPTIMIZE_KEYS))
    if unknown:
        raise UserError(f"--optimize_kwargs: unknown key {unknown[0]!r}; keys are {', '.join(OPTIMIZE_KEYS)}")
    n_trials = optimize.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise UserError(f"--optimize_kwargs.n_trials {n_trials!r}: must be a whole number of at least 1")
    timeout = optimize.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        raise UserError(f"--optimize_kwargs.timeout {timeout!r}: must be a positive number of seconds")
    if optimize.get("n_jobs", 1) != 1:
        raise UserError(f"--optimize_kwargs.n_jobs {optimize['n_jobs']}: trials share one model and Trainer, so one at a time; "
                        "to run trials in parallel start several runs that share the study's storage (--study_kwargs.storage)")
    for key in ("gc_after_trial", "show_progress_bar"):
        if not isinstance(optimize.get(key, False), bool):
            raise UserError(f"--optimize_kwargs.{key} {optimize[key]!r}: must be true or false")


# --- The search space (reads the arguments' types) --------------------------------------------------------


def suggestion(param: Param, hint: Any) -> tuple[str, bool]:
    """How `param` is suggested, from its `type` or the argument's type hint: ("float" | "int" | "categorical",
    whether the argument is a list that takes the value as a one-element list)."""
    import typing

    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_args(hint) else [hint]
    as_list = False
    for kind in list(kinds):
        if typing.get_origin(kind) is list:
            kinds, as_list = list(typing.get_args(kind) or (str,)), True
    numeric = kinds[0].__name__ if len(kinds) == 1 and kinds[0] in (int, float) else None
    where = f"--params.{param.name}"
    if param.type in ("float", "int"):
        if numeric is None:
            raise UserError(f"{where}.type {param.type}: {param.name} is not a number; list its choices as values (categorical)")
        if numeric == "int" and param.type == "float":
            raise UserError(f"{where}.type float: {param.name} takes whole numbers; use int")
        kind = param.type
    else:
        kind = param.type or numeric or "categorical"
    if kind == "categorical":
        if param.suggest_kwargs:
            raise UserError(f"{where}.suggest_kwargs: a choice among values takes none (log and step are for ranges)")
        return kind, as_list
    values = param.values
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise UserError(f"{where}.values {list(values)}: {param.name} is a number ({kind}): give [low, high], or type: "
                        "categorical to choose among the values")
    unknown = sorted(set(param.suggest_kwargs) - set(SUGGEST_KWARGS))
    if unknown:
        raise UserError(f"{where}.suggest_kwargs: unknown key {unknown[0]!r}; keys are {', '.join(SUGGEST_KWARGS)}")
    if param.suggest_kwargs.get("log") and values[0] <= 0:
        raise UserError(f"{where}: log: true needs low > 0, got {values[0]}")
    if kind == "int" and not all(float(v).is_integer() for v in values):
        raise UserError(f"{where}.values {list(values)}: an int range needs whole numbers")
    return kind, as_list


def search_plan(params: Sequence[Param], args: Any) -> list[tuple[Param, str, bool]]:
    """(param, how it is suggested, whether it is set as a one-element list) for each param, from the types of
    the Trainer arguments `args` (see `suggestion`)."""
    import typing

    hints = typing.get_type_hints(type(args))
    return [(p, *suggestion(p, hints[p.name])) for p in params]


def search_space(plan: Sequence[tuple[Param, str, bool]]) -> Callable[[Any], dict[str, Any]]:
    """`hp_space(trial)` for the Trainer: argument -> suggested value (a list argument gets a one-element list)."""

    def space(trial: Any) -> dict[str, Any]:
        out = {}
        for param, kind, as_list in plan:
            if kind == "float":
                value = trial.suggest_float(param.name, float(param.values[0]), float(param.values[1]), **param.suggest_kwargs)
            elif kind == "int":
                value = trial.suggest_int(param.name, int(param.values[0]), int(param.values[1]), **param.suggest_kwargs)
            else:
                value = trial.suggest_categorical(param.name, list(param.values))
            out[param.name] = [value] if as_list else value
        return out

    return space


def set_arguments(args: Any, values: Mapping[str, Any]) -> None:
    """Set a trial's values on the Trainer arguments, cast as the Trainer's `_hp_search_setup` casts them
    (`type(old)(value)`, e.g. a scheduler name to its enum)."""
    for name, value in values.items():
        old = getattr(args, name)
        setattr(args, name, type(old)(value) if old is not None else value)


# --- Running -------------------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    study_name: str
    storage: str  # the journal file
    direction: str
    counts: dict[str, int]  # trials by state (COMPLETE, PRUNED, FAIL, ...)
    best_value: float | None
    best_params: dict[str, Any]  # argument -> value, as the trial set it (list arguments as lists)
    plots: list[str] = field(default_factory=list)  # pages of PLOTS_FILE
    skipped_plots: dict[str, str] = field(default_factory=dict)  # plot -> why it was not drawn
    settings: dict[str, Any] = field(default_factory=dict)  # params, study_kwargs, optimize_kwargs as resolved

    def summary(self) -> dict[str, Any]:
        """all_results.json's keys."""
        return {"study_name": self.study_name, "study_storage": self.storage, "study_direction": self.direction,
                "study_trials": sum(self.counts.values()), **{f"study_trials_{k.lower()}": v for k, v in self.counts.items()},
                "study_best_value": self.best_value, "study_best_params": self.best_params, "study_plots": self.plots,
                "study_settings": self.settings}


class _Preempted(Exception):
    """A signal stopped a trial (runner.PreemptionCallback): the trial fails, its values are queued again."""


def build(name: str | None, kwargs: Mapping[str, Any], module: Any) -> Any:
    """A sampler or pruner by class name, nested samplers and pruners built from their `<key>_kwargs`."""
    import optuna

    if name is None:
        return None
    kwargs = dict(kwargs)
    for key in [k for k in kwargs if k in NESTED]:
        inner = optuna.samplers if NESTED[key] is SAMPLERS else optuna.pruners
        kwargs[key] = build(kwargs[key], kwargs.pop(f"{key}_kwargs", {}), inner)
    try:
        with warnings.catch_warnings():  # GPSampler's deterministic_objective, PatientPruner, WilcoxonPruner are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(module, name)(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"--study_kwargs: {name}: {err}") from None


def run_study(trainer: Any, settings: StudySettings, objective_key: str, output_dir: str, default_name: str) -> StudyResult:
    """Run the study's missing trials on `trainer` (a `trainers.ToolkitTrainer`) and write its outputs to `output_dir`.

    Every trial trains a fresh copy of the Trainer's model as it is now (kept on the CPU meanwhile) with the trial's
    values set on the arguments, and is scored by `objective_key` (e.g. eval_loss) at each evaluation: the value is
    reported (the pruner may stop the trial there) and the trial's objective is the best of them (the checkpoint a
    training run would keep), or one evaluation after training when there was none during it. Trials save no
    checkpoints. A trial whose loss turns NaN / inf fails and the study goes on; a preemption signal fails the trial,
    queues its values to run first, writes the outputs and exits 75 (rerun the same command to continue).
    """
    import optuna
    from transformers.trainer_utils import HPSearchBackend

    from losses import NonFiniteLoss
    from outputs import PREEMPTED_EXIT_CODE, PREEMPTED_MARKER, write_text_atomic

    args = trainer.args
    if args.world_size > 1:
        raise UserError("a study trains one trial at a time in one process; to run trials in parallel start several runs "
                        "(e.g. Slurm jobs) that share the study's storage (--study_kwargs.storage FILE)")
    optuna.logging.disable_default_handler()  # optuna's messages go through our logging (stdout), not its stderr handler
    optuna.logging.enable_propagation()
    study, storage = open_study(settings.study_kwargs, output_dir, default_name)
    done = [t for t in study.get_trials(deepcopy=False) if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    n_trials = settings.optimize_kwargs["n_trials"]
    missing = max(n_trials - len(done), 0)
    logger.info("study %s (%s, %s): %d of %d trials done, running %d", study.study_name, storage,
                settings.study_kwargs["direction"], len(done), n_trials, missing)

    plan = search_plan(settings.params, args)
    space = search_space(plan)
    better = min if settings.study_kwargs["direction"] == "minimize" else max
    reported: list[float] = []

    def compute_objective(metrics: dict[str, float]) -> float:
        if objective_key not in metrics:
            raise KeyError(f"the study's objective {objective_key} is not among the evaluation's metrics: {sorted(metrics)}")
        reported.append(float(metrics[objective_key]))
        return reported[-1]

    def objective(trial: Any) -> float:
        reported.clear()
        set_arguments(args, space(trial))  # before train(): model_init applies the training controls with these values
        try:
            trainer.train(trial=trial)
        except NonFiniteLoss as err:
            logger.warning("trial %d: the loss is %s at step %d; the trial fails and the study goes on", trial.number, err,
                           trainer.state.global_step + 1)
            return math.nan
        finally:
            shutil.rmtree(os.path.join(args.output_dir, f"run-{trial.number}"), ignore_errors=True)  # a preemption's checkpoint
        if trainer.preemption.stopped_at is not None:
            study.enqueue_trial(trial.params, skip_if_exists=False)
            raise _Preempted(f"trial {trial.number} stopped at step {trainer.preemption.stopped_at}")
        if not reported:
            compute_objective(trainer.evaluate())
        return better(reported)

    saved = {name: getattr(args, name) for name in ("save_strategy", "load_best_model_at_end", *(p.name for p in settings.params))}
    pristine = trainer.model.to("cpu")  # every trial starts from a copy of it; the copies go to the device
    trainer.model_init = lambda: copy.deepcopy(pristine)
    trainer.hp_search_backend, trainer.hp_space, trainer.hp_name = HPSearchBackend.OPTUNA, space, None
    trainer.compute_objective = compute_objective
    args.save_strategy, args.load_best_model_at_end = "no", False
    optimize = {k: v for k, v in settings.optimize_kwargs.items() if k not in ("n_trials", "n_jobs")}
    preempted = None
    try:
        if missing:
            # Several runs may share the study: each stops once the study holds n_trials finished trials.
            enough = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
            study.optimize(objective, n_trials=missing, callbacks=[enough], **optimize)
    except _Preempted as err:
        preempted = err
    finally:
        trainer.hp_search_backend = None
        for name, value in saved.items():
            setattr(args, name, value)
    result = _result(study, storage, {p.name for p, _, as_list in plan if as_list})
    result.settings = {"params": {p.name: {"values": list(p.values), "type": kind, "suggest_kwargs": dict(p.suggest_kwargs)}
                                  for p, kind, _ in plan},
                       "study_kwargs": {**settings.study_kwargs, "study_name": study.study_name, "storage": storage},
                       "optimize_kwargs": dict(settings.optimize_kwargs)}
    if trainer.is_world_process_zero():
        write_trials(study, os.path.join(output_dir, TRIALS_FILE))
        result.plots, result.skipped_plots = write_plots(study, os.path.join(output_dir, PLOTS_FILE))
    marker = os.path.join(output_dir, PREEMPTED_MARKER)
    if preempted is not None:
        write_text_atomic(marker, f"{preempted}\n")
        logger.warning("preempted: %s; its values run first when the same command is run again, which continues the study", preempted)
        raise SystemExit(PREEMPTED_EXIT_CODE)
    if trainer.is_world_process_zero() and os.path.exists(marker):
        os.remove(marker)  # this run finished what the preempted one started
    if result.best_value is not None:
        logger.info("study %s: best %s %.6g with %s", study.study_name, objective_key, result.best_value, result.best_params)
    return result


def open_study(study_kwargs: Mapping[str, Any], output_dir: str, default_name: str) -> tuple[Any, str]:
    """The study in its journal file, created or (same name) loaded; (study, journal path)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = study_kwargs.get("storage") or os.path.join(output_dir, STORAGE_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    name = study_kwargs.get("study_name") or default_name
    sampler = build(study_kwargs.get("sampler"), study_kwargs.get("sampler_kwargs", {}), optuna.samplers)
    # No pruner named: none (optuna's own default would be a MedianPruner).
    pruner = build(study_kwargs.get("pruner"), study_kwargs.get("pruner_kwargs", {}), optuna.pruners) or optuna.pruners.NopPruner()
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(path)), study_name=name, sampler=sampler, pruner=pruner,
                                direction=study_kwargs["direction"], load_if_exists=True)
    stored = study.direction.name.lower()
    if stored != study_kwargs["direction"]:
        raise UserError(f"study {name} in {path} was created to {stored}, not {study_kwargs['direction']}; give another "
                        "--study_kwargs.study_name or storage")
    return study, path


def _result(study: Any, storage: str, list_arguments: set[str]) -> StudyResult:
    import optuna

    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    best_value, best_params = None, {}
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        best_value = study.best_trial.value
        best_params = {k: [v] if k in list_arguments else v for k, v in study.best_trial.params.items()}
    return StudyResult(study.study_name, storage, study.direction.name.lower(), counts, best_value, best_params)


# --- Outputs ---------------------------------------------------------------------------------------------------


def write_trials(study: Any, path: str) -> str:
    """`optimization_trials.csv.gz`: `study.trials_dataframe()`'s columns (number, value, datetime_start,
    datetime_complete, duration, params_<argument>..., state, ...), one row per trial."""
    import pandas as pd

    from outputs import write_records

    def cell(value: Any) -> Any:  # timestamps and durations as text, missing values empty
        if isinstance(value, (list, dict)):
            return value
        if pd.isna(value):
            return None
        return value if isinstance(value, (int, float, str, bool)) else str(value)

    rows = [{k: cell(v) for k, v in row.items()} for row in study.trials_dataframe().to_dict("records")]
    return write_records(path, rows)


def _plots() -> list[tuple[str, Callable[[Any], Any], Callable[[Any], str | None]]]:
    """(page title, optuna.visualization.matplotlib function, why the study cannot be drawn or None)."""
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    def complete(study: Any) -> list[Any]:
        return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]

    def needs(n: int) -> Callable[[Any], str | None]:
        return lambda study: None if len(complete(study)) >= n else f"needs {n} completed trial{'s' if n > 1 else ''}, has {len(complete(study))}"

    def contour(study: Any) -> str | None:
        names = {name for t in complete(study) for name in t.params}
        return needs(2)(study) or (None if len(names) >= 2 else f"needs 2 parameters, the study varies {len(names)}")

    def intermediate(study: Any) -> str | None:  # optuna draws the complete, pruned and running trials
        drawn = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        return None if any(t.intermediate_values for t in drawn) else "no completed or pruned trial reported intermediate values"

    return [
        ("optimization history", vis.plot_optimization_history, needs(1)),
        ("intermediate values", vis.plot_intermediate_values, intermediate),
        ("parameter importances", vis.plot_param_importances, needs(2)),
        ("slice", vis.plot_slice, needs(1)),
        ("parallel coordinates", vis.plot_parallel_coordinate, needs(1)),
        ("contour", vis.plot_contour, contour),
        ("EDF", vis.plot_edf, needs(1)),
        ("timeline", vis.plot_timeline, lambda study: None if study.get_trials(deepcopy=False) else "no trials"),
    ]


def write_plots(study: Any, path: str) -> tuple[list[str], dict[str, str]]:
    """`optimization_plots.pdf`: one page per plot of optuna.visualization.matplotlib that the study can be drawn
    in (offline; the original needed Chrome through plotly/kaleido); each one skipped is logged with the reason.
    Returns (pages drawn, {plot skipped: why})."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages
    from optuna.exceptions import ExperimentalWarning

    from outputs import write_bytes_atomic

    drawn, skipped = [], {}
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf, warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # matplotlib widening the axis of a value all trials share
        for title, plot, problem in _plots():
            why = problem(study)
            if why is None:
                try:
                    figure = np.ravel(plot(study))[0].figure
                except Exception as err:  # a study optuna cannot draw this way (e.g. importances of one distinct value)
                    why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                else:
                    figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
                    pdf.savefig(figure, bbox_inches="tight")
                    plt.close(figure)
                    drawn.append(title)
            if why is not None:
                skipped[title] = why
                logger.info("%s: %s plot skipped: %s", os.path.basename(path), title, why)
            plt.close("all")
    if drawn:
        write_bytes_atomic(path, buffer.getvalue())
    return drawn, skipped
