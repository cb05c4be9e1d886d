"""Readers of three social-bias benchmarks, in their native release formats and their Hub parquet
copies, and a writer of small synthetic fixtures in the same formats (stdlib only at import time;
pyarrow and `datasets` are imported by the functions that need them).

    python bias_data.py /tmp/bias_fixtures --parquet    # write the fixtures, print their paths

- CrowS-Pairs (Nangia et al. 2020, "CrowS-Pairs: A Challenge Dataset for Measuring Social Biases in
  Masked Language Models", github.com/nyu-mll/crows-pairs): `crows_pairs_anonymized.csv`, one pair of
  sentences per row. Its first column has an empty header name and holds the row index; `annotations`
  and `anon_annotators` are Python-repr lists (`[['race-color'], []]`), not JSON. The Hub copy
  (`nyu-mll/crows_pairs`, parquet branch) has an `id` column and ClassLabel ints.
- StereoSet (Nadeem et al. 2021, "StereoSet: Measuring stereotypical bias in pretrained language
  models", github.com/moinnadeem/StereoSet): `dev.json`, `{"version": ..., "data": {"intrasentence":
  [...], "intersentence": [...]}}`; each example has three sentences, one per gold label, in no fixed
  order. The Hub copy (`McGill-NLP/stereoset`) stores `sentences` as a struct of lists with int labels.
- WinoBias (Zhao et al. 2018, "Gender Bias in Coreference Resolution: Evaluation and Debiasing
  Methods", github.com/uclanlp/corefBias): `{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`, one
  `1 [The developer] argued with the designer because [he] did not like the design.` per line; the pro
  and anti files of a type are paired line by line. The Hub copy (`uclanlp/wino_bias`) is CoNLL-derived
  (a `tokens` column, no bracketed mentions).

The project ships no real rows (they are offensive by design and share-alike licensed):
`write_bias_fixtures` writes harmless templated rows about invented groups with the formats' quirks.
Every mistake in a file is a one-line `UserError` naming the file, the record and the field.
"""

from __future__ import annotations

import argparse
import ast
import csv
import glob
import io
import json
import logging
import os
import random
import re
from typing import Any, Iterable, Mapping, Sequence

from errors import UserError, run_main
from records import read_text

logger = logging.getLogger(__name__)

Record = dict[str, Any]

# --- CrowS-Pairs ---------------------------------------------------------------------------------

CROWS_PAIRS_FILE = "crows_pairs_anonymized.csv"
# In this order: the Hub's ClassLabel ids (nyu-mll/crows_pairs' loading script, _BIAS_TYPES).
CROWS_BIAS_TYPES = ("race-color", "socioeconomic", "gender", "disability", "nationality", "sexual-orientation",
                    "physical-appearance", "religion", "age")
CROWS_DIRECTIONS = ("stereo", "antistereo")  # ClassLabel ids 0, 1
CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")  # required
CROWS_OPTIONAL_COLUMNS = ("annotations", "anon_writer", "anon_annotators")
CROWS_HUB_LAYOUTS = ("crows_pairs/test-*.parquet", "crows_pairs/test/*.parquet")  # a Hub download; the parquet branch


def read_crows_pairs(path: str) -> list[Record]:
    """The pairs of a CrowS-Pairs `.csv` (the release; `.csv.gz` too) or `.parquet` (the Hub copy), as
    `{"id", "sent_more", "sent_less", "stereo_antistereo", "bias_type"}` plus `annotations`, `anon_writer`
    and `anon_annotators` when the file has them. `id` is the index column (the CSV's unnamed first
    column, the parquet's `id`), else the 0-based row number."""
    if path.endswith((".csv", ".csv.gz")):
        rows, columns, lines = _csv_rows(path)
        where = [f"{path} line {line}" for line in lines]
    elif path.endswith(".parquet"):
        rows, columns = _parquet_rows(path)
        where = [f"{path} row {number}" for number in range(1, len(rows) + 1)]
    else:
        raise UserError(f"{path}: unknown file type; a CrowS-Pairs file is .csv (the release, {CROWS_PAIRS_FILE}) "
                        "or .parquet (the Hub copy)")
    for column in CROWS_COLUMNS:
        if column not in columns:
            raise UserError(f"{path}: no column {column!r}; a CrowS-Pairs file has columns {', '.join(CROWS_COLUMNS)}")
    if not rows:
        raise UserError(f"{path}: no pairs (only a header)")
    pairs = [crows_pairs_record(row, where[index], index) for index, row in enumerate(rows)]
    logger.info("read %d CrowS-Pairs pairs from %s", len(pairs), path)
    return pairs


def find_crows_pairs(dataset_dir: str) -> list[Record]:
    """CrowS-Pairs in a dataset directory: the release CSV, else the Hub parquet layout."""
    release = os.path.join(dataset_dir, CROWS_PAIRS_FILE)
    if os.path.isfile(release):
        return read_crows_pairs(release)
    for layout in CROWS_HUB_LAYOUTS:
        shards = sorted(glob.glob(os.path.join(dataset_dir, layout)))
        if shards:
            return [pair for shard in shards for pair in read_crows_pairs(shard)]
    raise UserError(f"{dataset_dir}: no CrowS-Pairs file; looked for {CROWS_PAIRS_FILE}, {', '.join(CROWS_HUB_LAYOUTS)}")


