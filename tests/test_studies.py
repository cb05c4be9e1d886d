"""studies.py: the study settings and their one-line errors, how each argument is suggested, and studies run by
finetune_lm.py on a tiny GPT-2: the outputs, a KL scale that reaches the loss term, test files ignored, a rerun
that resumes the study, and pruning."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import shutil
import tempfile
from typing import Any
from unittest import mock

from absl.testing import absltest, parameterized

from tests.fixtures import generated_corpus, save_tiny_lm
from errors import UserError  # noqa: E402
from studies import (  # noqa: E402
    DEFAULT_OPTIMIZE_KWARGS,
    DEFAULT_STUDY_KWARGS,
    PRUNERS,
    SAMPLERS,
    Param,
    search_plan,
    search_space,
    set_arguments,
    study_settings,
    suggestion,
    trainer_argument_names,
)

NAMES = trainer_argument_names("LMTrainingArguments")

# (name, params, study_kwargs, optimize_kwargs, the exact message)
ERRORS = [
    ("misspelt", {"learnig_rate": {"values": [1e-5, 1e-3]}}, None, None,
     "--params.learnig_rate: no such training argument (did you mean learning_rate? a study varies Trainer and loss-term "
     "arguments, e.g. learning_rate, weight_decay, warmup_steps, num_train_epochs, lr_scheduler_type, kl_scaleby)"),
    ("no_argument", {"dropout": {"values": [0.0, 0.3]}}, None, None,
     "--params.dropout: no such training argument (a study varies Trainer and loss-term arguments, e.g. learning_rate, "
     "weight_decay, warmup_steps, num_train_epochs, lr_scheduler_type, kl_scaleby)"),
    ("low_above_high", {"lr": {"values": [1e-3, 1e-5]}}, None, None,
     "--params.lr.values [0.001, 1e-05]: low 0.001 is above high 1e-05; a range is [low, high] (or type: categorical for a "
     "choice among the values)"),
    ("no_values", {"learning_rate": {"suggest_kwargs": {"log": True}}}, None, None,
     "--params.learning_rate.values: give [low, high] or a list of choices, got None"),
    ("unknown_key", {"learning_rate": {"values": [1e-5, 1e-3], "range": 2}}, None, None,
     "--params.learning_rate: unknown key 'range'; keys are values, type, suggest_kwargs"),
    ("unknown_type", {"learning_rate": {"values": [1e-5, 1e-3], "type": "double"}}, None, None,
     "--params.learning_rate.type 'double': must be one of float, int, categorical"),
    ("kl_without_data", {"kl_scaleby": {"values": [1, 5]}}, None, None,
     "--params.kl_scaleby: a setting of the KL term, but no --kl_dataset is given; add --kl_dataset FILE"),
    ("unknown_sampler", None, {"sampler": "GPsampler"}, None,
     "--study_kwargs.sampler 'GPsampler': unknown sampler; valid: " + ", ".join(SAMPLERS)),
    ("unknown_wrapped_pruner", None, {"pruner_kwargs": {"wrapped_pruner": "Median"}}, None,
     "--study_kwargs.pruner_kwargs.wrapped_pruner 'Median': unknown pruner; valid: " + ", ".join(PRUNERS)),
    ("unknown_study_key", None, {"sampler_name": "TPESampler"}, None,
     "--study_kwargs: unknown key 'sampler_name'; keys are study_name, storage, sampler, sampler_kwargs, pruner, pruner_kwargs, "
     "direction"),
    ("direction", None, {"direction": "up"}, None, "--study_kwargs.direction 'up': must be minimize or maximize"),
    ("sqlite", None, {"storage": "sqlite:///study.db"}, None,
     "--study_kwargs.storage 'sqlite:///study.db': give a file path; the study is kept in an optuna journal file (several runs "
     "can share one)"),
    ("n_jobs", None, None, {"n_jobs": 4},
     "--optimize_kwargs.n_jobs 4: trials share one model and Trainer, so one at a time; to run trials in parallel start several "
     "runs that share the study's storage (--study_kwargs.storage)"),
    ("n_trials", None, None, {"n_trials": 0}, "--optimize_kwargs.n_trials 0: must be a whole number of at least 1"),
    ("json", '{"lr": {"values": [1e-5, 1e-3]}', None, None, "--params: invalid JSON (Expecting ',' delimiter at column 32)"),
]


class SettingsTest(parameterized.TestCase):
    """The light checks (stdlib only: they run before torch is imported)."""

    def test_defaults_are_the_originals(self) -> None:
        settings = study_settings(None, None, None, NAMES)
        self.assertEqual(settings.params, (Param("learning_rate", (2e-6, 2e-5)),))  # the original's `lr`
        self.assertEqual(dict(settings.study_kwargs), DEFAULT_STUDY_KWARGS)
        self.assertEqual(settings.study_kwargs["pruner_kwargs"]["wrapped_pruner_kwargs"], {"p_threshold": 0.1, "n_startup_steps": 100})
        self.assertEqual(dict(settings.optimize_kwargs), {"n_trials": 2, "gc_after_trial": True, "show_progress_bar": False})
        self.assertEqual(DEFAULT_OPTIMIZE_KWARGS["n_trials"], 2)

    def test_dotted_flags_aliases_and_merging(self) -> None:
        from arguments import fold_dotted_flags

        argv = fold_dotted_flags(["--params.lr.values", "1e-5", "1e-3", "--params.lr.suggest_kwargs.log", "True",
                                  "--study_kwargs.pruner_kwargs.patience", "5", "--study_kwargs.sampler_kwargs.seed", "3"])
        flags = dict(a[2:].split("=", 1) for a in argv)
        settings = study_settings(flags["params"], flags["study_kwargs"], None, NAMES, direction="maximize")
        self.assertEqual(settings.params, (Param("learning_rate", (1e-5, 1e-3), None, {"log": True}),))
        study = settings.study_kwargs
        self.assertEqual(study["sampler_kwargs"], {"deterministic_objective": True, "seed": 3})
        self.assertEqual(study["pruner_kwargs"]["patience"], 5)
        self.assertEqual(study["pruner_kwargs"]["wrapped_pruner"], "WilcoxonPruner")  # kept
        self.assertEqual(study["direction"], "maximize")  # the script's default
        # Another class drops the default's keyword arguments; __delete_field__ removes a key.
        other = study_settings(None, {"pruner": "MedianPruner", "sampler_kwargs": "__delete_field__"}, None, NAMES).study_kwargs
        self.assertNotIn("pruner_kwargs", other)
        self.assertNotIn("sampler_kwargs", other)
        wrapped = study_settings(None, {"pruner_kwargs": {"wrapped_pruner": "MedianPruner"}}, None, NAMES).study_kwargs
        self.assertEqual(wrapped["pruner_kwargs"], {"wrapped_pruner": "MedianPruner", "patience": 30, "min_delta": 0.0})

    @parameterized.named_parameters(ERRORS)
    def test_one_line_errors(self, params: Any, study_kwargs: Any, optimize_kwargs: Any, message: str) -> None:
        if isinstance(params, dict):
            params = json.dumps(params)
        with self.assertRaises(UserError) as caught:
            study_settings(params, study_kwargs, optimize_kwargs, NAMES, kl_dataset=False)
        self.assertEqual(str(caught.exception), message)

    def test_class_names_are_optunas(self) -> None:
        import optuna

        self.assertEqual(tuple(sorted(SAMPLERS)), tuple(sorted(n for n in optuna.samplers.__all__ if n[0].isupper() and not n.startswith("Base"))))
        self.assertEqual(tuple(sorted(PRUNERS)), tuple(sorted(n for n in optuna.pruners.__all__ if not n.startswith("Base"))))


class SuggestionTest(parameterized.TestCase):
    """How each argument is suggested, from its type (the Trainer arguments' type hints) or the `type` given."""

    @classmethod
    def setUpClass(cls) -> None:
        import typing

        from trainer_arguments import LMTrainingArguments

        super().setUpClass()
        cls.hints = typing.get_type_hints(LMTrainingArguments)

    @parameterized.parameters(
        ("learning_rate", [1e-5, 1e-3], None, ("float", False)),
        ("per_device_train_batch_size", [4, 32], None, ("int", False)),
        ("warmup_steps", [0, 100], "int", ("int", False)),  # a float argument suggested as whole numbers
        ("per_device_train_batch_size", [32, 8, 16], "categorical", ("categorical", False)),
        ("lr_scheduler_type", ["linear", "cosine"], None, ("categorical", False)),
        ("bf16", [True, False], None, ("categorical", False)),
        ("kl_scaleby", [0.5, 5], None, ("float", True)),  # list arguments: one value, as a one-element list
        ("kl_examples_per_step", [2, 8], None, ("int", True)),
    )
    def test_kind(self, name: str, values: list, kind: str | None, expected: tuple[str, bool]) -> None:
        self.assertEqual(suggestion(Param(name, tuple(values), kind), self.hints[name]), expected)

    @parameterized.parameters(
        ("per_device_train_batch_size", [4, 32], "float", {}, "--params.per_device_train_batch_size.type float: "
         "per_device_train_batch_size takes whole numbers; use int"),
        ("lr_scheduler_type", ["linear", "cosine"], "float", {}, "--params.lr_scheduler_type.type float: lr_scheduler_type is "
         "not a number; list its choices as values (categorical)"),
        ("learning_rate", [1e-5, 1e-4, 1e-3], None, {}, "--params.learning_rate.values [1e-05, 0.0001, 0.001]: learning_rate "
         "is a number (float): give [low, high], or type: categorical to choose among the values"),
        ("learning_rate", [0, 1e-3], None, {"log": True}, "--params.learning_rate: log: true needs low > 0, got 0"),
        ("learning_rate", [1e-5, 1e-3], None, {"base": 10}, "--params.learning_rate.suggest_kwargs: unknown key 'base'; "
         "keys are log, step"),
    )
    def test_refused(self, name: str, values: list, kind: str | None, kwargs: dict, message: str) -> None:
        with self.assertRaises(UserError) as caught:
            suggestion(Param(name, tuple(values), kind, kwargs), self.hints[name])
        self.assertEqual(str(caught.exception), message)

    def test_space_and_arguments(self) -> None:
        import optuna
        from transformers.trainer_utils import SchedulerType

        from trainer_arguments import LMTrainingArguments

        args = LMTrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none")
        self.addCleanup(shutil.rmtree, args.output_dir, ignore_errors=True)
        params = study_settings({"learning_rate": {"values": [1e-5, 1e-3]}, "kl_scaleby": {"values": [0.5, 5.0]},
                                 "lr_scheduler_type": {"values": ["linear", "cosine"]}}, None, None, NAMES).params
        space = search_space(search_plan(params, args))
        values = space(optuna.trial.FixedTrial({"learning_rate": 3e-4, "kl_scaleby": 2.0, "lr_scheduler_type": "cosine"}))
        self.assertEqual(values, {"learning_rate": 3e-4, "kl_scaleby": [2.0], "lr_scheduler_type": "cosine"})
        set_arguments(args, values)
        self.assertEqual((args.learning_rate, args.kl_scaleby, args.lr_scheduler_type), (3e-4, [2.0], SchedulerType.COSINE))


def write_lines(path: str, lines: list[str]) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def read_csv(path: str) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pdf_pages(path: str) -> int:
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"%PDF-"), data[:10]
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", data))


