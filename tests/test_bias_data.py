"""bias_data.py: CrowS-Pairs, StereoSet and WinoBias readers on hand-written files in each native and
Hub parquet form (exact records), one-line errors, the synthetic fixtures and the Hub path (mocked).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_bias_data.py
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.parquet as pq
from absl.testing import absltest, parameterized

import bias_data
from bias_data import (
    CROWS_BIAS_TYPES,
    STEREOSET_KINDS,
    WINOBIAS_EXAMPLE,
    detokenize,
    find_crows_pairs,
    find_stereoset,
    load_hub,
    read_crows_pairs,
    read_stereoset,
    read_stereoset_parquet,
    read_winobias,
    read_winobias_file,
    stereoset_hub_record,
    write_bias_fixtures,
)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- hand-written files --------------------------------------------------------------------------

# The release's quirks: a byte-order mark, Windows line ends, an empty first header name, repr lists,
# a quoted field holding a comma and doubled quotes.
CROWS_CSV = (
    "\ufeff,sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\r\n"
    "0,\"Zorbians like soup, mostly.\",\"Quellans like \"\"soup\"\", mostly.\",stereo,race-color,"
    "\"[['race-color'], ['race-color'], []]\",a0,\"['a1', 'a2', 'a3']\"\r\n"
    "7,Old Fennics nap.,Young Fennics nap.,antistereo,age,\"[['age', 'gender'], [], ['age']]\",a4,\"['a5', 'a6', 'a7']\"\r\n"
)
CROWS_RECORDS = [
    {"id": 0, "sent_more": "Zorbians like soup, mostly.", "sent_less": "Quellans like \"soup\", mostly.",
     "stereo_antistereo": "stereo", "bias_type": "race-color", "annotations": [["race-color"], ["race-color"], []],
     "anon_writer": "a0", "anon_annotators": ["a1", "a2", "a3"]},
    {"id": 7, "sent_more": "Old Fennics nap.", "sent_less": "Young Fennics nap.", "stereo_antistereo": "antistereo",
     "bias_type": "age", "annotations": [["age", "gender"], [], ["age"]], "anon_writer": "a4",
     "anon_annotators": ["a5", "a6", "a7"]},
]
CROWS_HEADER = "sent_more,sent_less,stereo_antistereo,bias_type"
CROWS_GOOD = "Zorbians nap.,Quellans nap.,stereo,age"

# Sentences in the release's arbitrary order (unrelated first); labels include the annotators' 'related'.
INTRA = {"id": "e1", "target": "lamplighter", "bias_type": "profession", "context": "The lamplighter is BLANK.", "sentences": [
    {"id": "s3", "sentence": "The lamplighter is teapot.", "gold_label": "unrelated",
     "labels": [{"label": "unrelated", "human_id": "h1"}, {"label": "related", "human_id": "h2"}]},
    {"id": "s1", "sentence": "The lamplighter is punctual.", "gold_label": "stereotype",
     "labels": [{"label": "stereotype", "human_id": "h1"}, {"label": "stereotype", "human_id": "h2"}]},
    {"id": "s2", "sentence": "The lamplighter is late.", "gold_label": "anti-stereotype",
     "labels": [{"label": "anti-stereotype", "human_id": "h1"}, {"label": "unrelated", "human_id": "h2"}]},
]}
INTER = {"id": "e2", "target": "Zorbian", "bias_type": "race", "context": "I met a Zorbian.", "sentences": [
    {"id": "t1", "sentence": "They had an umbrella.", "gold_label": "anti-stereotype", "labels": [{"label": "anti-stereotype", "human_id": "h3"}]},
    {"id": "t2", "sentence": "Soup is warm.", "gold_label": "unrelated", "labels": [{"label": "unrelated", "human_id": "h3"}]},
    {"id": "t3", "sentence": "They had no umbrella.", "gold_label": "stereotype", "labels": [{"label": "related", "human_id": "h3"}]},
]}
LABEL_IDS = {"anti-stereotype": 0, "stereotype": 1, "unrelated": 2, "related": 3}


def hub_row(example: dict[str, Any]) -> dict[str, Any]:
    """The Hub copy's form of a release example: `sentences` as a struct of lists, integer labels."""
    sentences = example["sentences"]
    return {**{key: example[key] for key in ("id", "target", "bias_type", "context")}, "sentences": {
        "sentence": [s["sentence"] for s in sentences], "id": [s["id"] for s in sentences],
        "labels": [{"label": [LABEL_IDS[label["label"]] for label in s["labels"]],
                    "human_id": [label["human_id"] for label in s["labels"]]} for s in sentences],
        "gold_label": [LABEL_IDS[s["gold_label"]] for s in sentences]}}


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