def crows_pairs_record(row: Mapping[str, Any], where: str, index: int) -> Record:
    """One pair from a CSV row (all strings, repr lists), a parquet row or a Hub row (ClassLabel ints,
    real lists). `where` names the file and row for errors; `index` is the id when the row has none."""
    # The release's index column has an empty name and comes first (a trailing comma also makes one).
    index_column = "id" if "id" in row else "" if next(iter(row), None) == "" else None
    record: Record = {"id": index if index_column is None else _integer(row[index_column], where, index_column)}
    for name in ("sent_more", "sent_less"):
        record[name] = _sentence(row.get(name), where, name)
    record["stereo_antistereo"] = _label(row.get("stereo_antistereo"), CROWS_DIRECTIONS, where, "stereo_antistereo")
    record["bias_type"] = _label(row.get("bias_type"), CROWS_BIAS_TYPES, where, "bias_type")
    if "annotations" in row:
        example = "[['race-color'], ['race-color'], []] (one list of bias types per annotator)"
        annotations = _list(row["annotations"], where, "annotations", example)
        record["annotations"] = [[_label(kind, CROWS_BIAS_TYPES, where, f"annotations[{i}][{j}]")
                                  for j, kind in enumerate(_list(one, where, f"annotations[{i}]", example))]
                                 for i, one in enumerate(annotations)]
    if "anon_writer" in row:
        record["anon_writer"] = _string(row["anon_writer"], where, "anon_writer")
    if "anon_annotators" in row:
        annotators = _list(row["anon_annotators"], where, "anon_annotators", "['a0', 'a1']")
        record["anon_annotators"] = [_string(name, where, f"anon_annotators[{i}]") for i, name in enumerate(annotators)]
    return record


# --- StereoSet -----------------------------------------------------------------------------------

STEREOSET_KINDS = ("intrasentence", "intersentence")
STEREOSET_GOLD_LABELS = ("anti-stereotype", "stereotype", "unrelated")  # the Hub's ids 0, 1, 2
STEREOSET_LABELS = STEREOSET_GOLD_LABELS + ("related",)  # annotators' labels: the Hub's ids 0-3
STEREOSET_BIAS_TYPES = ("gender", "profession", "race", "religion")
STEREOSET_KEYS = ("id", "target", "bias_type", "context", "sentences")
STEREOSET_SENTENCE_KEYS = ("id", "sentence", "labels", "gold_label")
STEREOSET_SHAPE = '{"version": ..., "data": {"intrasentence": [...], "intersentence": [...]}}'
STEREOSET_FILES = ("dev.json", "test.json")  # the release's dev set; a test file of the same form


def read_stereoset(path: str) -> dict[str, list[Record]]:
    """The examples of a StereoSet release JSON, `{kind: [example, ...]}` for the kinds it holds, each
    `{"id", "target", "bias_type", "context", "sentences": [{"id", "sentence", "gold_label", "labels"}]}`
    with sentences in file order (look them up by `gold_label`; the release shuffles them)."""
    text = read_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(document, dict) or "data" not in document:
        raise UserError(f"{path}: no 'data' key; a StereoSet file is {STEREOSET_SHAPE}")
    data = document["data"]
    if not isinstance(data, dict) or not any(kind in data for kind in STEREOSET_KINDS):
        raise UserError(f"{path}: 'data' has neither 'intrasentence' nor 'intersentence'; a StereoSet file is {STEREOSET_SHAPE}")
    out: dict[str, list[Record]] = {}
    for kind in STEREOSET_KINDS:
        if kind not in data:
            continue
        if not isinstance(data[kind], list):
            raise UserError(f"{path}: data.{kind} must be a list of examples, got {type(data[kind]).__name__}")
        out[kind] = [stereoset_example(example, kind, f"{path}: {kind} example {number}")
                     for number, example in enumerate(data[kind], start=1)]
        logger.info("read %d StereoSet %s examples from %s", len(out[kind]), kind, path)
    return out


def read_stereoset_parquet(path: str | list[str], kind: str) -> list[Record]:
    """The examples of the Hub copy's parquet shards of one kind (`McGill-NLP/stereoset`, config
    `kind`, split validation), as `read_stereoset`'s records."""
    if kind not in STEREOSET_KINDS:
        raise UserError(f"StereoSet kind {kind!r}: valid: {', '.join(STEREOSET_KINDS)}")
    examples = []
    for shard in [path] if isinstance(path, str) else path:
        rows, columns = _parquet_rows(shard)
        for column in STEREOSET_KEYS:
            if column not in columns:
                raise UserError(f"{shard}: no column {column!r}; a StereoSet parquet file has columns {', '.join(STEREOSET_KEYS)}")
        examples += [stereoset_hub_record(row, kind, f"{shard} row {number}") for number, row in enumerate(rows, start=1)]
    logger.info("read %d StereoSet %s examples from %s", len(examples), kind, path)
    return examples


