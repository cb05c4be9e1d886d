"""Multi-task mixtures (T5 sec. 3.5.2) in fine_tune_t5.py: the rates, the drawn proportions, and per-task metrics that
equal evaluating each task alone with the same model."""

from __future__ import annotations

import json
import math
import os
import tempfile

from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_t5, write_tsv

import fine_tune_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError
from tasks import mixing_rates, mixture, task_names

QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--save_strategy", "no", "--per_device_eval_batch_size", "32"]


class RatesTest(parameterized.TestCase):
    SIZES = {"a": 100, "b": 1000, "c": 10_000}

    def test_examples_proportional_with_t5s_cap(self) -> None:
        rates = mixing_rates(self.SIZES, "examples_proportional", cap=2000)
        self.assertEqual(rates, {"a": 100 / 3100, "b": 1000 / 3100, "c": 2000 / 3100})

    def test_temperature_scales_the_capped_sizes(self) -> None:
        rates = mixing_rates(self.SIZES, "temperature", cap=2000, temperature=2.0)
        total = math.sqrt(100) + math.sqrt(1000) + math.sqrt(2000)
        for name, n in (("a", 100), ("b", 1000), ("c", 2000)):
            self.assertAlmostEqual(rates[name], math.sqrt(n) / total, places=12)
        self.assertEqual(mixing_rates(self.SIZES, "temperature", cap=2000, temperature=1.0),
                         mixing_rates(self.SIZES, "examples_proportional", cap=2000))

    def test_equal(self) -> None:
        self.assertEqual(mixing_rates(self.SIZES, "equal"), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})

    def test_all_is_every_task_with_training_data(self) -> None:
        self.assertEqual(task_names("glue", "all"), ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"])
        self.assertEqual(task_names("glue", "sst2, rte"), ["sst2", "rte"])

    def test_drawn_proportions_match_the_rates_and_small_tasks_repeat(self) -> None:
        from datasets import Dataset

        datasets = {name: Dataset.from_dict({"task": [name] * n, "i": list(range(n))}) for name, n in self.SIZES.items()}
        rates = mixing_rates(self.SIZES, "examples_proportional", cap=2000)
        draws = 8000
        mixed = mixture(datasets, rates, draws, seed=7)
        self.assertGreaterEqual(len(mixed), draws)
        first = mixed.select(range(draws))
        counts = {name: first["task"].count(name) for name in self.SIZES}
        for name, rate in rates.items():  # binomial: within 4 standard deviations
            self.assertLess(abs(counts[name] - rate * draws), 4 * math.sqrt(draws * rate * (1 - rate)), (name, counts))
        a_indices = [i for t, i in zip(first["task"], first["i"]) if t == "a"]
        self.assertGreater(len(a_indices), 100)  # the 100-example task was repeated, as T5 does
        self.assertEqual(set(a_indices), set(range(100)))


class MixtureRunTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "tiny"))
        cls.glue = os.path.join(cls.tmp, "glue")
        words = ["the movie was great", "the plot was dull", "a lovely score", "the cast felt weak"]
        write_tsv(f"{cls.glue}/SST-2/train.tsv", ["sentence", "label"], [[w, i % 2] for i, w in enumerate(words * 4)])
        write_tsv(f"{cls.glue}/SST-2/dev.tsv", ["sentence", "label"], [[w, i % 2] for i, w in enumerate(words)])
        write_tsv(f"{cls.glue}/SST-2/test.tsv", ["index", "sentence"], [[i, w] for i, w in enumerate(words)])
        rte = [["the movie was great", "the movie was fine", "entailment"], ["a lovely score", "the plot was dull", "not_entailment"]]
        write_tsv(f"{cls.glue}/RTE/train.tsv", ["index", "sentence1", "sentence2", "label"], [[i] + r for i, r in enumerate(rte * 6)])
        write_tsv(f"{cls.glue}/RTE/dev.tsv", ["index", "sentence1", "sentence2", "label"], [[i] + r for i, r in enumerate(rte)])
        write_tsv(f"{cls.glue}/RTE/test.tsv", ["index", "sentence1", "sentence2"], [[i] + r[:2] for i, r in enumerate(rte)])
        cls.out = os.path.join(cls.tmp, "mixed")
        cls.results = fine_tune_t5.main(["--dataset_name", "sst2,rte", "--model_name_or_path", cls.model, "--dataset_dir", cls.glue,
                                         "--output_dir", cls.out, "--max_steps", "4", "--per_device_train_batch_size", "4",
                                         "--mixing_rate", "equal", "--do_predict"] + QUIET)

    def test_each_task_has_its_metrics_under_its_own_key(self) -> None:
        for key in ("sst2/accuracy", "rte/accuracy", "eval_sst2_accuracy", "eval_rte_accuracy", "eval_sst2_loss", "eval_rte_loss"):
            self.assertIn(key, self.results)
        self.assertEqual(self.results["eval_mode"], {"glue/sst2": "score", "glue/rte": "score"})
        self.assertNotIn("glue_average", self.results)  # T5's average needs every GLUE task

    def test_per_task_metrics_equal_evaluating_each_task_alone(self) -> None:
        for task, key in (("sst2", "sst2"), ("rte", "rte")):
            alone = fine_tune_t5.main(["--dataset_name", task, "--model_name_or_path", self.out, "--dataset_dir", self.glue,
                                       "--output_dir", os.path.join(self.tmp, f"alone-{task}"), "--no_train"] + QUIET)
            self.assertEqual(alone[f"{key}/accuracy"], self.results[f"{key}/accuracy"])
            self.assertAlmostEqual(alone["eval_loss"], self.results[f"eval_{key}_loss"], places=6)

    def test_predictions_and_leaderboard_files_per_task(self) -> None:
        for name, count in (("predictions_sst2_test.jsonl", 4), ("predictions_rte_test.jsonl", 2)):
            with open(os.path.join(self.out, name)) as f:
                self.assertEqual([json.loads(line)["idx"] for line in f], list(range(count)))
        for name, values in (("SST-2.tsv", {"0", "1"}), ("RTE.tsv", {"entailment", "not_entailment"})):
            with open(os.path.join(self.out, name)) as f:
                rows = [line.rstrip("\n").split("\t") for line in f]
            self.assertEqual(rows[0], ["index", "prediction"])
            self.assertTrue({r[1] for r in rows[1:]} <= values, rows)

    def test_trained_on_the_mixture_for_max_steps(self) -> None:
        with open(os.path.join(self.out, "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["global_step"], 4)


class GenerationLengthTest(absltest.TestCase):
    def test_each_generating_task_gets_its_own_length_in_a_mixture(self) -> None:
        import types
        from unittest import mock

        from tasks import get_task
        from tests.fixtures import task_tokenizer
        from trainer_arguments import FineTuningArguments

        tokenizer = task_tokenizer()
        args = FineTuningArguments(output_dir=os.path.join(tempfile.mkdtemp(), "x"), report_to="none")
        task_args = types.SimpleNamespace(max_target_length=128)
        seen = {}
        with mock.patch.object(fine_tune_t5, "build_trainer", lambda mode, entry, *a: seen.setdefault(entry["name"], args.generation_max_length)):
            for name in ("cola", "mrpc", "stsb"):
                task = types.SimpleNamespace(entry=get_task("glue", name), mode="generate", evals={})
                fine_tune_t5.task_trainer(task, None, tokenizer, args, task_args, None, None, None)
        alone = {f"glue/{name}": fine_tune_t5.generation_length(get_task("glue", name), tokenizer, 128) for name in ("cola", "mrpc", "stsb")}
        self.assertEqual(seen, alone)
        self.assertGreater(len(set(alone.values())), 1)  # the tasks' lengths differ, so a shared value would show


class MixtureFlagTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("no_max_steps", ["--dataset_name", "sst2,rte"], "a mixture of tasks repeats each task as T5 does, so it has no epochs; give --max_steps"),
        ("one_file_for_all", ["--dataset_name", "sst2,rte", "--max_steps", "3", "--train_file", "x.tsv"],
         "--train_file with several tasks (sst2, rte): give each task's data in --dataset_dir"),
        ("unknown_rate", ["--dataset_name", "sst2,rte", "--max_steps", "3", "--mixing_rate", "proportional"],
         "--mixing_rate proportional: must be one of examples_proportional, equal, temperature"),
        ("task_twice", ["--dataset_name", "sst2,sst2", "--max_steps", "3"], "--dataset_name sst2,sst2: a task is named twice"),
    )
    def test_one_line_error(self, argv: list[str], message: str) -> None:
        out = os.path.join(tempfile.mkdtemp(), "never")
        with self.assertRaises(UserError) as caught:
            fine_tune_t5.main(argv + ["--model_name_or_path", "google-t5/t5-small", "--output_dir", out] + QUIET)
        self.assertIn(message, str(caught.exception))
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    absltest.main()
