"""Every registry entry is complete and consistent: keys, metrics, splits, files and labels; the schema
(`constants.normalize_entry`) accepts the original README's spelling and refuses invalid entries."""

from __future__ import annotations

import copy
from typing import Any

from absl.testing import absltest, parameterized

import metrics
import tasks
from constants import DATASET_VALS, EVAL_KINDS, METRIC_NAMES, normalize_entry, register_task
from errors import UserError
from constants import ROLES
from tasks import get_task, id_to_label, label_to_id

REQUIRED_KEYS = {
    "name", "prefix", "text_columns", "label_column_name", "labels", "value_range", "metric_names",
    "metric_to_optimize", "hub_path", "hub_config", "splits", "tsv_dir", "tsv_files", "tsv_columns",
    "tsv_headerless", "submission_file", "submission_values", "submission_labels", "predict_with",
    "generator", "eval_kind", "loader", "split_rule", "bias_evaluation",
}
ENTRIES = [
    (f"{benchmark}_{task}", entry) for benchmark, tasks in DATASET_VALS.items() for task, entry in tasks.items()
]


class RegistryTest(parameterized.TestCase):
    def test_benchmarks(self) -> None:
        self.assertEqual(
            set(DATASET_VALS["glue"]), {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
        )
        self.assertEqual(set(DATASET_VALS["super_glue"]), {"boolq", "cb", "copa", "rte"})
        self.assertIn("ax", DATASET_VALS["ax"])
        self.assertIn("sentiment", DATASET_VALS["toy"])
        self.assertEqual(set(DATASET_VALS["bias"]), {"crows_pairs", "stereoset", "winobias"})
        self.assertEqual({t: e["bias_evaluation"] for t, e in DATASET_VALS["bias"].items()},
                         {"crows_pairs": "crows_pairs", "stereoset": "stereoset", "winobias": "winobias"})

    @parameterized.named_parameters(ENTRIES)
    def test_keys(self, entry: dict[str, Any]) -> None:
        self.assertEqual(REQUIRED_KEYS - set(entry), set())
        benchmark, task = entry["name"].split("/")
        self.assertIs(DATASET_VALS[benchmark][task], entry)
        self.assertTrue(entry["prefix"])
        self.assertTrue(entry["text_columns"])
        known_columns = set(entry["text_columns"]) | {entry["label_column_name"]}
        self.assertLessEqual(set(entry["tsv_columns"]), known_columns)

    @parameterized.named_parameters(ENTRIES)
    def test_metrics(self, entry: dict[str, Any]) -> None:
        self.assertTrue(entry["metric_names"])
        for name in entry["metric_names"]:
            self.assertIn(name, metrics.METRICS)
            self.assertTrue(callable(metrics.METRICS[name]))
        self.assertIn(entry["metric_to_optimize"], entry["metric_names"])

    @parameterized.named_parameters(ENTRIES)
    def test_splits_and_files(self, entry: dict[str, Any]) -> None:
        self.assertLessEqual(set(entry["splits"]), set(ROLES))
        names = [name for role_names in entry["splits"].values() for name in role_names]
        self.assertTrue(all(entry["splits"].values()))
        self.assertEqual(len(names), len(set(names)))
        if entry["bias_evaluation"]:  # no test split; the loader reads the benchmark's native release files
            self.assertEqual(set(entry["splits"]), {"train", "validation"})
            self.assertEqual(entry["tsv_files"], {})
            self.assertIsNotNone(entry["loader"])
        else:
            self.assertIn("test", entry["splits"])
            self.assertEqual(set(names), set(entry["tsv_files"]))  # an original file for every split
        self.assertTrue(entry["tsv_dir"])
        self.assertLessEqual(set(entry["tsv_headerless"]), set(names))
        self.assertEqual(set(entry["submission_file"]), set(entry["splits"].get("test", [])))
        self.assertEqual(len(set(entry["submission_file"].values())), len(entry["submission_file"]))
        self.assertIn(entry["submission_values"], {"label_id", "label", "float"})
        if entry["hub_path"] is None:
            self.assertIsNotNone(entry["generator"])
        else:
            self.assertTrue(entry["hub_config"])

    @parameterized.named_parameters(ENTRIES)
    def test_labels(self, entry: dict[str, Any]) -> None:
        labels = entry["labels"]
        self.assertEqual(len(labels), len(set(labels)))
        for label_id, label in enumerate(labels):
            self.assertEqual(id_to_label(entry, label_id), label)
            self.assertEqual(label_to_id(entry, label), label_id)
        self.assertEqual(label_to_id(entry, "not a label"), -1)
        if labels:
            self.assertIsNone(entry["value_range"])
            self.assertNotEqual(entry["submission_values"], "float")
            self.assertEqual(len(entry["submission_labels"] or labels), len(labels))
        else:  # regression
            low, high = entry["value_range"]
            self.assertLess(low, high)
            self.assertEqual(entry["submission_values"], "float")

    @parameterized.named_parameters(ENTRIES)
    def test_schema(self, entry: dict[str, Any]) -> None:
        benchmark, task = entry["name"].split("/")
        self.assertEqual(normalize_entry(benchmark, task, entry), entry)  # valid, and already normalised
        self.assertIn(entry["eval_kind"], EVAL_KINDS)
        self.assertEqual(entry["eval_kind"] == "regression", not entry["labels"])
        if entry["loader"] is not None:
            self.assertIn(entry["loader"], tasks.LOADERS)
        if entry["bias_evaluation"] is None:
            self.assertIsNone(entry["split_rule"])  # the other built-in tasks ship their own validation splits

    def test_metric_names_are_the_metric_functions(self) -> None:
        self.assertEqual(set(METRIC_NAMES), set(metrics.METRICS))

    def test_glue_and_super_glue_are_label_scoring_but_stsb_is_regression(self) -> None:
        kinds = {entry["name"]: entry["eval_kind"] for _, entry in ENTRIES}
        self.assertEqual(kinds.pop("glue/stsb"), "regression")
        self.assertEqual(set(kinds.values()), {"label_scoring"})

    @parameterized.named_parameters([(name, e) for name, e in ENTRIES if e["predict_with"]])
    def test_predict_with(self, entry: dict[str, Any]) -> None:
        benchmark, task = entry["predict_with"]
        model_task = DATASET_VALS[benchmark][task]
        self.assertEqual(model_task["labels"], entry["labels"])
        self.assertEqual(model_task["prefix"], entry["prefix"])


# An entry as the original toolkit's README wrote it: one text column, labels as an id -> word mapping.
ORIGINAL_STYLE = {
    "prefix": "review",
    "text_column_name": "sentence",
    "label_column_name": "label",
    "metric_to_optimize": "accuracy",
    "metric_names": ["accuracy"],
    "labels": {0: "negative", 1: "positive"},
}


class SchemaTest(parameterized.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(DATASET_VALS.pop, "custom", None)

    def test_original_style_entry_is_normalised_on_registration(self) -> None:
        entry = register_task("custom", "reviews", ORIGINAL_STYLE)
        self.assertIs(DATASET_VALS["custom"]["reviews"], entry)
        self.assertIs(get_task("custom", "reviews"), entry)
        self.assertEqual(REQUIRED_KEYS - set(entry), set())
        self.assertNotIn("text_column_name", entry)
        self.assertEqual(entry["text_columns"], ["sentence"])
        self.assertEqual(entry["labels"], ["negative", "positive"])
        self.assertEqual((entry["name"], entry["eval_kind"], entry["hub_path"], entry["hub_config"], entry["tsv_dir"]),
                         ("custom/reviews", "label_scoring", "custom", "reviews", "reviews"))
        self.assertEqual(entry["submission_file"], {})
        # JSON / YAML keys are strings: the same entry read from a config file.
        from_json = normalize_entry("custom", "reviews", {**ORIGINAL_STYLE, "labels": {"1": "positive", "0": "negative"}})
        self.assertEqual(from_json, entry)
        with self.assertRaisesRegex(UserError, r"^registry entry custom/reviews exists already"):
            register_task("custom", "reviews", ORIGINAL_STYLE)

    def test_entry_put_into_the_registry_directly_is_normalised_on_first_use(self) -> None:
        DATASET_VALS["custom"] = {"reviews": copy.deepcopy(ORIGINAL_STYLE)}
        entry = get_task("custom", "reviews")
        self.assertEqual(entry["text_columns"], ["sentence"])
        self.assertIs(DATASET_VALS["custom"]["reviews"], entry)
        self.assertEqual(normalize_entry("custom", "reviews", entry), entry)

    def test_regression_without_labels(self) -> None:
        entry = normalize_entry("custom", "scores", {**ORIGINAL_STYLE, "labels": {}, "metric_names": ["pearson_corrcoef"],
                                                     "metric_to_optimize": "pearson_corrcoef", "value_range": [0, 5]})
        self.assertEqual((entry["eval_kind"], entry["submission_values"], entry["value_range"]), ("regression", "float", (0, 5)))

    @parameterized.named_parameters(
        ("bad_eval_kind", {"eval_kind": "scoring"},
         r"^registry entry custom/reviews: 'eval_kind' is 'scoring'; valid: label_scoring, generation, regression$"),
        ("scoring_without_labels", {"labels": [], "eval_kind": "label_scoring"},
         r"'eval_kind' is 'label_scoring'; valid: regression or generation: the entry has no labels to score"),
        ("unknown_key", {"metric_name": "accuracy"},
         r"^registry entry custom/reviews: unknown key 'metric_name' \(did you mean 'metric_names'\?\); valid keys: bias_evaluation, eval_kind, "),
        ("missing_key", {"prefix": None},
         r"^registry entry custom/reviews: missing key 'prefix'; required: prefix, text_columns \(or text_column_name\), labels, metric_names$"),
        ("label_ids_not_0_to_n", {"labels": {1: "negative", 2: "positive"}},
         r"^registry entry custom/reviews: 'labels' maps ids 1, 2; the ids must be 0 to 1, each once"),
        ("duplicate_labels", {"labels": ["yes", "yes"]}, r"'labels' is \['yes', 'yes'\]; valid: a list of distinct label words"),
        ("unknown_metric", {"metric_names": ["acc"], "metric_to_optimize": "acc"},
         r"'metric_names' is \['acc'\]; valid: a non-empty list of accuracy, f1, matthews_corrcoef, macro_f1, "),
        ("optimize_unreported", {"metric_to_optimize": "f1"}, r"'metric_to_optimize' is 'f1'; valid: one of the entry's metric_names: accuracy$"),
        ("both_text_keys", {"text_columns": ["sentence"]},
         r"^registry entry custom/reviews: give 'text_columns' \(a list\) or 'text_column_name' \(one column\), not both$"),
        ("bad_split_rule", {"split_rule": {"validation_fraction": 1.5, "seed": 0}},
         r"'split_rule' is \{'validation_fraction': 1.5, 'seed': 0\}; valid: \{.validation_fraction.: a number in \(0, 1\), .seed.: an integer\}$"),
        ("bad_role", {"splits": {"training": ["train"]}}, r"'splits' is \{'training': \['train'\]\}; valid: a mapping of roles \(train, validation, test\)"),
        ("bad_submission_values", {"submission_values": "ids"}, r"'submission_values' is 'ids'; valid: label_id, label, float$"),
        ("loader_not_a_name", {"loader": lambda entry, root: {}}, r"'loader' is <function .*>; valid: None or a non-empty string$"),
    )
    def test_invalid_entry_is_one_line_naming_entry_key_and_valid_values(self, change: dict[str, Any], pattern: str) -> None:
        raw = {key: value for key, value in {**ORIGINAL_STYLE, **change}.items() if value is not None}
        with self.assertRaisesRegex(UserError, pattern):
            register_task("custom", "reviews", raw)
        self.assertNotIn("reviews", DATASET_VALS.get("custom", {}))  # nothing registered

    def test_unknown_loader_name_is_refused_where_loaders_live(self) -> None:
        entry = register_task("custom", "reviews", {**ORIGINAL_STYLE, "loader": "crows_pairs"})
        with self.assertRaisesRegex(UserError, r"^registry entry custom/reviews: 'loader' is 'crows_pairs'; valid: toy_generator"):
            tasks.get_loader(entry)


if __name__ == "__main__":
    absltest.main()