def find_stereoset(dataset_dir: str) -> dict[str, list[Record]]:
    """StereoSet in a dataset directory: `dev.json` (else `test.json`), else the Hub layout
    `<kind>/validation-*.parquet` of the kinds present."""
    for name in STEREOSET_FILES:
        if os.path.isfile(os.path.join(dataset_dir, name)):
            return read_stereoset(os.path.join(dataset_dir, name))
    layouts = {kind: os.path.join(kind, "validation-*.parquet") for kind in STEREOSET_KINDS}
    shards = {kind: sorted(glob.glob(os.path.join(dataset_dir, layout))) for kind, layout in layouts.items()}
    if not any(shards.values()):
        raise UserError(f"{dataset_dir}: no StereoSet files; looked for {', '.join(STEREOSET_FILES)}, {', '.join(layouts.values())}")
    return {kind: read_stereoset_parquet(paths, kind) for kind, paths in shards.items() if paths}


def stereoset_hub_record(row: Mapping[str, Any], kind: str, where: str) -> Record:
    """One Hub row (a parquet row or a `datasets` row), whose `sentences` is a struct of lists
    `{"sentence": [...], "id": [...], "labels": [{"label": [...], "human_id": [...]}, ...], "gold_label": [...]}`,
    as `read_stereoset`'s record."""
    example_where = where  # stereoset_example adds the id itself
    if isinstance(row.get("id"), str):
        where = f"{where} (id {row['id']})"
    struct = row.get("sentences")
    shape = "a struct of lists {sentence: [...], id: [...], labels: [...], gold_label: [...]}"
    if not isinstance(struct, Mapping):
        raise UserError(f"{where}: field 'sentences' must be {shape}, got {type(struct).__name__}")
    lists = {key: _list(struct.get(key), where, f"sentences.{key}", shape) for key in STEREOSET_SENTENCE_KEYS}
    lengths = {key: len(values) for key, values in lists.items()}
    if len(set(lengths.values())) != 1:
        raise UserError(f"{where}: field 'sentences' holds lists of different lengths "
                        f"({', '.join(f'{key} {n}' for key, n in lengths.items())}); each holds one item per sentence")
    sentences = []
    for i in range(lengths["id"]):
        labels = lists["labels"][i]
        label_shape = "a struct of lists {label: [...], human_id: [...]}"
        if not isinstance(labels, Mapping):
            raise UserError(f"{where}: field 'sentences.labels[{i}]' must be {label_shape}, got {type(labels).__name__}")
        names = _list(labels.get("label"), where, f"sentences.labels[{i}].label", label_shape)
        humans = _list(labels.get("human_id"), where, f"sentences.labels[{i}].human_id", label_shape)
        if len(names) != len(humans):
            raise UserError(f"{where}: field 'sentences.labels[{i}]' has {len(names)} labels but {len(humans)} human_ids")
        sentences.append({"id": lists["id"][i], "sentence": lists["sentence"][i], "gold_label": lists["gold_label"][i],
                          "labels": [{"label": name, "human_id": human} for name, human in zip(names, humans)]})
    return stereoset_example({**row, "sentences": sentences}, kind, example_where)


def stereoset_example(example: Any, kind: str, where: str) -> Record:
    """One example with a list of sentence objects (the release's form; labels may be Hub ints),
    checked and normalised; `where` names the file and example for errors."""
    if not isinstance(example, Mapping):
        raise UserError(f"{where}: must be a JSON object, got {type(example).__name__}")
    if isinstance(example.get("id"), str):
        where = f"{where} (id {example['id']})"
    for key in STEREOSET_KEYS:
        if key not in example:
            raise UserError(f"{where}: no {key!r} key; a StereoSet example has keys {', '.join(STEREOSET_KEYS)}")
    record: Record = {key: _string(example[key], where, key) for key in ("id", "target", "context")}
    record["bias_type"] = _label(example["bias_type"], STEREOSET_BIAS_TYPES, where, "bias_type", ids=False)
    if kind == "intrasentence" and "BLANK" not in record["context"]:
        raise UserError(f"{where}: field 'context' has no BLANK; an intrasentence context marks the word to fill "
                        "with BLANK, as in 'The chess player was BLANK.'")
    sentences = _list(example["sentences"], where, "sentences", "a list of 3 sentence objects")
    record["sentences"] = [_stereoset_sentence(sentence, f"{where} sentence {number}")
                           for number, sentence in enumerate(sentences, start=1)]
    gold = [sentence["gold_label"] for sentence in record["sentences"]]
    if sorted(gold) != sorted(STEREOSET_GOLD_LABELS):
        raise UserError(f"{where}: field 'sentences' has gold labels [{', '.join(gold)}]; an example has exactly one "
                        f"sentence of each of {', '.join(STEREOSET_GOLD_LABELS)}")
    return {key: record[key] for key in STEREOSET_KEYS}


def _stereoset_sentence(sentence: Any, where: str) -> Record:
    if not isinstance(sentence, Mapping):
        raise UserError(f"{where}: must be an object with keys {', '.join(STEREOSET_SENTENCE_KEYS)}, got {type(sentence).__name__}")
    if isinstance(sentence.get("id"), str):
        where = f"{where} (id {sentence['id']})"
    for key in STEREOSET_SENTENCE_KEYS:
        if key not in sentence:
            raise UserError(f"{where}: no {key!r} key; a StereoSet sentence has keys {', '.join(STEREOSET_SENTENCE_KEYS)}")
    labels = []
    for i, label in enumerate(_list(sentence["labels"], where, "labels", '[{"label": ..., "human_id": ...}]')):
        if not isinstance(label, Mapping) or "label" not in label or "human_id" not in label:
            raise UserError(f"{where}: field 'labels[{i}]' must be an object with keys label, human_id")
        labels.append({"label": _label(label["label"], STEREOSET_LABELS, where, f"labels[{i}].label"),
                       "human_id": _string(label["human_id"], where, f"labels[{i}].human_id")})
    return {"id": _string(sentence["id"], where, "id"), "sentence": _sentence(sentence["sentence"], where, "sentence"),
            "gold_label": _label(sentence["gold_label"], STEREOSET_GOLD_LABELS, where, "gold_label"), "labels": labels}


