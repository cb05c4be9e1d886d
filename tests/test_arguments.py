"""One meaning per flag: the early (stdlib) parse and the full (HfArgumentParser) parse of every script
read the same flags the same way, refuse abbreviations with a suggestion, and the generated table of
Trainer flags matches the installed transformers."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from absl.testing import absltest, parameterized

from tests import fixtures  # noqa: F401  (sets HF_HUB_OFFLINE)
import clf  # noqa: E402
import fine_tune_t5  # noqa: E402
import pre_train_t5  # noqa: E402
import seq2seq  # noqa: E402
from arguments import (  # noqa: E402
    TRAINER_FLAGS_FILE,
    EarlyArgs,
    _full_parser,
    dataclass_flags,
    flag_table,
    format_flag_table,
    light_parse,
    parse_args,
    parser_flags,
    resolve_arguments,
)
from errors import UserError  # noqa: E402

SCRIPTS = {"pre_train_t5": pre_train_t5, "fine_tune_t5": fine_tune_t5, "seq2seq": seq2seq, "clf": clf}
REQUIRED = {  # the least each script's parser needs
    "pre_train_t5": ["--output_dir", "out"],
    "fine_tune_t5": ["--dataset_name", "sst2", "--model_name_or_path", "m", "--output_dir", "out"],
    "seq2seq": ["--model_init_path", "m"],
    "clf": ["--model_pretrain_name", "m"],
}


def both(script: str, argv: list[str]) -> tuple[EarlyArgs, tuple]:
    """Both parses of `argv` (parse_args asserts that they agree on every value the early checks read)."""
    arguments = SCRIPTS[script].ARGUMENTS
    early = light_parse(arguments, argv)
    return early, parse_args(arguments, argv, None, early)


def value(objects: Any, name: str) -> Any:
    found = [getattr(o, name) for o in objects if name in {f.name for f in dataclasses.fields(o)}]
    assert found, name
    return found[0]


def config_file(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


# (name, script, extra argv, {field: value the checks and training must both see}).
TABLE = [
    ("equals_form", "pre_train_t5", ["--max_steps=7", "--noise_density=0.3"], {"max_steps": 7, "noise_density": 0.3}),
    ("space_form", "pre_train_t5", ["--max_steps", "7", "--streaming"], {"max_steps": 7, "streaming": True}),
    ("dash_form", "pre_train_t5", ["--max-steps", "7", "--mean-noise-span-length", "2.5"], {"max_steps": 7, "mean_noise_span_length": 2.5}),
    ("bare_bool", "fine_tune_t5", ["--no_train", "--do_predict"], {"no_train": True, "do_predict": True}),
    ("false_bool", "fine_tune_t5", ["--no_train", "False", "--overwrite_output_dir=false"], {"no_train": False, "overwrite_output_dir": False}),
    ("no_x", "fine_tune_t5", ["--no_adafactor_scale_parameter", "--max_steps", "3"], {"adafactor_scale_parameter": False, "max_steps": 3}),
    ("batch_alias", "seq2seq", ["--train_batch_size", "4", "--eval_batch_size", "16"], {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 16}),
    ("data_alias_seq2seq", "seq2seq", ["--data", "synthetic_explain"], {"data_name": "synthetic_explain"}),
    ("data_alias_clf", "clf", ["--data", "sport", "--no_train"], {"data_name": "sport", "no_train": True}),
    ("wandb_agent", "clf", ["--_wandb=abc", "--max_steps", "2"], {"max_steps": 2}),
    ("tri_state_bare", "pre_train_t5", ["--bf16", "--max_steps", "1"], {"max_steps": 1}),
    ("resume_auto", "pre_train_t5", ["--resume_from_checkpoint", "auto"], {"resume_from_checkpoint": "auto"}),
]


class ScriptArgumentsTest(parameterized.TestCase):
    @parameterized.named_parameters(TABLE)
    def test_checks_and_training_read_the_same_values(self, script: str, argv: list[str], expected: dict[str, Any]) -> None:
        early, full = both(script, REQUIRED[script] + argv)
        for name, want in expected.items():
            self.assertEqual(value(full, name), want, name)
            if name in early.seen:
                self.assertEqual(early.seen[name], want, name)

    def test_config_file_with_overriding_flags(self) -> None:
        path = config_file("max_steps: 50\nnoise_density: 0.3\nlearning_rate: 5e-3\nstreaming: true\n")
        self.addCleanup(os.remove, path)
        early, (_, data_args, training_args) = both("pre_train_t5", ["--config", path, "--max_steps", "4", "--output_dir", "o"])
        self.assertEqual((early.seen["max_steps"], training_args.max_steps), (4, 4))  # the command line wins
        self.assertEqual((early.seen["streaming"], data_args.streaming), (True, True))
        self.assertEqual(training_args.learning_rate, 5e-3)  # YAML's '5e-3' string still parses

    @parameterized.parameters(*SCRIPTS)
    def test_abbreviations_are_refused_by_both_parsers(self, script: str) -> None:
        arguments = SCRIPTS[script].ARGUMENTS
        argv = REQUIRED[script] + ["--max_step", "100"]
        for parse in (lambda: light_parse(arguments, argv), lambda: parse_args(arguments, argv)):
            with self.assertRaisesRegex(UserError, r"^unknown flag --max_step \(did you mean --max_steps\?\)$"):
                parse()

    def test_the_reported_abbreviations(self) -> None:
        # pre_train_t5 --streaming --max_step 100 was refused for want of --max_steps; now for what it is.
        with self.assertRaisesRegex(UserError, r"^unknown flag --max_step \(did you mean --max_steps\?\)$"):
            light_parse(pre_train_t5.ARGUMENTS, ["--output_dir", "o", "--streaming", "--max_step", "100"])
        # fine_tune_t5 --no_trai trained, then filed its results as an evaluation-only run.
        for parse in (light_parse, parse_args):
            with self.assertRaisesRegex(UserError, r"^unknown flag --no_trai \(did you mean --no_train\?\)$"):
                parse(fine_tune_t5.ARGUMENTS, REQUIRED["fine_tune_t5"] + ["--no_trai"])
        # --data is an alias in seq2seq.py and clf.py only.
        with self.assertRaisesRegex(UserError, r"^unknown flag --data \(did you mean --\w+\?\)$"):
            light_parse(fine_tune_t5.ARGUMENTS, REQUIRED["fine_tune_t5"] + ["--data", "x"])
        with self.assertRaisesRegex(UserError, r"^unknown flag --yes_tokn \(did you mean --yes_token\?\)$"):
            light_parse(clf.ARGUMENTS, REQUIRED["clf"] + ["--yes_tokn", "yes"])

    def test_bad_values_and_stray_arguments_are_one_line(self) -> None:
        with self.assertRaisesRegex(UserError, r"^argument --eval_strategy/--eval-strategy: invalid choice: 'bogus'"):
            light_parse(pre_train_t5.ARGUMENTS, ["--output_dir", "o", "--eval_strategy", "bogus"])
        with self.assertRaisesRegex(UserError, r"^unexpected argument 'stray': every value follows its --flag$"):
            light_parse(pre_train_t5.ARGUMENTS, ["--output_dir", "o", "stray"])
        with self.assertRaisesRegex(UserError, r"^the following arguments are required: --dataset_name"):
            light_parse(fine_tune_t5.ARGUMENTS, ["--model_name_or_path", "m"])
        with self.assertRaisesRegex(UserError, r"^--report_to none,tensorboard: 'none' turns reporting off and cannot be combined"):
            parse_args(pre_train_t5.ARGUMENTS, ["--output_dir", "o", "--report_to", "none,tensorboard"])

    def test_a_disagreement_is_caught(self) -> None:
        argv = REQUIRED["pre_train_t5"] + ["--max_steps", "5"]
        early = light_parse(pre_train_t5.ARGUMENTS, argv)
        early.seen["max_steps"] = -1  # as if the early parse had missed the flag
        with self.assertRaisesRegex(AssertionError, "max_steps"):
            parse_args(pre_train_t5.ARGUMENTS, argv, None, early)


class FlagTableTest(parameterized.TestCase):
    def test_trainer_flag_table_matches_transformers(self) -> None:
        from trainer_arguments import SCRIPT_CLASSES

        with open(TRAINER_FLAGS_FILE, encoding="utf-8") as f:
            committed = f.read()
        self.assertEqual(committed, format_flag_table(flag_table(SCRIPT_CLASSES)),
                         "trainer_flags.json is stale: regenerate it with `python arguments.py`")

    @parameterized.parameters(*SCRIPTS)
    def test_both_parsers_know_the_same_flags(self, script: str) -> None:
        """The early parser's flags (read from the dataclasses and the table) are the full parser's."""
        from arguments import trainer_flags

        *own, trainer = SCRIPTS[script].ARGUMENTS
        early = [flag for cls in own for flag in dataclass_flags(cls)] + trainer_flags(trainer)
        full = parser_flags(_full_parser(resolve_arguments(SCRIPTS[script].ARGUMENTS)))
        self.assertEqual(sorted(map(repr, early)), sorted(map(repr, full)))


if __name__ == "__main__":
    absltest.main()
