"""Every registry entry is complete and consistent: keys, metrics, splits, files and labels."""

from __future__ import annotations

from typing import Any

from absl.testing import absltest, parameterized

import metrics
from constants import DATASET_VALS
from tasks import ROLES, id_to_label, label_to_id

REQUIRED_KEYS = {
    "name", "prefix", "text_columns", "label_column_name", "labels", "value_range", "metric_names",
    "metric_to_optimize", "hub_path", "hub_config", "splits", "tsv_dir", "tsv_files", "tsv_columns",
    "tsv_headerless", "submission_file", "submission_values", "submission_labels", "predict_with",
    "generator",
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
        self.assertIn("test", entry["splits"])
        names = [name for role_names in entry["splits"].values() for name in role_names]
        self.assertTrue(all(entry["splits"].values()))
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(set(names), set(entry["tsv_files"]))  # an original file for every split
        self.assertTrue(entry["tsv_dir"])
        self.assertLessEqual(set(entry["tsv_headerless"]), set(names))
        self.assertEqual(set(entry["submission_file"]), set(entry["splits"]["test"]))
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

    @parameterized.named_parameters([(name, e) for name, e in ENTRIES if e["predict_with"]])
    def test_predict_with(self, entry: dict[str, Any]) -> None:
        benchmark, task = entry["predict_with"]
        model_task = DATASET_VALS[benchmark][task]
        self.assertEqual(model_task["labels"], entry["labels"])
        self.assertEqual(model_task["prefix"], entry["prefix"])


if __name__ == "__main__":
    absltest.main()