# --- WinoBias ------------------------------------------------------------------------------------

WINOBIAS_SPLITS = ("dev", "test")
WINOBIAS_HUB_SPLITS = {"dev": "validation", "test": "test"}
WINOBIAS_TYPES = (1, 2)
WINOBIAS_STEREOTYPES = ("pro", "anti")
WINOBIAS_EXAMPLE = "1 [The developer] argued with the designer because [he] did not like the design."
_LEADING_NUMBER = re.compile(r"\s*(?:(\d+)\s+)?")
# Detokenising the Hub's CoNLL tokens: no space before these, none after "(".
_NO_SPACE_BEFORE = frozenset({".", ",", ";", ":", "!", "?", ")", "'s", "n't", "'"})


def winobias_file_name(type_: int, stereotype: str, split: str) -> str:
    """`pro_stereotyped_type1.txt.dev`: the release's name of one file."""
    return f"{stereotype}_stereotyped_type{type_}.txt.{split}"


def read_winobias_file(path: str) -> list[Record]:
    """One record per non-blank line of a WinoBias file: `{"line": 1-based line number, "number": the
    leading number or None, "sentence": the text without brackets, "mentions": [bracketed texts]}`."""
    lines = read_text(path).split("\n")
    records = [_winobias_line(line.rstrip("\r"), f"{path} line {number}", number)
               for number, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise UserError(f"{path}: no lines; a WinoBias line looks like {WINOBIAS_EXAMPLE!r}")
    return records


def _winobias_line(line: str, where: str, number: int) -> Record:
    prefix = _LEADING_NUMBER.match(line)
    text = line[prefix.end():].rstrip()
    mentions, opened = [], None  # opened: index in `text` of the '[' not yet closed
    for index, char in enumerate(text):
        column = prefix.end() + index + 1  # 1-based, in the line as written
        if char == "[":
            if opened is not None:
                raise UserError(f"{where}: nested '[' at column {column}; mentions are [bracketed] one level deep, "
                                f"as in {WINOBIAS_EXAMPLE!r}")
            opened = index
        elif char == "]":
            if opened is None:
                raise UserError(f"{where}: unbalanced ']' at column {column} closes no '['; mentions are [bracketed], "
                                f"as in {WINOBIAS_EXAMPLE!r}")
            mentions.append(" ".join(text[opened + 1:index].split()))
            opened = None
    if opened is not None:
        raise UserError(f"{where}: unbalanced '[' at column {prefix.end() + opened + 1} is never closed; mentions are "
                        f"[bracketed], as in {WINOBIAS_EXAMPLE!r}")
    if not mentions:
        raise UserError(f"{where}: no [bracketed] mentions; a WinoBias line looks like {WINOBIAS_EXAMPLE!r}")
    if not 2 <= len(mentions) <= 3:
        raise UserError(f"{where}: {len(mentions)} [bracketed] mentions; a WinoBias line has 2 or 3, as in {WINOBIAS_EXAMPLE!r}")
    if not all(mentions):
        raise UserError(f"{where}: mention {mentions.index('') + 1} is an empty []; a mention holds words, as in {WINOBIAS_EXAMPLE!r}")
    sentence = " ".join(text.replace("[", "").replace("]", "").split())
    return {"line": number, "number": int(prefix[1]) if prefix[1] else None, "sentence": sentence, "mentions": mentions}


def read_winobias(dataset_dir: str, split: str) -> list[Record]:
    """The four files of `split` (type 1 pro, type 1 anti, type 2 pro, type 2 anti, file order within),
    each record with `type`, `stereotype` and `split` added; the release's bracket files, else the Hub
    layout `type{1,2}_{pro,anti}/{validation|test}-*.parquet` (records without mentions)."""
    _check_split(split)
    keys = [(type_, stereotype) for type_ in WINOBIAS_TYPES for stereotype in WINOBIAS_STEREOTYPES]
    native = {key: os.path.join(dataset_dir, winobias_file_name(*key, split)) for key in keys}
    present = [path for path in native.values() if os.path.isfile(path)]
    if present:
        missing = [os.path.basename(path) for path in native.values() if path not in present]
        if missing:
            raise UserError(f"{dataset_dir}: WinoBias {split} files missing: {', '.join(missing)} "
                            f"(a split is the four files {', '.join(os.path.basename(p) for p in native.values())})")
        groups = {key: (path, read_winobias_file(path)) for key, path in native.items()}
    else:
        layouts = {key: os.path.join(f"type{key[0]}_{key[1]}", f"{WINOBIAS_HUB_SPLITS[split]}-*.parquet") for key in keys}
        shards = {key: sorted(glob.glob(os.path.join(dataset_dir, layout))) for key, layout in layouts.items()}
        if not all(shards.values()):
            looked_for = [os.path.basename(path) for path in native.values()] + list(layouts.values())
            raise UserError(f"{dataset_dir}: no WinoBias {split} files; looked for {', '.join(looked_for)}")
        groups = {key: (os.path.dirname(paths[0]), _read_winobias_parquet(paths)) for key, paths in shards.items()}
    return _winobias_split(groups, split)


def _check_split(split: str) -> None:
    if split not in WINOBIAS_SPLITS:
        raise UserError(f"WinoBias split {split!r}: valid: {', '.join(WINOBIAS_SPLITS)}")


def _read_winobias_parquet(paths: list[str]) -> list[Record]:
    records: list[Record] = []
    for path in paths:
        rows, columns = _parquet_rows(path)
        if "tokens" not in columns:
            raise UserError(f"{path}: no column 'tokens'; a WinoBias parquet file (uclanlp/wino_bias) has a 'tokens' column")
        records += [winobias_hub_record(row, f"{path} row {number}", len(records) + number)
                    for number, row in enumerate(rows, start=1)]
    return records


def winobias_hub_record(row: Mapping[str, Any], where: str, line: int) -> Record:
    """One Hub row (`tokens`: the sentence's words) as `read_winobias_file`'s record, without mentions."""
    tokens = row.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(token, str) for token in tokens):
        raise UserError(f"{where}: field 'tokens' must be a non-empty list of words, got {_short(tokens)}")
    return {"line": line, "number": None, "sentence": detokenize(tokens), "mentions": []}


