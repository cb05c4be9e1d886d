"""Text-to-text formatting (exact T5 strings, written by hand), loading every layout, the toy task, user errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl.testing import absltest, parameterized

import tasks
from constants import DATASET_VALS, register_task
from errors import UserError
from examples import generate_toy_splits, write_toy_benchmark
from tasks import (
    format_example,
    format_float,
    get_task,
    load_task_splits,
    parse_float,
    split_rule_indices,
    submission_value,
)

P, H = "A man is playing a guitar.", "A person plays music."

# (benchmark, task, Hub record, expected source, expected target): the strings are written by hand.
FORMAT_CASES = [
    ("glue", "cola", {"sentence": "The book was written by John.", "label": 1},
     "cola sentence: The book was written by John.", "acceptable"),
    # SST-2 sentences on the Hub end with a space; T5's glue() keeps it.
    ("glue", "sst2", {"sentence": "it 's a charming and often affecting journey . ", "label": 1},
     "sst2 sentence: it 's a charming and often affecting journey . ", "positive"),
    ("glue", "mrpc", {"sentence1": "He said so.", "sentence2": "He denied it.", "label": 0},
     "mrpc sentence1: He said so. sentence2: He denied it.", "not_equivalent"),
    ("glue", "qqp", {"question1": "How do I learn?", "question2": "How can I learn?", "label": 1},
     "qqp question1: How do I learn? question2: How can I learn?", "duplicate"),
    ("glue", "stsb", {"sentence1": "A cat sits.", "sentence2": "A cat is sitting.", "label": 3.84},
     "stsb sentence1: A cat sits. sentence2: A cat is sitting.", "3.8"),
    ("glue", "mnli", {"premise": P, "hypothesis": H, "label": 1},
     "mnli hypothesis: A person plays music. premise: A man is playing a guitar.", "neutral"),
    ("glue", "qnli", {"question": "Who wrote it?", "sentence": "Nobody knows.", "label": 1},
     "qnli question: Who wrote it? sentence: Nobody knows.", "not_entailment"),
    ("glue", "rte", {"sentence1": P, "sentence2": H, "label": 0},
     "rte sentence1: A man is playing a guitar. sentence2: A person plays music.", "entailment"),
    ("glue", "wnli", {"sentence1": "The cup fell.", "sentence2": "It fell.", "label": 1},
     "wnli sentence1: The cup fell. sentence2: It fell.", "entailment"),
    ("ax", "ax", {"premise": P, "hypothesis": H, "label": -1},
     "mnli hypothesis: A person plays music. premise: A man is playing a guitar.", None),
    ("super_glue", "boolq", {"question": "is it true", "passage": "It is.", "label": 1},
     "boolq passage: It is. question: is it true", "True"),
    ("super_glue", "cb", {"premise": P, "hypothesis": H, "label": 1},
     "cb hypothesis: A person plays music. premise: A man is playing a guitar.", "contradiction"),
    ("super_glue", "copa",
     {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.", "question": "cause",
      "label": 0},
     "copa choice1: He slipped. choice2: He sang. premise: The man fell. question: cause", "choice1"),
    ("super_glue", "rte", {"premise": P, "hypothesis": H, "label": 1},
     "rte hypothesis: A person plays music. premise: A man is playing a guitar.", "not_entailment"),
    ("toy", "sentiment", {"sentence": "the movie was wonderful", "label": 1},
     "sentiment sentence: the movie was wonderful", "positive"),
]


class FormatTest(parameterized.TestCase):
    @parameterized.named_parameters((f"{b}_{t}", b, t, r, s, g) for b, t, r, s, g in FORMAT_CASES)
    def test_format(
        self, benchmark: str, task: str, record: dict[str, Any], source: str, target: str | None
    ) -> None:
        self.assertEqual(format_example(get_task(benchmark, task), {**record, "idx": 0}), (source, target))

    @parameterized.parameters((3.84, "3.8"), (0.7, "0.8"), (2.5, "2.4"), (3.5, "3.6"), (5.0, "5.0"), (0.0, "0.0"))
    def test_stsb_target(self, score: float, expected: str) -> None:
        self.assertEqual(format_float(score), expected)
        stored = float(np.float32(score))  # the Hub stores float32 scores
        record = {"sentence1": "a", "sentence2": "b", "label": stored}
        self.assertEqual(format_example(get_task("glue", "stsb"), record)[1], expected)

    def test_parse_float(self) -> None:
        self.assertEqual(parse_float("3.8"), 3.8)
        self.assertEqual(parse_float("three"), -1.0)

    def test_submission_values(self) -> None:
        self.assertEqual(submission_value(get_task("glue", "sst2"), "positive"), 1)
        self.assertEqual(submission_value(get_task("glue", "mnli"), "neutral"), "neutral")
        self.assertEqual(submission_value(get_task("glue", "mnli"), "bogus"), "entailment")
        self.assertEqual(submission_value(get_task("glue", "stsb"), "5.6"), 5.0)
        self.assertEqual(submission_value(get_task("glue", "stsb"), "3.8"), 3.8)
        self.assertEqual(submission_value(get_task("super_glue", "boolq"), "True"), "true")


# A tiny GLUE download in both layouts. Hub records first; the original files below hold the same.
HUB = {
    "sst2": {
        "train": [{"sentence": 'a "gorgeous , witty film ', "label": 1, "idx": 0},
                  {"sentence": "dull ", "label": 0, "idx": 1}],
        "validation": [{"sentence": "it 's fine . ", "label": 1, "idx": 0}],
        "test": [{"sentence": "uneven ", "label": -1, "idx": 0}, {"sentence": "great", "label": -1, "idx": 1}],
    },
    "cola": {
        "train": [{"sentence": "Our friends won't buy this analysis.", "label": 1, "idx": 0},
                  {"sentence": "They drank the pub.", "label": 0, "idx": 1}],
        "validation": [{"sentence": "The sailors rode the breeze.", "label": 1, "idx": 0}],
        "test": [{"sentence": "Bill whistled.", "label": -1, "idx": 0}],
    },
    "mnli": {
        "train": [{"premise": P, "hypothesis": H, "label": 0, "idx": 0},
                  {"premise": "It rains.", "hypothesis": "It is dry.", "label": 2, "idx": 1}],
        "validation_matched": [{"premise": "He ran.", "hypothesis": "He moved.", "label": 0, "idx": 0}],
        "validation_mismatched": [{"premise": "She sat.", "hypothesis": "She stood.", "label": 2, "idx": 0}],
        "test_matched": [{"premise": "A dog.", "hypothesis": "An animal.", "label": -1, "idx": 0}],
        "test_mismatched": [{"premise": "A car.", "hypothesis": "A boat.", "label": -1, "idx": 0}],
    },
    "stsb": {
        "train": [{"sentence1": "A cat sits.", "sentence2": "A cat is sitting.", "label": 3.84, "idx": 0}],
        "validation": [{"sentence1": "A man.", "sentence2": "A woman.", "label": 0.7, "idx": 0}],
        "test": [{"sentence1": "Go.", "sentence2": "Stop.", "label": -1.0, "idx": 0}],
    },
}
TSV = {  # the original GLUE files: quoting off, CoLA train/dev without header, MNLI words as labels
    "SST-2/train.tsv": 'sentence\tlabel\na "gorgeous , witty film \t1\ndull \t0\n',
    "SST-2/dev.tsv": "sentence\tlabel\nit 's fine . \t1\n",
    "SST-2/test.tsv": "index\tsentence\n0\tuneven \n1\tgreat\n",
    "CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
    "CoLA/dev.tsv": "gj04\t1\t\tThe sailors rode the breeze.\n",
    "CoLA/test.tsv": "index\tsentence\n0\tBill whistled.\n",
    "MNLI/train.tsv": f"index\tgenre\tsentence1\tsentence2\tgold_label\n0\tfiction\t{P}\t{H}\tentailment\n"
                      "1\tfiction\tIt rains.\tIt is dry.\tcontradiction\n",
    "MNLI/dev_matched.tsv": "index\tsentence1\tsentence2\tlabel1\tgold_label\n"
                            "0\tHe ran.\tHe moved.\tentailment\tentailment\n",
    "MNLI/dev_mismatched.tsv": "index\tsentence1\tsentence2\tgold_label\n0\tShe sat.\tShe stood.\tcontradiction\n",
    "MNLI/test_matched.tsv": "index\tsentence1\tsentence2\n0\tA dog.\tAn animal.\n",
    "MNLI/test_mismatched.tsv": "index\tsentence1\tsentence2\n0\tA car.\tA boat.\n",
    "STS-B/train.tsv": "index\tgenre\tsentence1\tsentence2\tscore\n"
                       "0\tmain\tA cat sits.\tA cat is sitting.\t3.84\n",
    "STS-B/dev.tsv": "index\tgenre\tsentence1\tsentence2\tscore\n0\tmain\tA man.\tA woman.\t0.7\n",
    "STS-B/test.tsv": "index\tgenre\tsentence1\tsentence2\n0\tmain\tGo.\tStop.\n",
}


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def write_hub_layout(root: Path) -> Path:
    """`hf download nyu-mll/glue --local-dir ROOT` layout: ROOT/<config>/<split>-00000-of-00001.parquet."""
    for config, splits in HUB.items():
        (root / config).mkdir(parents=True)
        for split, records in splits.items():
            table = pa.Table.from_pylist(records)
            if config == "stsb":  # the Hub stores float32 scores and int32 idx
                table = table.cast(pa.schema([("sentence1", pa.string()), ("sentence2", pa.string()),
                                              ("label", pa.float32()), ("idx", pa.int32())]))
            pq.write_table(table, root / config / f"{split}-00000-of-00001.parquet")
    return root


def make_tempdir(test: absltest.TestCase) -> Path:
    """A temporary folder removed after the test (absl's create_tempdir needs parsed flags; pytest has none)."""
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    return Path(folder.name)


def records(dataset: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in dataset]


class LoadTest(parameterized.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.root = make_tempdir(self)

    @parameterized.parameters("sst2", "cola", "mnli", "stsb")
    def test_both_layouts_give_hub_records(self, task: str) -> None:
        entry = get_task("glue", task)
        from_tsv = load_task_splits(entry, dataset_dir=write_files(self.root / "glue_data", TSV))
        from_hub = load_task_splits(entry, dataset_dir=write_hub_layout(self.root / "glue"))
        self.assertEqual(set(from_tsv), set(HUB[task]))
        for split, expected in HUB[task].items():
            if task == "stsb":  # float32 on both sides: compare the stored values
                expected = [{**r, "label": float(np.float32(r["label"]))} for r in expected]
            self.assertEqual(records(from_tsv[split]), expected, split)
            self.assertEqual(records(from_hub[split]), expected, split)
        self.assertEqual(from_tsv["train"].features, from_hub["train"].features)

    def test_task_folder_and_roles(self) -> None:
        write_files(self.root, TSV)
        splits = load_task_splits(get_task("glue", "mnli"), dataset_dir=self.root / "MNLI", roles=["validation"])
        self.assertEqual(list(splits), ["validation_matched", "validation_mismatched"])

    def test_super_glue_jsonl(self) -> None:
        write_files(self.root, {
            "BoolQ/val.jsonl": '{"question": "is it", "passage": "It is.", "idx": 7, "label": true}\n'
                               '{"question": "is it not", "passage": "No.", "idx": 8, "label": false}\n',
            "BoolQ/test.jsonl": '{"question": "is it", "passage": "Maybe.", "idx": 0}\n',
        })
        entry = get_task("super_glue", "boolq")
        splits = load_task_splits(entry, dataset_dir=self.root, roles=["validation", "test"])
        self.assertEqual(records(splits["validation"]), [
            {"question": "is it", "passage": "It is.", "label": 1, "idx": 7},
            {"question": "is it not", "passage": "No.", "label": 0, "idx": 8},
        ])
        self.assertEqual(records(splits["test"]),
                         [{"question": "is it", "passage": "Maybe.", "label": -1, "idx": 0}])

    def test_explicit_files(self) -> None:
        write_files(self.root, {
            "train.jsonl": '{"sentence": "nice", "label": "positive"}\n{"sentence": "bad", "label": 0}\n',
            "dev.csv": 'sentence,label\n"good, really",1\n',
        })
        splits = load_task_splits(
            get_task("glue", "sst2"), train_file=self.root / "train.jsonl", validation_file=self.root / "dev.csv"
        )
        self.assertEqual(list(splits), ["train", "validation"])  # no test file: no Hub look-up for it
        self.assertEqual(records(splits["train"]), [{"sentence": "nice", "label": 1, "idx": 0},
                                                    {"sentence": "bad", "label": 0, "idx": 1}])
        self.assertEqual(records(splits["validation"]), [{"sentence": "good, really", "label": 1, "idx": 0}])


    def test_utf8_bom_is_not_part_of_the_first_column(self) -> None:
        # Excel and Windows editors save "UTF-8" with a byte-order mark; it must not become "\ufeffsentence".
        for name, text in {"train.tsv": "sentence\tlabel\nnice\t1\n", "train.csv": "sentence,label\nnice,1\n",
                           "train.jsonl": '{"sentence": "nice", "label": 1}\n',
                           "train.json": '[{"sentence": "nice", "label": 1}]'}.items():
            (self.root / name).write_text(text, encoding="utf-8-sig")
            splits = load_task_splits(get_task("glue", "sst2"), train_file=self.root / name, roles=["train"])
            self.assertEqual(records(splits["train"]), [{"sentence": "nice", "label": 1, "idx": 0}], name)


class ToyTest(absltest.TestCase):
    def test_deterministic_balanced_and_loadable(self) -> None:
        root = make_tempdir(self)
        folder = write_toy_benchmark(root / "a", n_train=100, n_validation=20, n_test=10, seed=3)
        again = write_toy_benchmark(root / "b", n_train=100, n_validation=20, n_test=10, seed=3)
        other = write_toy_benchmark(root / "c", n_train=100, n_validation=20, n_test=10, seed=4)
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            self.assertEqual((folder / name).read_text(), (again / name).read_text())
        self.assertNotEqual((folder / "train.tsv").read_text(), (other / "train.tsv").read_text())
        self.assertEqual((folder / "test.tsv").read_text().splitlines()[0], "index\tsentence")

        splits = load_task_splits(get_task("toy", "sentiment"), dataset_dir=root / "a")
        self.assertEqual({k: len(v) for k, v in splits.items()}, {"train": 100, "validation": 20, "test": 10})
        self.assertEqual(sum(splits["train"]["label"]), 50)
        self.assertEqual(sum(splits["validation"]["label"]), 10)
        self.assertEqual(set(splits["test"]["label"]), {-1})
        sentences = [s for split in splits.values() for s in split["sentence"]]
        self.assertEqual(len(sentences), len(set(sentences)))  # no sentence shared across splits

    def test_label_follows_the_sentiment_words(self) -> None:
        entry = get_task("toy", "sentiment")
        negative, positive = (set(words) for words in entry["generator"]["words"])
        for sentence, label in generate_toy_splits(entry["generator"])["train"]:
            words = set(sentence.split())
            self.assertTrue(words & (positive if label else negative), sentence)
            self.assertFalse(words & (negative if label else positive), sentence)

    def test_generated_without_files_equals_written(self) -> None:
        root = make_tempdir(self)
        entry = get_task("toy", "sentiment")
        generated = load_task_splits(entry)
        written = load_task_splits(entry, dataset_dir=write_toy_benchmark(root).parent)
        for split in ("train", "validation", "test"):
            self.assertEqual(generated[split][:], written[split][:])

    def test_a_dataset_dir_without_the_toy_files_is_an_error_not_generated_data(self) -> None:
        root = make_tempdir(self)
        with self.assertRaisesRegex(UserError, r"has no 'train' split; looked for: .*toy-sentiment/train\.tsv"):
            load_task_splits(get_task("toy", "sentiment"), dataset_dir=root)


# A tiny task whose one native file holds every labelled record; its validation split comes from the
# split rule. Records: "review 0" ... "review 9", labels alternating.
REVIEWS = "".join(f'{{"text": "review {i}", "label": "{"positive" if i % 2 else "negative"}"}}\n' for i in range(10))
SPLIT_RULE_ENTRY = {
    "prefix": "review", "text_columns": ["text"], "labels": ["negative", "positive"], "metric_names": ["accuracy"],
    "splits": {"train": ["train"], "validation": ["validation"]}, "tsv_files": {"train": "all.jsonl"},
    "split_rule": {"validation_fraction": 0.2, "seed": 0},
}


class SplitRuleTest(absltest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(DATASET_VALS.pop, "custom", None)
        self.root = write_files(make_tempdir(self), {"reviews/all.jsonl": REVIEWS})
        self.entry = register_task("custom", "reviews", SPLIT_RULE_ENTRY)

    def test_validation_is_carved_from_the_single_file_with_a_seed(self) -> None:
        splits = load_task_splits(self.entry, dataset_dir=self.root)
        self.assertEqual(list(splits), ["train", "validation"])
        # random.Random(0) shuffles range(10) to 7, 8, 1, 5, ...: the first 20% are validation, in file order.
        self.assertEqual(splits["validation"]["idx"], [7, 8])
        self.assertEqual(splits["validation"]["text"], ["review 7", "review 8"])
        self.assertEqual(splits["validation"]["label"], [1, 0])
        self.assertEqual(splits["train"]["idx"], [0, 1, 2, 3, 4, 5, 6, 9])
        self.assertEqual(split_rule_indices(self.entry, 10), ([0, 1, 2, 3, 4, 5, 6, 9], [7, 8]))
        self.assertEqual(load_task_splits(self.entry, dataset_dir=self.root)["validation"][:], splits["validation"][:])

    def test_another_seed_gives_another_split(self) -> None:
        entry = register_task("custom", "reseeded", {**SPLIT_RULE_ENTRY, "split_rule": {"validation_fraction": 0.2, "seed": 1},
                                                     "tsv_dir": "reviews"})
        self.assertEqual(load_task_splits(entry, dataset_dir=self.root)["validation"]["idx"], [6, 8])

    def test_roles_and_explicit_files(self) -> None:
        only_validation = load_task_splits(self.entry, dataset_dir=self.root, roles=["validation"])
        self.assertEqual(list(only_validation), ["validation"])
        self.assertEqual(only_validation["validation"]["idx"], [7, 8])
        from_train_file = load_task_splits(self.entry, train_file=self.root / "reviews" / "all.jsonl")
        self.assertEqual((from_train_file["train"]["idx"], from_train_file["validation"]["idx"]), ([0, 1, 2, 3, 4, 5, 6, 9], [7, 8]))
        write_files(self.root, {"dev.jsonl": '{"text": "held out", "label": "positive"}\n'})
        own_validation = load_task_splits(self.entry, train_file=self.root / "reviews" / "all.jsonl",
                                          validation_file=self.root / "dev.jsonl")
        self.assertEqual((len(own_validation["train"]), own_validation["validation"]["text"]), (10, ["held out"]))

    def test_one_record_cannot_be_split(self) -> None:
        write_files(self.root, {"reviews/all.jsonl": '{"text": "alone", "label": 0}\n'})
        with self.assertRaisesRegex(UserError, r"^task custom/reviews: split_rule needs at least 2 training records .* got 1$"):
            load_task_splits(self.entry, dataset_dir=self.root)


def read_native_dump(entry: Any, dataset_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """A test loader: one nested JSON document (not rows) with star ratings -> train records."""
    if dataset_dir is None:
        return {}
    dump = json.loads((dataset_dir / entry["tsv_dir"] / "dump.json").read_text(encoding="utf-8"))
    return {"train": [{"text": r["body"], "label": "positive" if r["stars"] >= 3 else "negative"} for r in dump["reviews"]]}


class LoaderTest(absltest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(DATASET_VALS.pop, "custom", None)
        tasks.LOADERS["native_dump"] = read_native_dump
        self.addCleanup(tasks.LOADERS.pop, "native_dump")
        self.entry = register_task("custom", "reviews", {**SPLIT_RULE_ENTRY, "tsv_files": {}, "loader": "native_dump"})
        dump = {"reviews": [{"body": f"review {i}", "stars": 1 + i % 5} for i in range(10)]}
        self.root = write_files(make_tempdir(self), {"reviews/dump.json": json.dumps(dump)})

    def test_loader_reads_a_native_file_and_the_split_rule_divides_it(self) -> None:
        splits = load_task_splits(self.entry, dataset_dir=self.root)
        self.assertEqual((splits["train"]["idx"], splits["validation"]["idx"]), ([0, 1, 2, 3, 4, 5, 6, 9], [7, 8]))
        self.assertEqual(splits["validation"]["text"], ["review 7", "review 8"])
        self.assertEqual(splits["validation"]["label"], [1, 1])  # 3 and 4 stars
        self.assertEqual(splits["train"]["label"], [0, 0, 1, 1, 1, 0, 0, 1])

    def test_loader_without_its_data_is_a_one_line_error(self) -> None:
        with self.assertRaisesRegex(UserError, r"^task custom/reviews: loader 'native_dump' produced no 'train' split; pass a dataset directory or files$"):
            load_task_splits(self.entry)


class UserErrorTest(absltest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.root = make_tempdir(self)

    def assert_user_error(self, fragments: list[str], fn: Any, *args: Any, **kwargs: Any) -> None:
        with self.assertRaises(UserError) as context:
            fn(*args, **kwargs)
        message = str(context.exception)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_unknown_benchmark_and_task(self) -> None:
        self.assert_user_error(["'gleu'", "glue, ax, super_glue, toy"], get_task, "gleu", "sst2")
        self.assert_user_error(["'sst3'", "cola, sst2, mrpc"], get_task, "glue", "sst3")

    def test_missing_split(self) -> None:
        write_files(self.root, {"SST-2/train.tsv": "sentence\tlabel\nok\t1\n"})
        self.assert_user_error([str(self.root), "'validation'", "SST-2/dev.tsv", "sst2/validation-*.parquet"],
                               load_task_splits, get_task("glue", "sst2"), dataset_dir=self.root)

    def test_label_outside_labels(self) -> None:
        dev = "sentence1\tsentence2\tgold_label\na\tb\tneutral\nc\td\tmaybe\n"
        write_files(self.root, {"MNLI/dev_matched.tsv": dev})
        self.assert_user_error(
            ["dev_matched.tsv, line 3", "'gold_label'", "'maybe'", "entailment, neutral, contradiction"],
            load_task_splits, get_task("glue", "mnli"), dataset_dir=self.root, roles=["validation"],
        )
        write_files(self.root, {"SST-2/train.tsv": "sentence\tlabel\nok\t2\n"})
        self.assert_user_error(["train.tsv, line 2", "'2'", "negative, positive"],
                               load_task_splits, get_task("glue", "sst2"), dataset_dir=self.root, roles=["train"])
        write_files(self.root, {"STS-B/train.tsv": "sentence1\tsentence2\tscore\na\tb\tfive\n"})
        self.assert_user_error(["train.tsv, line 2", "'score'", "'five'"],
                               load_task_splits, get_task("glue", "stsb"), dataset_dir=self.root, roles=["train"])

    def test_empty_split(self) -> None:
        write_files(self.root, {"SST-2/train.tsv": "sentence\tlabel\n"})
        self.assert_user_error(["SST-2/train.tsv", "no records"],
                               load_task_splits, get_task("glue", "sst2"), dataset_dir=self.root, roles=["train"])

    def test_missing_column(self) -> None:
        write_files(self.root, {"QQP/train.tsv": "id\tquestion1\tquestion\tis_duplicate\n0\ta\tb\t1\n"})
        self.assert_user_error(
            ["QQP/train.tsv", "'question2'", "columns found: id, question1, question, is_duplicate"],
            load_task_splits, get_task("glue", "qqp"), dataset_dir=self.root, roles=["train"],
        )
        write_files(self.root, {"MRPC/train.tsv": "#1 String\t#2 String\n" + "a\tb\n"})
        self.assert_user_error(["MRPC/train.tsv", "'label' (or 'Quality')"],
                               load_task_splits, get_task("glue", "mrpc"), dataset_dir=self.root, roles=["train"])

    def test_short_row_and_bad_files(self) -> None:
        write_files(self.root, {"RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tonly one field\n",
                                "train.txt": "x", "bad.jsonl": "{not json\n"})
        self.assert_user_error(["RTE/train.tsv, line 2", "'sentence2'"],
                               load_task_splits, get_task("glue", "rte"), dataset_dir=self.root, roles=["train"])
        self.assert_user_error(["train.txt", ".tsv"], load_task_splits, get_task("glue", "rte"),
                               train_file=self.root / "train.txt")
        self.assert_user_error(["bad.jsonl"], load_task_splits, get_task("glue", "rte"),
                               train_file=self.root / "bad.jsonl")
        self.assert_user_error(["no such file"], load_task_splits, get_task("glue", "rte"),
                               train_file=self.root / "missing.tsv")

    def test_more_fields_than_the_header_is_an_error_with_its_line(self) -> None:
        # A tab inside the text would otherwise train as label 0 with the text cut at the tab.
        write_files(self.root, {"train.tsv": "sentence\tlabel\ngreat\t1\nthe verdict\t0\t1 (really positive)\n",
                                "train.csv": 'sentence,label\n"two\nlines",1\nfine, really,1\n',
                                "CoLA/train.tsv": "gj04\t1\t\tA sentence.\ngj04\t1\t\tA\ttab.\n"})
        sst2 = get_task("glue", "sst2")
        with self.assertRaises(UserError) as caught:
            load_task_splits(sst2, train_file=self.root / "train.tsv", roles=["train"])
        self.assertEqual(str(caught.exception), f"{self.root}/train.tsv: line 3: 3 fields, the header has 2 (a tab inside the text?)")
        with self.assertRaises(UserError) as caught:  # the quoted field spans lines 2-3: the bad row is on line 4
            load_task_splits(sst2, train_file=self.root / "train.csv", roles=["train"])
        self.assertEqual(str(caught.exception),
                         f"{self.root}/train.csv: line 4: 3 fields, the header has 2 (a comma outside quotes?)")
        self.assert_user_error(["CoLA/train.tsv: line 2: 5 fields, the file has no header and 4 columns (a tab inside the text?)"],
                               load_task_splits, get_task("glue", "cola"), dataset_dir=self.root, roles=["train"])

    def test_line_numbers_count_lines_and_rows_count_from_one(self) -> None:
        write_files(self.root, {"dev.csv": 'sentence,label\n"two\nlines",1\nbad,7\n'})
        self.assert_user_error(["dev.csv, line 4: column 'label': label '7'"],
                               load_task_splits, get_task("glue", "sst2"), validation_file=self.root / "dev.csv")
        pq.write_table(pa.Table.from_pylist([{"sentence": None, "label": 1}]), self.root / "dev.parquet")
        self.assert_user_error(["dev.parquet, row 1: column 'sentence' is missing or not text (got None)"],
                               load_task_splits, get_task("glue", "sst2"), validation_file=self.root / "dev.parquet")
        write_files(self.root, {"dev.jsonl": '{"sentence": "a", "label": 1}\n\n{"sentence": 5, "label": 1}\n'})
        self.assert_user_error(["dev.jsonl, line 3: column 'sentence'"],  # the blank line 2 is counted
                               load_task_splits, get_task("glue", "sst2"), validation_file=self.root / "dev.jsonl")
        write_files(self.root, {"dev.json": '[{"sentence": "a", "label": 1},\n {"sentence": 5, "label": 1}]'})
        self.assert_user_error(["dev.json, row 2: column 'sentence'"],
                               load_task_splits, get_task("glue", "sst2"), validation_file=self.root / "dev.json")

    def test_split_the_task_lacks(self) -> None:
        self.assert_user_error(["ax/ax has no train split", "it has: test"],
                               load_task_splits, get_task("ax", "ax"), train_file=self.root / "x.tsv")

    def test_hub_offline(self) -> None:
        # HF_HUB_OFFLINE=1: the real `datasets.load_dataset` call fails at once and becomes a UserError.
        self.assert_user_error(["nyu-mll/glue", "local copy"], load_task_splits, get_task("glue", "wnli"),
                               cache_dir=str(self.root / "cache"))


if __name__ == "__main__":
    absltest.main()