class BiasDataTest(parameterized.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.dir = self.new_dir()

    def new_dir(self) -> str:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        return folder.name

    def write(self, name: str, text: str | bytes) -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        return path

    def write_parquet(self, name: str, rows: list[dict[str, Any]]) -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    def assertUserError(self, pattern: str, function: Callable[..., Any], *args: Any) -> None:
        with self.assertRaisesRegex(UserError, pattern) as context:
            function(*args)
        self.assertNotIn("\n", str(context.exception))


class CrowsPairsTest(BiasDataTest):
    def test_release_csv(self):
        self.assertEqual(read_crows_pairs(self.write("crows_pairs_anonymized.csv", CROWS_CSV)), CROWS_RECORDS)

    def test_csv_without_index_or_optional_columns(self):
        path = self.write("pairs.csv", f"{CROWS_HEADER}\n{CROWS_GOOD}\nA b.,C d.,antistereo,religion\n")
        self.assertEqual(read_crows_pairs(path), [
            {"id": 0, "sent_more": "Zorbians nap.", "sent_less": "Quellans nap.", "stereo_antistereo": "stereo", "bias_type": "age"},
            {"id": 1, "sent_more": "A b.", "sent_less": "C d.", "stereo_antistereo": "antistereo", "bias_type": "religion"}])

    def test_trailing_comma_is_not_an_index(self):
        path = self.write("pairs.csv", f"{CROWS_HEADER},\n{CROWS_GOOD},\n")
        self.assertEqual([pair["id"] for pair in read_crows_pairs(path)], [0])

    def test_parquet_null_sentence(self):
        path = self.write_parquet("test.parquet", [{"id": 1, "sent_more": "A.", "sent_less": None, "stereo_antistereo": 0,
                                                    "bias_type": 0}])
        self.assertUserError(exact(f"{path} row 1: field 'sent_less' is missing (a short row or a null value); it must be text"),
                             read_crows_pairs, path)

    def test_hub_parquet_class_label_ints(self):
        rows = [{**record, "stereo_antistereo": ["stereo", "antistereo"].index(record["stereo_antistereo"]),
                 "bias_type": CROWS_BIAS_TYPES.index(record["bias_type"]),
                 "annotations": [[CROWS_BIAS_TYPES.index(kind) for kind in one] for one in record["annotations"]]}
                for record in CROWS_RECORDS]
        self.assertEqual(rows[1]["annotations"], [[8, 2], [], [8]])
        self.assertEqual(read_crows_pairs(self.write_parquet("test.parquet", rows)), CROWS_RECORDS)

    def test_parquet_with_strings_and_no_id(self):
        path = self.write_parquet("test.parquet", [{"sent_more": "A b.", "sent_less": "C d.", "stereo_antistereo": "antistereo",
                                                    "bias_type": "gender"}])
        self.assertEqual(read_crows_pairs(path), [{"id": 0, "sent_more": "A b.", "sent_less": "C d.",
                                                   "stereo_antistereo": "antistereo", "bias_type": "gender"}])

    @parameterized.named_parameters(
        ("missing_column", "sent_less,stereo_antistereo,bias_type\nA.,stereo,age\n",
         "{path}: no column 'sent_more'; a CrowS-Pairs file has columns sent_more, sent_less, stereo_antistereo, bias_type"),
        ("empty_sentence", f"{CROWS_HEADER}\n{CROWS_GOOD}\nA b.,  ,stereo,age\n",
         "{path} line 3: field 'sent_less' is empty; a sentence must hold words"),
        ("short_row", f"{CROWS_HEADER}\n{CROWS_GOOD}\nA b.,C d.,stereo\n",
         "{path} line 3: field 'bias_type' is missing (a short row or a null value); valid: " + ", ".join(CROWS_BIAS_TYPES)),
        ("unknown_direction", f"{CROWS_HEADER}\nA b.,C d.,pro,age\n",
         "{path} line 2: field 'stereo_antistereo' is 'pro'; valid: stereo, antistereo"),
        ("unknown_bias_type", f"{CROWS_HEADER}\nA b.,C d.,stereo,colour\n",
         "{path} line 2: field 'bias_type' is 'colour'; valid: " + ", ".join(CROWS_BIAS_TYPES)),
        ("bad_annotations", f"{CROWS_HEADER},annotations\n{CROWS_GOOD},\"[['age'], [\"\n",
         "{path} line 2: field 'annotations' is \"[['age'], [\", not a list literal; expected e.g. "
         "[['race-color'], ['race-color'], []] (one list of bias types per annotator)"),
        ("json_is_not_a_list", f"{CROWS_HEADER},anon_annotators\n{CROWS_GOOD},{{'a0': 1}}\n",
         "{path} line 2: field 'anon_annotators' must be a list, got dict {{'a0': 1}}; expected e.g. ['a0', 'a1']"),
        ("bad_annotation_type", f"{CROWS_HEADER},annotations\n{CROWS_GOOD},\"[['age'], ['ages']]\"\n",
         "{path} line 2: field 'annotations[1][0]' is 'ages'; valid: " + ", ".join(CROWS_BIAS_TYPES)),
        ("bad_index", f",{CROWS_HEADER}\n0,{CROWS_GOOD}\nx,{CROWS_GOOD}\n",
         "{path} line 3: the index column (empty header) is 'x'; it must be an integer (the row's id)"),
        ("header_only", f"{CROWS_HEADER}\n", "{path}: no pairs (only a header)"),
        ("empty_file", "", "{path}: empty; a CrowS-Pairs file starts with a header line naming "
                           "sent_more, sent_less, stereo_antistereo, bias_type"),
    )
    def test_csv_errors(self, text, message):
        path = self.write("pairs.csv", text)
        self.assertUserError(exact(message.format(path=path)), read_crows_pairs, path)

    def test_non_utf8_csv(self):
        path = self.write("pairs.csv", f"{CROWS_HEADER}\n".encode() + b"Caf\xe9 nap.,B.,stereo,age\n")
        self.assertUserError(exact(f"{path}: not UTF-8 text (byte 0xe9 at offset 51, line 2); re-encode it as UTF-8"),
                             read_crows_pairs, path)

    def test_parquet_class_label_out_of_range(self):
        path = self.write_parquet("test.parquet", [
            {"id": 3, "sent_more": "A.", "sent_less": "B.", "stereo_antistereo": 0, "bias_type": 8},
            {"id": 4, "sent_more": "A.", "sent_less": "B.", "stereo_antistereo": 1, "bias_type": 9}])
        choices = ", ".join(f"{i} {name}" for i, name in enumerate(CROWS_BIAS_TYPES))
        self.assertUserError(exact(f"{path} row 2: field 'bias_type' is 9; a class id is 0-8 ({choices})"), read_crows_pairs, path)

    def test_unknown_suffix_and_unreadable_parquet(self):
        path = self.write("pairs.tsv", CROWS_HEADER)
        self.assertUserError(exact(f"{path}: unknown file type; a CrowS-Pairs file is .csv (the release, "
                                   "crows_pairs_anonymized.csv) or .parquet (the Hub copy)"), read_crows_pairs, path)
        path = self.write("pairs.parquet", "not parquet")
        self.assertUserError(f"^{re.escape(path)}: not a readable parquet file \\(.+\\)$", read_crows_pairs, path)

    def test_find_crows_pairs(self):
        self.assertUserError(exact(f"{self.dir}: no CrowS-Pairs file; looked for crows_pairs_anonymized.csv, "
                                   "crows_pairs/test-*.parquet, crows_pairs/test/*.parquet"), find_crows_pairs, self.dir)
        self.write_parquet("crows_pairs/test/0000.parquet", [{"id": 5, "sent_more": "A.", "sent_less": "B.",
                                                             "stereo_antistereo": 1, "bias_type": 0}])
        self.assertEqual([pair["id"] for pair in find_crows_pairs(self.dir)], [5])
        self.write("crows_pairs_anonymized.csv", CROWS_CSV)
        self.assertEqual(find_crows_pairs(self.dir), CROWS_RECORDS)


class StereoSetTest(BiasDataTest):
    def write_json(self, data: Any, name: str = "dev.json") -> str:
        return self.write(name, json.dumps(data))

    def test_release_json(self):
        path = self.write_json({"version": "1.0-dev", "data": {"intrasentence": [INTRA], "intersentence": [INTER]}})
        examples = read_stereoset(path)
        self.assertEqual(examples, {"intrasentence": [INTRA], "intersentence": [INTER]})
        self.assertEqual([s["gold_label"] for s in examples["intrasentence"][0]["sentences"]],
                         ["unrelated", "stereotype", "anti-stereotype"])  # file order, not a fixed one

    def test_one_kind_and_extra_keys(self):
        extra = {**INTRA, "note": "dropped", "sentences": [{**s, "extra": 1} for s in INTRA["sentences"]]}
        self.assertEqual(read_stereoset(self.write_json({"data": {"intrasentence": [extra]}})), {"intrasentence": [INTRA]})

    def test_hub_row_and_parquet(self):
        self.assertEqual(hub_row(INTRA)["sentences"]["gold_label"], [2, 1, 0])
        self.assertEqual(stereoset_hub_record(hub_row(INTRA), "intrasentence", "row 1"), INTRA)
        path = self.write_parquet("intersentence/validation-00000-of-00001.parquet", [hub_row(INTER), hub_row(INTER)])
        self.assertEqual(read_stereoset_parquet(path, "intersentence"), [INTER, INTER])
        self.assertEqual(read_stereoset_parquet([path, path], "intersentence"), [INTER] * 4)

    def test_find_stereoset(self):
        self.assertUserError(exact(f"{self.dir}: no StereoSet files; looked for dev.json, test.json, "
                                   "intrasentence/validation-*.parquet, intersentence/validation-*.parquet"), find_stereoset, self.dir)
        self.write_parquet("intersentence/validation-00000-of-00001.parquet", [hub_row(INTER)])
        self.assertEqual(find_stereoset(self.dir), {"intersentence": [INTER]})
        self.write_json({"data": {"intrasentence": [INTRA]}}, "test.json")
        self.assertEqual(find_stereoset(self.dir), {"intrasentence": [INTRA]})
        self.write_json({"data": {"intersentence": [INTER]}}, "dev.json")
        self.assertEqual(find_stereoset(self.dir), {"intersentence": [INTER]})

    @parameterized.named_parameters(
        ("no_data", {"version": "1.0"},
         "{path}: no 'data' key; a StereoSet file is "
         '{{"version": ..., "data": {{"intrasentence": [...], "intersentence": [...]}}}}'),
        ("no_kind", {"data": {"intra": []}},
         "{path}: 'data' has neither 'intrasentence' nor 'intersentence'; a StereoSet file is "
         '{{"version": ..., "data": {{"intrasentence": [...], "intersentence": [...]}}}}'),
        ("kind_not_a_list", {"data": {"intersentence": {}}}, "{path}: data.intersentence must be a list of examples, got dict"),
        ("missing_key", {"data": {"intrasentence": [INTRA], "intersentence": [{k: v for k, v in INTER.items() if k != "context"}]}},
         "{path}: intersentence example 1 (id e2): no 'context' key; a StereoSet example has keys "
         "id, target, bias_type, context, sentences"),
        ("missing_id", {"data": {"intersentence": [INTER, {k: v for k, v in INTER.items() if k != "id"}]}},
         "{path}: intersentence example 2: no 'id' key; a StereoSet example has keys id, target, bias_type, context, sentences"),
        ("bad_bias_type", {"data": {"intersentence": [{**INTER, "bias_type": "age"}]}},
         "{path}: intersentence example 1 (id e2): field 'bias_type' is 'age'; valid: gender, profession, race, religion"),
        ("bad_gold_label", {"data": {"intrasentence": [{**INTRA, "sentences": [
            INTRA["sentences"][0], {**INTRA["sentences"][1], "gold_label": "neutral"}, INTRA["sentences"][2]]}]}},
         "{path}: intrasentence example 1 (id e1) sentence 2 (id s1): field 'gold_label' is 'neutral'; "
         "valid: anti-stereotype, stereotype, unrelated"),
        ("bad_label", {"data": {"intrasentence": [{**INTRA, "sentences": [
            {**INTRA["sentences"][0], "labels": [{"label": "meh", "human_id": "h1"}]}, *INTRA["sentences"][1:]]}]}},
         "{path}: intrasentence example 1 (id e1) sentence 1 (id s3): field 'labels[0].label' is 'meh'; "
         "valid: anti-stereotype, stereotype, unrelated, related"),
        ("sentence_missing_key", {"data": {"intrasentence": [{**INTRA, "sentences": [
            {k: v for k, v in INTRA["sentences"][0].items() if k != "gold_label"}, *INTRA["sentences"][1:]]}]}},
         "{path}: intrasentence example 1 (id e1) sentence 1 (id s3): no 'gold_label' key; a StereoSet sentence has keys "
         "id, sentence, labels, gold_label"),
        ("two_stereotypes", {"data": {"intrasentence": [{**INTRA, "sentences": [
            INTRA["sentences"][0], INTRA["sentences"][1], {**INTRA["sentences"][2], "gold_label": "stereotype"}]}]}},
         "{path}: intrasentence example 1 (id e1): field 'sentences' has gold labels [unrelated, stereotype, stereotype]; "
         "an example has exactly one sentence of each of anti-stereotype, stereotype, unrelated"),
        ("two_sentences", {"data": {"intersentence": [{**INTER, "sentences": INTER["sentences"][:2]}]}},
         "{path}: intersentence example 1 (id e2): field 'sentences' has gold labels [anti-stereotype, unrelated]; "
         "an example has exactly one sentence of each of anti-stereotype, stereotype, unrelated"),
        ("no_blank", {"data": {"intrasentence": [{**INTRA, "context": "The lamplighter is here."}]}},
         "{path}: intrasentence example 1 (id e1): field 'context' has no BLANK; an intrasentence context marks the "
         "word to fill with BLANK, as in 'The chess player was BLANK.'"),
    )
    def test_json_errors(self, data, message):
        path = self.write_json(data)
        self.assertUserError(exact(message.format(path=path)), read_stereoset, path)

    def test_invalid_json(self):
        path = self.write("dev.json", '{"data": {\n  "intrasentence": [,]}}')
        self.assertUserError(exact(f"{path}: invalid JSON at line 2 column 21: Expecting value"), read_stereoset, path)

    def test_parquet_errors(self):
        row = hub_row(INTRA)
        row["sentences"]["gold_label"] = [5, 1, 0]
        path = self.write_parquet("intrasentence/validation.parquet", [row])
        self.assertUserError(exact(f"{path} row 1 (id e1) sentence 1 (id s3): field 'gold_label' is 5; "
                                   "a class id is 0-2 (0 anti-stereotype, 1 stereotype, 2 unrelated)"),
                             read_stereoset_parquet, path, "intrasentence")
        self.assertUserError(exact("StereoSet kind 'intra': valid: intrasentence, intersentence"), read_stereoset_parquet, path, "intra")
        path = self.write_parquet("intersentence/validation.parquet", [{"id": "e2", "target": "Zorbian"}])
        self.assertUserError(exact(f"{path}: no column 'bias_type'; a StereoSet parquet file has columns "
                                   "id, target, bias_type, context, sentences"), read_stereoset_parquet, path, "intersentence")
        row = hub_row(INTER)
        row["sentences"]["id"] = ["t1", "t2"]
        self.assertUserError(exact("x row 3 (id e2): field 'sentences' holds lists of different lengths "
                                   "(id 2, sentence 3, labels 3, gold_label 3); each holds one item per sentence"),
                             stereoset_hub_record, row, "intersentence", "x row 3")


class WinoBiasTest(BiasDataTest):
    FILE = ("1 [The developer] argued with the designer because [he] did not like the design.\r\n"
            "\n"
            "  [The  baker] waved to [the gardener]   because [she] was late.\n"
            "12 The [clerk]'s hat fell on [the tailor].\n")

    def test_file(self):
        self.assertEqual(read_winobias_file(self.write("pro_stereotyped_type1.txt.dev", self.FILE)), [
            {"line": 1, "number": 1, "sentence": "The developer argued with the designer because he did not like the design.",
             "mentions": ["The developer", "he"]},
            {"line": 3, "number": None, "sentence": "The baker waved to the gardener because she was late.",
             "mentions": ["The baker", "the gardener", "she"]},
            {"line": 4, "number": 12, "sentence": "The clerk's hat fell on the tailor.", "mentions": ["clerk", "the tailor"]},
        ])

    @parameterized.named_parameters(
        ("no_brackets", "1 The developer argued with the designer.",
         f"{{path}} line 2: no [bracketed] mentions; a WinoBias line looks like {WINOBIAS_EXAMPLE!r}"),
        ("unclosed", "1 [The developer argued with he",
         f"{{path}} line 2: unbalanced '[' at column 3 is never closed; mentions are [bracketed], as in {WINOBIAS_EXAMPLE!r}"),
        ("nested", "1 [The developer argued with [he]]",
         f"{{path}} line 2: nested '[' at column 30; mentions are [bracketed] one level deep, as in {WINOBIAS_EXAMPLE!r}"),
        ("stray_close", "1 The developer] argued with [he]",
         f"{{path}} line 2: unbalanced ']' at column 16 closes no '['; mentions are [bracketed], as in {WINOBIAS_EXAMPLE!r}"),
        ("one_group", "[The developer] argued.",
         f"{{path}} line 2: 1 [bracketed] mentions; a WinoBias line has 2 or 3, as in {WINOBIAS_EXAMPLE!r}"),
        ("four_groups", "[A] [b] [c] [d].",
         f"{{path}} line 2: 4 [bracketed] mentions; a WinoBias line has 2 or 3, as in {WINOBIAS_EXAMPLE!r}"),
        ("empty_group", "[A] met [ ].",
         f"{{path}} line 2: mention 2 is an empty []; a mention holds words, as in {WINOBIAS_EXAMPLE!r}"),
    )
    def test_file_errors(self, bad_line, message):
        path = self.write("anti_stereotyped_type2.txt.test", f"1 [A] met [b].\n{bad_line}\n")
        self.assertUserError(exact(message.format(path=path)), read_winobias_file, path)

    def test_empty_file(self):
        path = self.write("pro_stereotyped_type1.txt.dev", "\n \n")
        self.assertUserError(exact(f"{path}: no lines; a WinoBias line looks like {WINOBIAS_EXAMPLE!r}"), read_winobias_file, path)

    def write_split(self, split: str, lines: int = 1) -> None:
        for type_ in (1, 2):
            for stereotype in ("pro", "anti"):
                text = "".join(f"{n} [A{type_}] met [{stereotype}].\n" for n in range(1, lines + 1))
                self.write(f"{stereotype}_stereotyped_type{type_}.txt.{split}", text)

    def test_split_order_and_fields(self):
        self.write_split("test", lines=2)
        self.write_split("dev")
        records = read_winobias(self.dir, "test")
        self.assertEqual([(r["type"], r["stereotype"], r["split"], r["line"], r["sentence"]) for r in records], [
            (1, "pro", "test", 1, "A1 met pro."), (1, "pro", "test", 2, "A1 met pro."),
            (1, "anti", "test", 1, "A1 met anti."), (1, "anti", "test", 2, "A1 met anti."),
            (2, "pro", "test", 1, "A2 met pro."), (2, "pro", "test", 2, "A2 met pro."),
            (2, "anti", "test", 1, "A2 met anti."), (2, "anti", "test", 2, "A2 met anti.")])
        self.assertEqual(records[0], {"line": 1, "number": 1, "sentence": "A1 met pro.", "mentions": ["A1", "pro"],
                                      "type": 1, "stereotype": "pro", "split": "test"})
        self.assertLen(read_winobias(self.dir, "dev"), 4)

    def test_split_errors(self):
        self.assertUserError(exact("WinoBias split 'validation': valid: dev, test"), read_winobias, self.dir, "validation")
        self.assertUserError(exact(
            f"{self.dir}: no WinoBias dev files; looked for pro_stereotyped_type1.txt.dev, anti_stereotyped_type1.txt.dev, "
            "pro_stereotyped_type2.txt.dev, anti_stereotyped_type2.txt.dev, type1_pro/validation-*.parquet, "
            "type1_anti/validation-*.parquet, type2_pro/validation-*.parquet, type2_anti/validation-*.parquet"),
            read_winobias, self.dir, "dev")
        self.write_split("dev")
        os.remove(os.path.join(self.dir, "anti_stereotyped_type2.txt.dev"))
        self.assertUserError(exact(
            f"{self.dir}: WinoBias dev files missing: anti_stereotyped_type2.txt.dev (a split is the four files "
            "pro_stereotyped_type1.txt.dev, anti_stereotyped_type1.txt.dev, pro_stereotyped_type2.txt.dev, "
            "anti_stereotyped_type2.txt.dev)"), read_winobias, self.dir, "dev")
        anti = self.write("anti_stereotyped_type2.txt.dev", "1 [A] met [b].\n2 [A] met [c].\n")
        pro = os.path.join(self.dir, "pro_stereotyped_type2.txt.dev")
        self.assertUserError(exact(f"{pro} has 1 lines but {anti} has 2; the pro- and anti-stereotyped files of type 2 "
                                   "are paired line by line"), read_winobias, self.dir, "dev")

    def test_detokenize(self):
        self.assertEqual(detokenize(["The", "clerk", "did", "n't", "see", "the", "baker", "'s", "hat", "(", "the",
                                     "red", "one", ")", ";", "so", "it", "goes", "!"]),
                         "The clerk didn't see the baker's hat (the red one); so it goes!")
        self.assertEqual(detokenize(["the", "tailors", "'", "shop", ",", "she", "said", ":", "fine", "?"]),
                         "the tailors' shop, she said: fine?")

    def test_hub_layout(self):
        tokens = ["The", "clerk", "did", "n't", "see", "the", "baker", "."]
        for config in ("type1_pro", "type1_anti", "type2_pro", "type2_anti"):
            self.write_parquet(f"{config}/test-00000-of-00001.parquet", [{"document_id": "x", "tokens": tokens}] * 2)
        records = read_winobias(self.dir, "test")
        self.assertLen(records, 8)
        self.assertEqual(records[3], {"line": 2, "number": None, "sentence": "The clerk didn't see the baker.", "mentions": [],
                                      "type": 1, "stereotype": "anti", "split": "test"})
        path = self.write_parquet("type2_anti/test-00000-of-00001.parquet", [{"tokens": tokens}, {"tokens": []}])
        self.assertUserError(exact(f"{path} row 2: field 'tokens' must be a non-empty list of words, got list []"),
                             read_winobias, self.dir, "test")
        path = self.write_parquet("type2_anti/test-00000-of-00001.parquet", [{"words": tokens}])
        self.assertUserError(exact(f"{path}: no column 'tokens'; a WinoBias parquet file (uclanlp/wino_bias) has a 'tokens' column"),
                             read_winobias, self.dir, "test")


def winobias_key(record: dict[str, Any]) -> tuple:
    """What the release and the Hub copy share (the Hub has no leading numbers or bracketed mentions)."""
    return record["type"], record["stereotype"], record["split"], record["line"], record["sentence"]


class FixturesTest(BiasDataTest):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.fixtures = os.path.join(cls.root, "fixtures")
        cls.paths = write_bias_fixtures(cls.fixtures, seed=0, parquet=True)
        cls.hub_only = os.path.join(cls.root, "hub")  # the Hub layouts without the release files
        for folder in ("crows_pairs", *STEREOSET_KINDS, "type1_pro", "type1_anti", "type2_pro", "type2_anti"):
            shutil.copytree(os.path.join(cls.fixtures, folder), os.path.join(cls.hub_only, folder))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def fixture(self, name: str) -> str:
        return os.path.join(self.fixtures, name)

    def test_writes_every_file(self):
        relative = [os.path.relpath(path, self.fixtures) for path in self.paths]
        self.assertEqual(sorted(relative), sorted(
            ["crows_pairs_anonymized.csv", "dev.json", "crows_pairs/test-00000-of-00001.parquet",
             "intrasentence/validation-00000-of-00001.parquet", "intersentence/validation-00000-of-00001.parquet"]
            + [f"{s}_stereotyped_type{t}.txt.{split}" for t in (1, 2) for s in ("pro", "anti") for split in ("dev", "test")]
            + [f"type{t}_{s}/{split}-00000-of-00001.parquet" for t in (1, 2) for s in ("pro", "anti")
               for split in ("validation", "test")]))

    def test_crows_pairs_native_equals_parquet(self):
        native = read_crows_pairs(self.fixture("crows_pairs_anonymized.csv"))
        self.assertEqual(native, read_crows_pairs(self.fixture("crows_pairs/test-00000-of-00001.parquet")))
        self.assertEqual(native, find_crows_pairs(self.hub_only))
        self.assertLen(native, 36)
        self.assertEqual([pair["id"] for pair in native], list(range(36)))
        counts = {kind: sum(pair["bias_type"] == kind for pair in native) for kind in CROWS_BIAS_TYPES}
        self.assertGreaterEqual(min(counts.values()), 3, counts)
        self.assertEqual({pair["stereo_antistereo"] for pair in native}, {"stereo", "antistereo"})
        with open(self.fixture("crows_pairs_anonymized.csv"), encoding="utf-8") as f:
            header, first = f.readline(), f.readline()
        self.assertTrue(header.startswith(",sent_more,"), header)  # the release's unnamed index column
        self.assertIn("\"[['", first)  # repr lists, not JSON

    def test_stereoset_native_equals_parquet(self):
        native = read_stereoset(self.fixture("dev.json"))
        self.assertEqual(native, find_stereoset(self.hub_only))
        for kind in STEREOSET_KINDS:
            examples = native[kind]
            self.assertLen(examples, 8)
            self.assertEqual({e["bias_type"] for e in examples}, {"gender", "profession", "race", "religion"})
            targets = [e["target"] for e in examples]
            self.assertTrue(any(targets.count(target) >= 2 for target in targets))
        orders = {tuple(s["gold_label"] for s in e["sentences"]) for kind in STEREOSET_KINDS for e in native[kind]}
        self.assertGreater(len(orders), 1)  # shuffled, not one fixed order
        for example in native["intrasentence"]:
            before, after = example["context"].split("BLANK")
            for sentence in example["sentences"]:
                text = sentence["sentence"]
                self.assertTrue(text.startswith(before) and text.endswith(after), text)
                self.assertRegex(text[len(before):len(text) - len(after)], r"^\w+$")  # BLANK -> one word

    def test_winobias_native_equals_parquet(self):
        for split in ("dev", "test"):
            native = read_winobias(self.fixtures, split)
            self.assertEqual([winobias_key(r) for r in native], [winobias_key(r) for r in read_winobias(self.hub_only, split)])
            self.assertLen(native, 24)
            self.assertIn(None, [r["number"] for r in native])
            self.assertEqual({len(r["mentions"]) for r in native if r["type"] == 1}, {2, 3})
            for type_ in (1, 2):
                pro = [r for r in native if r["type"] == type_ and r["stereotype"] == "pro"]
                anti = [r for r in native if r["type"] == type_ and r["stereotype"] == "anti"]
                self.assertLen(pro, 6)
                for p, a in zip(pro, anti):  # paired: only the pronoun differs
                    changed = [(x, y) for x, y in zip(p["sentence"].split(), a["sentence"].split()) if x != y]
                    self.assertLen(changed, 1)
                    self.assertEqual(p["mentions"][:-1], a["mentions"][:-1])
                    self.assertEqual(p["number"], a["number"])

    def test_deterministic(self):
        again = self.new_dir()
        paths = write_bias_fixtures(again, seed=0, parquet=True)
        for first, second in zip(self.paths, paths):
            with open(first, "rb") as a, open(second, "rb") as b:
                self.assertEqual(a.read(), b.read(), first)
        other = self.new_dir()
        write_bias_fixtures(other, seed=1)
        with open(self.fixture("crows_pairs_anonymized.csv"), "rb") as a, open(os.path.join(other, "crows_pairs_anonymized.csv"), "rb") as b:
            self.assertNotEqual(a.read(), b.read())
        self.assertLen(read_crows_pairs(os.path.join(other, "crows_pairs_anonymized.csv")), 36)
        self.assertFalse(glob.glob(os.path.join(other, "*", "*.parquet")))  # parquet only when asked

    def test_cli(self):
        target = os.path.join(self.new_dir(), "new")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bias_data.main([target])
        printed = out.getvalue().splitlines()
        self.assertLen(printed, 10)
        self.assertEqual(printed[0], os.path.join(target, "crows_pairs_anonymized.csv"))
        self.assertTrue(all(os.path.isfile(path) for path in printed))

    def test_imports_only_stdlib(self):
        code = "import sys, bias_data; print(sorted(m for m in ('pyarrow', 'datasets', 'torch', 'numpy') if m in sys.modules))"
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip(), "[]")

    # --- load_hub: `datasets.load_dataset` replaced by the fixtures' Hub layouts ---------------------

    def fake_load_dataset(self, repo: str, config: str | None = None, split: str | None = None,
                          revision: str | None = None) -> list[dict[str, Any]]:
        expected = {"nyu-mll/crows_pairs": "refs/convert/parquet", "McGill-NLP/stereoset": None, "uclanlp/wino_bias": None}
        self.assertEqual(revision, expected[repo])
        folder = config or "crows_pairs"
        (path,) = glob.glob(os.path.join(self.hub_only, folder, f"{split}-*.parquet"))
        return pq.read_table(path).to_pylist()

    def test_load_hub_uses_the_same_converters(self):
        import datasets

        with mock.patch.object(datasets, "load_dataset", self.fake_load_dataset):
            self.assertEqual(load_hub("crows_pairs"), read_crows_pairs(self.fixture("crows_pairs_anonymized.csv")))
            self.assertEqual(load_hub("stereoset"), read_stereoset(self.fixture("dev.json")))
            self.assertEqual(load_hub("winobias", "dev"), read_winobias(self.hub_only, "dev"))
            self.assertEqual([winobias_key(r) for r in load_hub("winobias")],
                             [winobias_key(r) for r in read_winobias(self.fixtures, "test")])

    def test_load_hub_errors(self):
        import datasets

        def offline(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("Couldn't reach 'McGill-NLP/stereoset' on the Hub (LocalEntryNotFoundError)\nmore detail")

        with mock.patch.object(datasets, "load_dataset", offline):
            self.assertUserError(exact(
                "could not load the Hub copy of stereoset (McGill-NLP/stereoset intrasentence validation: Couldn't reach "
                "'McGill-NLP/stereoset' on the Hub (LocalEntryNotFoundError)); pass --dataset_dir with the release files"),
                load_hub, "stereoset")
        self.assertUserError(exact("unknown bias benchmark 'winogender'; valid: crows_pairs, stereoset, winobias"),
                             load_hub, "winogender")
        self.assertUserError(exact("stereoset: no Hub split 'test'; valid: dev"), load_hub, "stereoset", "test")


if __name__ == "__main__":
    absltest.main()