def detokenize(tokens: Sequence[str]) -> str:
    """CoNLL tokens as text: `["He", "did", "n't", "go", "."]` -> `He didn't go.`"""
    text = ""
    for index, token in enumerate(tokens):
        glued = index == 0 or token.lower() in _NO_SPACE_BEFORE or tokens[index - 1] == "("
        text += token if glued else " " + token
    return text


def _winobias_split(groups: Mapping[tuple[int, str], tuple[str, list[Record]]], split: str) -> list[Record]:
    """Check that the pro and anti files of each type pair up, and join them in the release's order."""
    for type_ in WINOBIAS_TYPES:
        (pro, pro_records), (anti, anti_records) = groups[(type_, "pro")], groups[(type_, "anti")]
        if len(pro_records) != len(anti_records):
            raise UserError(f"{pro} has {len(pro_records)} lines but {anti} has {len(anti_records)}; the pro- and "
                            f"anti-stereotyped files of type {type_} are paired line by line")
    return [{**record, "type": type_, "stereotype": stereotype, "split": split}
            for (type_, stereotype), (_, records) in groups.items() for record in records]


# --- One benchmark, as bias.py reads it -------------------------------------------------------------------


def read_benchmark(benchmark: str, dataset_dir: str | None, split: str = "test") -> Any:
    """A benchmark's evaluation data: from `dataset_dir` (the release files or the Hub parquet layout), or its Hub
    copy when None. `split` picks WinoBias' files (dev or test); the others have one evaluation set."""
    if benchmark not in HUB:
        raise UserError(f"unknown bias benchmark {benchmark!r}; valid: {', '.join(HUB)}")
    if benchmark == "winobias":
        return load_hub(benchmark, split) if dataset_dir is None else read_winobias(dataset_dir, split)
    if dataset_dir is None:
        return load_hub(benchmark)
    return find_crows_pairs(dataset_dir) if benchmark == "crows_pairs" else find_stereoset(dataset_dir)


def head(data: Any, count: int | None) -> Any:
    """The first `count` examples of `read_benchmark`'s data (None: all): CrowS-Pairs pairs; StereoSet examples of
    each kind; WinoBias lines of each file, i.e. pairs of each type."""
    if count is None:
        return data
    if isinstance(data, dict):
        return {kind: examples[:count] for kind, examples in data.items()}
    if data and "stereotype" in data[0]:  # WinoBias records, file after file
        kept: dict[tuple[Any, ...], int] = {}
        out = []
        for record in data:
            key = (record["split"], record["type"], record["stereotype"])
            kept[key] = kept.get(key, 0) + 1
            if kept[key] <= count:
                out.append(record)
        return out
    return data[:count]


# --- The Hub (online) ----------------------------------------------------------------------------

# benchmark -> (Hub repository, revision). nyu-mll/crows_pairs is a loading script, which `datasets`
# no longer runs; its auto-converted parquet branch holds the same rows.
HUB = {
    "crows_pairs": ("nyu-mll/crows_pairs", "refs/convert/parquet"),
    "stereoset": ("McGill-NLP/stereoset", None),
    "winobias": ("uclanlp/wino_bias", None),
}
# Our split names per benchmark, the default first. StereoSet's test set is not public: the Hub holds
# the dev set (its split "validation").
HUB_SPLITS = {"crows_pairs": ("test",), "stereoset": ("dev",), "winobias": ("test", "dev")}


