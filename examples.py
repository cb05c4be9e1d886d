"""Example data generated offline: the toy sentiment task of the registry (fine_tune_t5.py's demo) and
clf.py's shipped yes/no example (is a sentence about sport?).

    python -c "import examples; examples.write_toy_benchmark('data/toy')"   # GLUE's TSV layout
    python -c "import examples; examples.write_clf_example()"   # mount/data/clf_example.json
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from constants import DATASET_VALS
from outputs import write_text_atomic
from records import Record

logger = logging.getLogger(__name__)


# --- the toy benchmark (registry entry toy/sentiment) ---------------------------------------------------------------------------


def generate_toy_splits(
    generator: Mapping[str, Any], seed: int = 0, sizes: Mapping[str, int] | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Deterministic templated sentiment examples: split -> [(sentence, label id)].

    Labels are balanced within each split (n // 2 of each, one more of label 0 for odd n) and no
    sentence occurs twice across the splits, so validation and test measure generalisation.
    """
    rng = random.Random(seed)
    sizes = sizes or generator["sizes"]
    seen: set[str] = set()
    splits = {}
    for split, n in sizes.items():
        labels = [i % 2 for i in range(n)]
        rng.shuffle(labels)
        examples = []
        for label in labels:
            for _ in range(1000):  # redraw duplicates; the template space is far larger than any split
                words = generator["words"][label]
                sentence = rng.choice(generator["templates"]).format(
                    subject=rng.choice(generator["subjects"]),
                    subject2=rng.choice(generator["subjects"]),
                    word=rng.choice(words),
                    word2=rng.choice(words),
                    intensifier=rng.choice(generator["intensifiers"]),
                    opener=rng.choice(generator["openers"]),
                )
                if sentence not in seen:
                    break
            else:
                raise ValueError(f"the toy generator ran out of distinct sentences at {len(seen)}")
            seen.add(sentence)
            examples.append((sentence, label))
        splits[split] = examples
    return splits


def write_toy_benchmark(
    directory: str | Path,
    n_train: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["train"],
    n_validation: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["validation"],
    n_test: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["test"],
    seed: int = 0,
) -> Path:
    """Write the toy sentiment task in GLUE's original layout (SST-2's columns); returns its folder.

    `DIRECTORY/<tsv_dir>/train.tsv` and `dev.tsv` hold "sentence\\tlabel", `test.tsv` "index\\tsentence",
    so `load_task_splits(entry, dataset_dir=DIRECTORY)` reads it like any GLUE task.
    """
    entry = DATASET_VALS["toy"]["sentiment"]
    folder = Path(directory) / entry["tsv_dir"]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for split, examples in generate_toy_splits(entry["generator"], seed, sizes).items():
        if split == "test":
            lines = ["index\tsentence"] + [f"{i}\t{s}" for i, (s, _) in enumerate(examples)]
        else:
            lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in examples]
        (folder / entry["tsv_files"][split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote the toy benchmark (%s) to %s", sizes, folder)
    return folder


# --- clf.py's example -------------------------------------------------------------------------------

# Soft targets as a larger model might give them: 0.9 when both the subject and the event are about
# sport, 0.5 when one is, 0.1 when neither is, plus noise.
EXAMPLE_SUBJECTS = (
    ["The striker", "The goalkeeper", "The coach", "The home team", "The marathon runner", "The tennis champion",
     "The cycling squad", "The captain"],
    ["The city council", "The bakery", "The museum", "The startup", "The orchestra", "The hospital", "The school board",
     "The bookshop"],
)  # sport: index 0
EXAMPLE_EVENTS = (
    ["scored twice in the final", "won the championship", "broke the course record", "was injured before the match",
     "lost the semi-final on penalties", "trained through the night before the race"],
    ["opened a new branch downtown", "announced higher prices", "hired a new director", "published its annual report",
     "was praised by critics", "delayed the renovation"],
)
EXAMPLE_OPENERS = ["", "Reports say that ", "On Monday, ", "According to local news, ", "Surprisingly, "]
EXAMPLE_ENDINGS = ["last week", "yesterday", "after months of talks", "despite the rain", "this morning"]
EXAMPLE_SIZES = {"train": 200, "eval": 50}


def clf_example_data(seed: int = 0, sizes: dict[str, int] = EXAMPLE_SIZES, noise: float = 0.04) -> dict[str, list[Record]]:
    """Deterministic soft-labeled sentences (no sentence twice across the splits); records carry an `id`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    data: dict[str, list[Record]] = {}
    for split, n in sizes.items():
        rows: list[Record] = []
        while len(rows) < n:
            sporty = rng.choice([(True, True), (True, True), (False, False), (False, False), (True, False), (False, True)])
            subject = rng.choice(EXAMPLE_SUBJECTS[0 if sporty[0] else 1])
            event = rng.choice(EXAMPLE_EVENTS[0 if sporty[1] else 1])
            opener = rng.choice(EXAMPLE_OPENERS)
            if opener:
                subject = subject[0].lower() + subject[1:]
            sentence = f"{opener}{subject} {event} {rng.choice(EXAMPLE_ENDINGS)}."
            if sentence in seen:
                continue
            seen.add(sentence)
            target = 0.1 + 0.4 * sum(sporty) + rng.gauss(0.0, noise)
            rows.append({"id": f"{split}-{len(rows)}", "input": sentence, "target": round(min(max(target, 0.0), 1.0), 2)})
        data[split] = rows
    return data


def write_clf_example(path: str = os.path.join("mount", "data", "clf_example.json"), seed: int = 0) -> str:
    write_text_atomic(path, json.dumps(clf_example_data(seed), indent=1) + "\n")
    return path