class FinetuneLMStudyTest(absltest.TestCase):
    """`finetune_lm.py --do_optimize` on a tiny GPT-2: 16 training lines, 4 validation lines, 2 epochs per trial."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="studies_")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.model = save_tiny_lm(os.path.join(cls.tmp, "gpt2"), "gpt2")
        lines = generated_corpus(40, seed=5)
        cls.train = write_lines(os.path.join(cls.tmp, "train.txt.gz"), lines[:16])
        cls.dev = write_lines(os.path.join(cls.tmp, "dev.txt.gz"), lines[16:20])
        cls.kl = write_lines(os.path.join(cls.tmp, "kl.txt.gz"), lines[20:28])
        cls.test = write_lines(os.path.join(cls.tmp, "stimuli.txt.gz"), lines[28:31])

    def run_study(self, out: str, argv: list[str]) -> dict[str, Any]:
        import finetune_lm

        with contextlib.redirect_stdout(io.StringIO()):
            return finetune_lm.main(["--model_name_or_path", self.model, "--train_file", self.train, "--validation_file", self.dev,
                                     "--output_dir", out, "--do_optimize", "--epochs", "2", "--per_device_train_batch_size", "8",
                                     *argv, "--report_to", "none", "--disable_tqdm", "True"])

    def test_study_outputs_kl_scale_and_resume(self) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        import losses

        out = os.path.join(self.tmp, "study")
        argv = ["--params.learning_rate.values", "1e-4", "1e-2", "--params.learning_rate.suggest_kwargs.log", "True",
                "--params.kl_scaleby.values", "0.5", "5", "--kl_dataset", self.kl, "--kl_examples_per_step", "2",
                "--test_file", self.test]
        scales: list[list[float]] = []  # each KL term's scale, as built
        original_init = losses.KLBaselineLoss.__init__

        def recording_init(term: Any, base_model: Any, datasets: Any, scaleby: Any, *args: Any, **kwargs: Any) -> None:
            scales.append(list(scaleby))
            original_init(term, base_model, datasets, scaleby, *args, **kwargs)

        with mock.patch.object(losses.KLBaselineLoss, "__init__", recording_init), self.assertLogs("finetune_lm", "INFO") as logs:
            results = self.run_study(out, argv + ["--optimize_kwargs.n_trials", "2"])

        # The trials table: one row per trial, the study's columns.
        rows = read_csv(os.path.join(out, "optimization_trials.csv.gz"))
        self.assertEqual([r["number"] for r in rows], ["0", "1"])
        self.assertEqual({r["state"] for r in rows}, {"COMPLETE"})
        self.assertEqual(list(rows[0])[:5], ["number", "value", "datetime_start", "datetime_complete", "duration"])
        self.assertIn("params_learning_rate", rows[0])
        self.assertTrue(all(1e-4 <= float(r["params_learning_rate"]) <= 1e-2 and 0.5 <= float(r["params_kl_scaleby"]) <= 5 for r in rows))
        # Each trial's KL term took the trial's scale (after the Trainer's own, built with the default 2.5).
        self.assertEqual(scales, [[2.5]] + [[float(r["params_kl_scaleby"])] for r in rows])
        # A trial's value is its best validation loss, reported each epoch.
        storage = JournalStorage(JournalFileBackend(os.path.join(out, "optimization_study.journal")))
        study = optuna.load_study(study_name=results["study_name"], storage=storage)
        for trial, row in zip(study.trials, rows):
            self.assertLen(trial.intermediate_values, 2)
            self.assertEqual(trial.value, min(trial.intermediate_values.values()))
            self.assertAlmostEqual(float(row["value"]), trial.value, places=6)
        self.assertEqual(results["study_best_value"], min(t.value for t in study.trials))
        self.assertIsInstance(results["study_best_params"]["kl_scaleby"], list)  # as the argument takes it
        # The plots: one page per plot drawn (two parameters, two trials: all of them).
        self.assertEqual(results["study_plots"], ["optimization history", "intermediate values", "parameter importances", "slice",
                                                  "parallel coordinates", "contour", "EDF", "timeline"])
        self.assertEqual(pdf_pages(os.path.join(out, "optimization_plots.pdf")), 8)
        with open(os.path.join(out, "config.txt"), encoding="utf-8") as f:
            self.assertIn("LMOptimizationArguments.do_optimize: True\n", f.read())
        # Test files are ignored (and said so); no model, no training outputs.
        self.assertTrue(any("--test_file ignored while optimising" in line for line in logs.output), logs.output)
        self.assertFalse([n for n in os.listdir(out) if "test_results" in n or n in ("model", "metrics.csv.gz")])
        self.assertFalse([n for n in os.listdir(out) if n.startswith(("run-", "checkpoint-"))])  # trials save nothing

        # A rerun with the same study name resumes the study: one more trial for n_trials 3, in the same journal.
        results = self.run_study(out, argv + ["--optimize_kwargs.n_trials", "3"])
        self.assertEqual(optuna.study.get_all_study_names(storage), [results["study_name"]])
        self.assertEqual(results["study_trials"], 3)
        rerun = read_csv(os.path.join(out, "optimization_trials.csv.gz"))
        self.assertEqual([r["number"] for r in rerun], ["0", "1", "2"])
        self.assertEqual([r["params_learning_rate"] for r in rerun[:2]], [r["params_learning_rate"] for r in rows])

    def test_a_pruner_of_ones_own_prunes(self) -> None:
        out = os.path.join(self.tmp, "pruned")
        results = self.run_study(out, ["--study_kwargs", json.dumps({"pruner": "ThresholdPruner", "pruner_kwargs": {"upper": 0.0}}),
                                       "--optimize_kwargs.n_trials", "2"])
        rows = read_csv(os.path.join(out, "optimization_trials.csv.gz"))
        self.assertEqual([r["state"] for r in rows], ["PRUNED", "PRUNED"])  # at the first epoch's report: any loss is above 0
        self.assertEqual((results["study_trials_pruned"], results["study_best_value"]), (2, None))
        self.assertEqual(results["study_plots"], ["intermediate values", "timeline"])  # the others need a completed trial
        self.assertEqual(pdf_pages(os.path.join(out, "optimization_plots.pdf")), 2)


if __name__ == "__main__":
    absltest.main()