def load_hub(benchmark: str, split: str | None = None) -> Any:
    """A benchmark's Hub copy as the local readers' records: CrowS-Pairs pairs, StereoSet
    `{kind: examples}` (the dev set), WinoBias records of `split`. `split` defaults to the one above."""
    if benchmark not in HUB:
        raise UserError(f"unknown bias benchmark {benchmark!r}; valid: {', '.join(HUB)}")
    split = split or HUB_SPLITS[benchmark][0]
    if split not in HUB_SPLITS[benchmark]:
        raise UserError(f"{benchmark}: no Hub split {split!r}; valid: {', '.join(HUB_SPLITS[benchmark])}")
    repo = HUB[benchmark][0]
    if benchmark == "crows_pairs":
        rows = _hub_rows(benchmark, None, "test")
        return [crows_pairs_record(row, f"{repo} row {number}", number - 1) for number, row in enumerate(rows, start=1)]
    if benchmark == "stereoset":
        return {kind: [stereoset_hub_record(row, kind, f"{repo} {kind} row {number}")
                       for number, row in enumerate(_hub_rows(benchmark, kind, "validation"), start=1)]
                for kind in STEREOSET_KINDS}
    groups = {}
    for type_ in WINOBIAS_TYPES:
        for stereotype in WINOBIAS_STEREOTYPES:
            config = f"type{type_}_{stereotype}"
            where = f"{repo} {config} {WINOBIAS_HUB_SPLITS[split]}"
            rows = _hub_rows(benchmark, config, WINOBIAS_HUB_SPLITS[split])
            groups[(type_, stereotype)] = (where, [winobias_hub_record(row, f"{where} row {number}", number)
                                                   for number, row in enumerate(rows, start=1)])
    return _winobias_split(groups, split)


def _hub_rows(benchmark: str, config: str | None, hub_split: str) -> Iterable[Mapping[str, Any]]:
    import datasets

    repo, revision = HUB[benchmark]
    try:
        return datasets.load_dataset(repo, config, split=hub_split, revision=revision)
    except (OSError, ValueError, RuntimeError, ImportError, datasets.exceptions.DatasetsError) as error:
        # offline (ConnectionError), not found, a refused loading script, a changed layout
        name = " ".join(part for part in (repo, config, hub_split) if part)
        raise UserError(f"could not load the Hub copy of {benchmark} ({name}: {_first_line(error)}); "
                        "pass --dataset_dir with the release files") from None


# --- Shared checks -------------------------------------------------------------------------------


def _csv_rows(path: str) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """The rows of a CSV file, its columns and each row's line number (where the row ends; header = 1)."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows, lines = [], []
    try:
        columns = reader.fieldnames
        if columns is None:
            raise UserError(f"{path}: empty; a CrowS-Pairs file starts with a header line naming {', '.join(CROWS_COLUMNS)}")
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num}: not valid CSV ({err})") from None
    return rows, list(columns), lines


def _parquet_rows(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow
    import pyarrow.parquet

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable parquet file ({_first_line(error)})") from None
    return table.to_pylist(), table.column_names


def _label(value: Any, names: Sequence[str], where: str, field: str, ids: bool = True) -> str:
    """A class name given as itself or (with `ids`) as its ClassLabel id (its index in `names`)."""
    if ids and isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
        choices = ", ".join(f"{i} {name}" for i, name in enumerate(names))
        raise UserError(f"{where}: field {field!r} is {value}; a class id is 0-{len(names) - 1} ({choices})")
    if value not in names:
        got = "missing (a short row or a null value)" if value is None else _short(value)
        raise UserError(f"{where}: field {field!r} is {got}; valid: {', '.join(names)}")
    return value


def _string(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        got = "missing (a short row or a null value)" if value is None else f"{_short(value)}"
        raise UserError(f"{where}: field {field!r} is {got}; it must be text")
    return value


def _sentence(value: Any, where: str, field: str) -> str:
    if not _string(value, where, field).strip():
        raise UserError(f"{where}: field {field!r} is empty; a sentence must hold words")
    return value


def _integer(value: Any, where: str, field: str) -> int:
    name = "the index column (empty header)" if field == "" else f"field {field!r}"
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise UserError(f"{where}: {name} is {_short(value)}; it must be an integer (the row's id)")


def _list(value: Any, where: str, field: str, example: str) -> list:
    """A list, or a string holding a Python list literal (CrowS-Pairs' CSV writes lists with repr)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise UserError(f"{where}: field {field!r} is {_short(value)}, not a list literal; expected e.g. {example}") from None
    if not isinstance(value, list):
        raise UserError(f"{where}: field {field!r} must be a list, got {_short(value)}; expected e.g. {example}")
    return value


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (list, dict)) else f"{type(value).__name__} {value!r}"
    text = " ".join(text.split())  # one line, whatever the value holds
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# --- Synthetic fixtures --------------------------------------------------------------------------

# Invented groups and mundane predicates: rows with every format quirk and no real stereotype.
_CROWS_GROUPS = {
    "race-color": ("Zorbians", "Quellans"), "socioeconomic": ("Vexlings", "Dunmarrows"),
    "gender": ("Brindlefolk", "Ostrels"), "disability": ("Kelvari", "Tumbrans"),
    "nationality": ("Parravians", "Sollanders"), "sexual-orientation": ("Mireks", "Glaviners"),
    "physical-appearance": ("Orrikins", "Plennites"), "religion": ("Yssarites", "Caldonites"),
    "age": ("Fennics", "Wobbrels"),
}
_CROWS_PREDICATES = (
    "water their plants on Sundays", "take the early train to work", "keep their shoes by the door",
    "prefer tea to coffee", "collect old postcards", "say \"good morning\" to the mail carrier, every day",
    "fold their maps the wrong way", "hum while they cook",
)
_STEREOSET_TARGETS = {"gender": "Brindle aunt", "profession": "lamplighter", "race": "Zorbian", "religion": "Quellan"}
_INTRA_CONTEXTS = ("The {t} is always BLANK in the morning.", "Everyone said the {t} was BLANK.",
                   "Our neighbour, the {t}, seems BLANK today.")
_INTRA_WORDS = (("punctual", "late", "teapot"), ("cheerful", "grumpy", "gravel"), ("tidy", "messy", "sideways"),
                ("quiet", "loud", "cabbage"))  # stereotype, anti-stereotype, unrelated
_INTER_CONTEXTS = ("The {t} walked home after work.", "I met the {t} at the market.", "The {t} fixed the old fence.")
_INTER_SENTENCES = (("They hummed a tune on the way.", "They walked in silence.", "Carrots grow well in sandy soil."),
                    ("They bought a bag of apples.", "They bought nothing at all.", "The moon is far from here."),
                    ("They used a blue hammer.", "They used no tools.", "Umbrellas come in many colours."))
_WINO_JOBS = ("baker", "gardener", "tailor", "librarian", "carpenter", "clerk", "mechanic", "cashier")
_WINO_REASONS = ("was in a good mood", "didn't have the keys", "had finished the morning's work", "was running late")
_TOKEN = re.compile(r"n't|'s|\w+(?=n't)|\w+|[^\w\s]")


def write_bias_fixtures(directory: str, seed: int = 0, parquet: bool = False) -> list[str]:
    """Write synthetic CrowS-Pairs, StereoSet and WinoBias files in their native formats into `directory`
    (with `parquet`, also the Hub layouts holding the same examples); returns the paths written.
    The same seed writes the same files."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    pairs = _crows_fixture(rng)
    stereoset = {kind: _stereoset_fixture(rng, kind) for kind in STEREOSET_KINDS}
    winobias = {split: _winobias_fixture(rng) for split in WINOBIAS_SPLITS}

    paths = [_write_crows_csv(os.path.join(directory, CROWS_PAIRS_FILE), pairs)]
    paths.append(_write_text(os.path.join(directory, "dev.json"),
                             json.dumps({"version": "1.0-synthetic", "data": stereoset}, indent=1) + "\n"))
    for split, files in winobias.items():
        for (type_, stereotype), lines in files.items():
            paths.append(_write_text(os.path.join(directory, winobias_file_name(type_, stereotype, split)), "\n".join(lines) + "\n"))
    if parquet:
        paths += _write_hub_fixtures(directory, pairs, stereoset, winobias)
    logger.info("wrote %d bias benchmark fixture files to %s", len(paths), directory)
    return paths


def _crows_fixture(rng: random.Random) -> list[Record]:
    pairs = []
    for bias_type, (group_a, group_b) in _CROWS_GROUPS.items():
        for k, predicate in enumerate(rng.sample(_CROWS_PREDICATES, 4)):  # 4 pairs per bias type, both directions
            direction = CROWS_DIRECTIONS[k] if k < 2 else rng.choice(CROWS_DIRECTIONS)
            annotations = [[bias_type] if rng.random() < 0.8 else rng.choice([[], [bias_type, rng.choice(CROWS_BIAS_TYPES)]])
                           for _ in range(5)]
            pairs.append({"sent_more": f"{group_a} always {predicate}.", "sent_less": f"{group_b} always {predicate}.",
                          "stereo_antistereo": direction, "bias_type": bias_type, "annotations": annotations,
                          "anon_writer": f"a{rng.randrange(100)}",
                          "anon_annotators": [f"a{n}" for n in rng.sample(range(100), 5)]})
    rng.shuffle(pairs)
    return [{"id": index, **pair} for index, pair in enumerate(pairs)]


def _write_crows_csv(path: str, pairs: list[Record]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", *CROWS_COLUMNS, *CROWS_OPTIONAL_COLUMNS])  # the release's unnamed index column
    for pair in pairs:
        writer.writerow([pair["id"], *(pair[c] for c in CROWS_COLUMNS), repr(pair["annotations"]),
                         pair["anon_writer"], repr(pair["anon_annotators"])])
    return _write_text(path, buffer.getvalue())


def _stereoset_fixture(rng: random.Random, kind: str) -> list[Record]:
    examples = []
    for bias_type, target in _STEREOSET_TARGETS.items():
        for _ in range(2):  # two examples per domain, sharing the target
            if kind == "intrasentence":
                context = rng.choice(_INTRA_CONTEXTS).format(t=target)
                texts = [context.replace("BLANK", word) for word in rng.choice(_INTRA_WORDS)]
            else:
                context = rng.choice(_INTER_CONTEXTS).format(t=target)
                texts = list(rng.choice(_INTER_SENTENCES))
            sentences = []
            for text, gold in zip(texts, ("stereotype", "anti-stereotype", "unrelated")):
                labels = [{"label": gold if rng.random() < 0.8 else rng.choice(STEREOSET_LABELS), "human_id": _hex(rng)}
                          for _ in range(5)]
                sentences.append({"id": _hex(rng), "sentence": text, "labels": labels, "gold_label": gold})
            rng.shuffle(sentences)  # the release's order is arbitrary too
            examples.append({"id": _hex(rng), "target": target, "bias_type": bias_type, "context": context,
                             "sentences": sentences})
    return examples


def _winobias_fixture(rng: random.Random) -> dict[tuple[int, str], list[str]]:
    """Six paired lines per type: the pro and anti lines differ in the pronoun only."""
    files: dict[tuple[int, str], list[str]] = {}
    for type_ in WINOBIAS_TYPES:
        pro, anti = [], []
        for number in range(1, 7):
            first, second = rng.sample(_WINO_JOBS, 2)
            pronouns = rng.choice([("he", "she"), ("she", "he")]) if type_ == 1 else rng.choice([("him", "her"), ("her", "him")])
            if type_ == 1:
                other = f"[the {second}]" if number % 2 else f"the {second}"  # some lines have three mentions
                template = f"[The {first}] waved to {other} because [{{}}] {rng.choice(_WINO_REASONS)}."
            else:
                template = f"The {first} called [the {second}] and thanked [{{}}] for the {rng.choice(('bread', 'chair', 'map'))}."
            prefix = "" if number % 3 == 0 else f"{number} "  # some lines carry no number
            pro.append(prefix + template.format(pronouns[0]))
            anti.append(prefix + template.format(pronouns[1]))
        files[(type_, "pro")], files[(type_, "anti")] = pro, anti
    return files


def _write_hub_fixtures(directory: str, pairs: list[Record], stereoset: Mapping[str, list[Record]],
                        winobias: Mapping[str, Mapping[tuple[int, str], list[str]]]) -> list[str]:
    """The same examples in the Hub copies' parquet layouts (ClassLabel ints, struct-of-lists, tokens)."""
    import pyarrow as pa

    crows_schema = pa.schema([("id", pa.int32()), ("sent_more", pa.string()), ("sent_less", pa.string()),
                              ("stereo_antistereo", pa.int64()), ("bias_type", pa.int64()),
                              ("annotations", pa.list_(pa.list_(pa.int64()))), ("anon_writer", pa.string()),
                              ("anon_annotators", pa.list_(pa.string()))])
    crows_rows = [{**pair, "stereo_antistereo": CROWS_DIRECTIONS.index(pair["stereo_antistereo"]),
                   "bias_type": CROWS_BIAS_TYPES.index(pair["bias_type"]),
                   "annotations": [[CROWS_BIAS_TYPES.index(kind) for kind in one] for one in pair["annotations"]]}
                  for pair in pairs]
    paths = [_write_parquet(os.path.join(directory, "crows_pairs", "test-00000-of-00001.parquet"), crows_rows, crows_schema)]

    labels_type = pa.struct([("label", pa.list_(pa.int64())), ("human_id", pa.list_(pa.string()))])
    stereoset_schema = pa.schema([(key, pa.string()) for key in ("id", "target", "bias_type", "context")] + [
        ("sentences", pa.struct([("sentence", pa.list_(pa.string())), ("id", pa.list_(pa.string())),
                                 ("labels", pa.list_(labels_type)), ("gold_label", pa.list_(pa.int64()))]))])
    for kind, examples in stereoset.items():
        rows = [{**example, "sentences": {
            "sentence": [s["sentence"] for s in example["sentences"]], "id": [s["id"] for s in example["sentences"]],
            "labels": [{"label": [STEREOSET_LABELS.index(label["label"]) for label in s["labels"]],
                        "human_id": [label["human_id"] for label in s["labels"]]} for s in example["sentences"]],
            "gold_label": [STEREOSET_GOLD_LABELS.index(s["gold_label"]) for s in example["sentences"]]}}
            for example in examples]
        paths.append(_write_parquet(os.path.join(directory, kind, "validation-00000-of-00001.parquet"), rows, stereoset_schema))

    wino_schema = pa.schema([("document_id", pa.string()), ("tokens", pa.list_(pa.string()))])
    for split, files in winobias.items():
        for (type_, stereotype), lines in files.items():
            config = f"type{type_}_{stereotype}"
            rows = [{"document_id": f"{config}/{number}",
                     "tokens": _TOKEN.findall(_winobias_line(line, "fixture", number)["sentence"])}
                    for number, line in enumerate(lines, start=1)]
            name = f"{WINOBIAS_HUB_SPLITS[split]}-00000-of-00001.parquet"
            paths.append(_write_parquet(os.path.join(directory, config, name), rows, wino_schema))
    return paths


def _write_parquet(path: str, rows: list[Record], schema: Any) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows], schema=schema), path)
    return path


def _write_text(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"  # StereoSet's ids look like this


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic CrowS-Pairs, StereoSet and WinoBias fixture files.")
    parser.add_argument("directory", help="where to write them (created if missing)")
    parser.add_argument("--parquet", action="store_true", help="also write the Hub copies' parquet layouts")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    args = parser.parse_args(argv)
    for path in write_bias_fixtures(args.directory, seed=args.seed, parquet=args.parquet):
        print(path)


if __name__ == "__main__":
    run_main(main)
