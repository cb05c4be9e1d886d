"""Tests for finetune_lm.py's preprocessing functions (lm_preprocessing.py) and its collator
(data_collators.LMCollator): exact ids, T5's counts, BERT's replacement proportions, every check's message.

Hand-written token ids and no model; two tiny tokenizers (BERT WordPiece, T5 SentencePiece) check
`TokenInfo.from_tokenizer` and word matching on real tokens.
Run: HF_HUB_OFFLINE=1 python -m pytest -q tests/test_lm_preprocessing.py
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from typing import Any, Sequence

import numpy as np
import torch
from absl.testing import absltest, parameterized

from data_collators import LMCollator, T5DataCollator
from errors import UserError
from lm_preprocessing import FUNCTIONS, BoundPreprocessing, TokenInfo, check_preprocessing, preprocess
from tests.fixtures import tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAD, EOS, UNK, CLS, MASK = 0, 1, 2, 3, 4  # the fake vocabulary's special ids; text ids start at 5
WHERE = "data_preprocessing_fn.train"

# The fake tokenizer's words: "dog" alone and mid-sentence (" dog") differ, as in byte-level BPE.
WORDS = {"cat": [10], "dog": [20], " dog": [21], "hotdog": [22, 20], "ice cream": [11, 12], "mystery": [UNK]}


def fake_encode(word: str) -> list[int]:
    return list(WORDS.get(word, WORDS.get(word.lstrip(" "), [UNK])))


def fake_tokens(ids: list[int]) -> list[str]:
    return [f"t{i}" for i in ids]


def fake_info(model_task: str, vocab_size: int = 50, num_sentinels: int = 10) -> TokenInfo:
    """Ids 0..vocab_size-1; seq2seq sentinels descend from the last id (<extra_id_0> = vocab_size - 1), as T5's."""
    sentinels = tuple(range(vocab_size - 1, vocab_size - 1 - num_sentinels, -1)) if model_task == "seq2seq" else ()
    return TokenInfo(
        model_task=model_task,
        mask_token_id=MASK if model_task == "mlm" else None,
        sentinel_ids=sentinels,
        eos_token_id=EOS,
        unk_token_id=UNK,
        special_ids=frozenset({PAD, EOS, UNK, CLS, MASK, *sentinels}),
        vocab_size=vocab_size,
        encode=fake_encode,
        id_to_token=fake_tokens,
    )


MLM, T5, LM = fake_info("mlm"), fake_info("seq2seq"), fake_info("lm")
S0, S1, S2, S3 = T5.sentinel_ids[:4]  # 49, 48, 47, 46
BIG_T5 = fake_info("seq2seq", vocab_size=200, num_sentinels=100)  # text ids 5..99, sentinels 199..100


def run(name: str, examples: list[dict[str, Any]], info: TokenInfo, seed: int = 0, **kwargs: Any) -> list[dict]:
    """Check `kwargs` as the script does, then preprocess with a seeded generator."""
    kwargs = check_preprocessing(name, kwargs, "once", info.model_task, WHERE)
    return preprocess(examples, name, kwargs, info, np.random.default_rng(seed))


def pairs(out: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    return [(e["input_ids"], e["labels"]) for e in out]


def t5_counts(length: int, mask_prop: float, mean: float) -> tuple[int, int]:
    """(noise tokens, spans) as T5 counts them (plus the HF #22246 cap); one token is one span."""
    if length == 1:
        return 1, 1
    noise = min(max(round(length * mask_prop), 1), length - 1)
    return noise, min(max(round(noise / mean), 1), noise, length - noise)


def merge_t5(inputs: Sequence[int], labels: Sequence[int], sentinels: Sequence[int]) -> list[int]:
    """Put each input sentinel's span (read from the labels, which end in EOS) back in its place."""
    assert labels[-1] == EOS, labels
    spans: dict[int, list[int]] = {}
    for token in labels[:-1]:
        if token in sentinels:
            current = spans[token] = []
        else:
            current.append(token)
    out = [t for token in inputs for t in (spans.pop(token) if token in sentinels else [token])]
    assert not spans, spans
    return out


def random_row(rng: np.random.Generator, length: int, high: int = 40) -> list[int]:
    """Text ids 5..high-1 with special ids (CLS, PAD) sprinkled in and EOS last."""
    row = rng.integers(5, high, size=length)
    row[rng.random(length) < 0.1] = CLS
    row[rng.random(length) < 0.05] = PAD
    return [*row.tolist(), EOS]


class CheckPreprocessingTest(parameterized.TestCase):
    @parameterized.parameters(
        ("identity", {}, "lm", {}),
        ("remove_non_mask_tokens_from_labels", {}, "mlm", {}),
        ("mask_random_tokens", {}, "mlm", {"mask_prop": 0.15, "replacement_props": None}),
        ("mask_random_tokens", {"replacement_props": {"mask": 1, "random": 0, "original": 0}}, "seq2seq",
         {"mask_prop": 0.15, "replacement_props": {"mask": 1.0, "random": 0.0, "original": 0.0}}),
        ("mask_random_spans", {"mask_prop": 0.3}, "seq2seq", {"mask_prop": 0.3, "mean_noise_span_length": 3.0}),
        ("mask_truerandom_spans", {}, None, {"mask_prop": 0.15}),
        ("expand_with_masks", {}, "mlm", {}),
        ("mask_word_tokens", {"word_tokens_to_mask": ["cat"]}, "seq2seq", {"word_tokens_to_mask": ["cat"]}),
        ("mask_words", {"words_to_mask": ("cat", "dog")}, "mlm", {"words_to_mask": ("cat", "dog")}),
    )
    def test_defaults_filled(self, name, kwargs, model_task, expected):
        for strategy in ("once", "per_batch"):
            self.assertEqual(check_preprocessing(name, kwargs, strategy, model_task, WHERE), expected)

    def test_every_function_is_checked_above(self):
        names = {"identity", "remove_non_mask_tokens_from_labels", "mask_random_tokens", "mask_random_spans",
                 "mask_truerandom_spans", "expand_with_masks", "mask_word_tokens", "mask_words"}
        self.assertEqual(set(FUNCTIONS), names)

    def test_one_word_alone_is_a_list_of_one(self):
        # `--data_preprocessing_fn_kwargs.train.words_to_mask cat` gives a string, not a list.
        self.assertEqual(check_preprocessing("mask_words", {"words_to_mask": "cat"}, "once", "mlm", "w")["words_to_mask"], ["cat"])

    @parameterized.named_parameters(
        ("unknown_function", "mask_all", {}, "once", "mlm",
         "unknown preprocessing function 'mask_all'; valid: identity, remove_non_mask_tokens_from_labels, "
         "mask_random_tokens, mask_random_spans, mask_truerandom_spans, expand_with_masks, mask_word_tokens, "
         "mask_words"),
        ("unknown_strategy", "identity", {}, "per_epoch", "lm",
         "unknown preprocessing strategy 'per_epoch'; valid: once, per_batch"),
        ("unknown_kwarg", "mask_random_spans", {"noise_density": 0.15}, "once", "seq2seq",
         "mask_random_spans takes no kwarg 'noise_density'; valid: mask_prop, mean_noise_span_length"),
        ("kwarg_to_function_without_any", "identity", {"mask_prop": 0.15}, "once", "lm",
         "identity takes no kwarg 'mask_prop'; it takes none"),
        ("missing_words", "mask_words", {}, "once", "mlm", "mask_words needs the kwarg words_to_mask"),
        ("masking_on_lm", "mask_random_tokens", {}, "once", "lm",
         "mask_random_tokens masks tokens; a causal LM (lm) predicts every token: use identity"),
        ("expand_on_lm", "expand_with_masks", {}, "per_batch", "lm",
         "expand_with_masks masks tokens; a causal LM (lm) predicts every token: use identity"),
        ("remove_on_seq2seq", "remove_non_mask_tokens_from_labels", {}, "once", "seq2seq",
         "remove_non_mask_tokens_from_labels needs a model_task of mlm, got seq2seq"),
        ("remove_on_lm", "remove_non_mask_tokens_from_labels", {}, "once", "lm",
         "remove_non_mask_tokens_from_labels needs a model_task of mlm, got lm"),
        ("mask_prop_zero", "mask_random_spans", {"mask_prop": 0}, "once", "seq2seq",
         "mask_prop must be a number in (0, 1], got 0"),
        ("mask_prop_over_one", "mask_truerandom_spans", {"mask_prop": 1.5}, "once", "mlm",
         "mask_prop must be a number in (0, 1], got 1.5"),
        ("mask_prop_string", "mask_random_tokens", {"mask_prop": "0.15"}, "once", None,
         "mask_prop must be a number in (0, 1], got '0.15'"),
        ("mask_prop_bool", "mask_random_tokens", {"mask_prop": True}, "once", None,
         "mask_prop must be a number in (0, 1], got True"),
        ("mask_prop_nan", "mask_random_tokens", {"mask_prop": float("nan")}, "once", None,
         "mask_prop must be a number in (0, 1], got nan"),
        ("span_length_under_one", "mask_random_spans", {"mean_noise_span_length": 0.5}, "once", "seq2seq",
         "mean_noise_span_length must be a number >= 1, got 0.5"),
        ("props_missing_key", "mask_random_tokens", {"replacement_props": {"mask": 0.9, "random": 0.1}}, "once", "mlm",
         "replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1, "
         "got {'mask': 0.9, 'random': 0.1}"),
        ("props_extra_key", "mask_random_tokens",
         {"replacement_props": {"mask": 0.8, "random": 0.1, "original": 0.1, "delete": 0.0}}, "once", "mlm",
         "replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1, "
         "got {'mask': 0.8, 'random': 0.1, 'original': 0.1, 'delete': 0.0}"),
        ("props_negative", "mask_random_tokens", {"replacement_props": {"mask": 1.1, "random": -0.1, "original": 0}},
         "once", "mlm",
         "replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1, "
         "got {'mask': 1.1, 'random': -0.1, 'original': 0}"),
        ("props_sum", "mask_random_tokens", {"replacement_props": {"mask": 0.8, "random": 0.1, "original": 0.0}},
         "once", "mlm",
         "replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1, "
         "got {'mask': 0.8, 'random': 0.1, 'original': 0.0}"),
        ("props_not_a_mapping", "mask_random_tokens", {"replacement_props": [0.8, 0.1, 0.1]}, "once", "mlm",
         "replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1, "
         "got [0.8, 0.1, 0.1]"),
        ("props_on_seq2seq", "mask_random_tokens", {"replacement_props": {"mask": 0.8, "random": 0.1, "original": 0.1}},
         "once", "seq2seq",
         "replacement_props {'mask': 0.8, 'random': 0.1, 'original': 0.1} cannot apply to a seq2seq model, which "
         "replaces every chosen token by a sentinel: leave it unset or use "
         "{'mask': 1.0, 'random': 0.0, 'original': 0.0}"),
        ("words_empty", "mask_words", {"words_to_mask": []}, "once", "mlm",
         "words_to_mask must be a non-empty list of non-empty strings, got []"),
        ("words_empty_string", "mask_word_tokens", {"word_tokens_to_mask": ["cat", ""]}, "once", "seq2seq",
         "word_tokens_to_mask must be a non-empty list of non-empty strings, got ['cat', '']"),
        ("words_not_strings", "mask_word_tokens", {"word_tokens_to_mask": [7]}, "once", "seq2seq",
         "word_tokens_to_mask must be a non-empty list of non-empty strings, got [7]"),
    )
    def test_error_message(self, name, kwargs, strategy, model_task, message):
        with self.assertRaises(UserError) as caught:
            check_preprocessing(name, kwargs, strategy, model_task, WHERE)
        self.assertEqual(str(caught.exception), f"{WHERE}: {message}")

    def test_unknown_model_task_skips_the_task_checks_and_preprocess_repeats_them(self):
        kwargs = check_preprocessing("mask_words", {"words_to_mask": ["cat"]}, "once", None, WHERE)
        with self.assertRaisesRegex(UserError, r"^mask_words: mask_words masks tokens; a causal LM \(lm\)"):
            preprocess([{"input_ids": [10]}], "mask_words", kwargs, LM, np.random.default_rng(0))


class DeterministicFunctionsTest(parameterized.TestCase):
    @parameterized.parameters("lm", "mlm", "seq2seq")
    def test_identity(self, model_task):
        info = fake_info(model_task)
        rows = [{"input_ids": [3, 10, 11, 1], "text": "a b"}, {"input_ids": [5, 6], "labels": [7], "source": 4}]
        out = run("identity", rows, info)
        self.assertEqual(out, [
            {"input_ids": [3, 10, 11, 1], "labels": [3, 10, 11, 1], "source": 0, "text": "a b"},
            {"input_ids": [5, 6], "labels": [7], "source": 4},
        ])

    def test_remove_non_mask_tokens_from_labels(self):
        out = run("remove_non_mask_tokens_from_labels", [
            {"input_ids": [3, 4, 11, 4, 1]},  # no labels: a copy of the inputs first, so the mask ids remain
            {"input_ids": [3, 4, 11, 4, 1], "labels": [3, 10, 11, 12, 1]},
        ], MLM)
        self.assertEqual(pairs(out), [
            ([3, 4, 11, 4, 1], [-100, 4, -100, 4, -100]),
            ([3, 4, 11, 4, 1], [-100, 10, -100, 12, -100]),
        ])

    def test_remove_non_mask_tokens_labels_of_another_length(self):
        with self.assertRaises(UserError) as caught:
            rows = [{"input_ids": [4]}, {"input_ids": [3, 4, 1], "labels": [3, 4]}]
            run("remove_non_mask_tokens_from_labels", rows, MLM)
        self.assertEqual(
            str(caught.exception),
            "remove_non_mask_tokens_from_labels: example 2 has 3 input tokens but 2 labels; "
            "labels must align with the inputs, one per token",
        )

    def test_expand_with_masks_mlm(self):
        rows = [{"input_ids": [3, 10, 11, 1], "meta": "x"}, {"input_ids": [3, 1]}, {"input_ids": [12], "labels": [9]}]
        out = run("expand_with_masks", rows, MLM)
        self.assertEqual(out, [
            {"input_ids": [3, 4, 11, 1], "labels": [-100, 10, -100, -100], "source": 0, "meta": "x"},
            {"input_ids": [3, 10, 4, 1], "labels": [-100, -100, 11, -100], "source": 0, "meta": "x"},
            # [3, 1] has nothing to mask: no copy. Labels from the file stay.
            {"input_ids": [4], "labels": [9], "source": 2},
        ])

    def test_expand_with_masks_seq2seq(self):
        out = run("expand_with_masks", [{"input_ids": [10, 11, 1], "source": 5}], T5)
        self.assertEqual(out, [
            {"input_ids": [S0, 11, 1], "labels": [S0, 10, EOS], "source": 5},
            {"input_ids": [10, S0, 1], "labels": [S0, 11, EOS], "source": 5},
        ])

    def test_mask_word_tokens(self):
        rows = [{"input_ids": [3, 10, 20, 20, 11, 20, 1]}, {"input_ids": [20, 3, 20, 1], "labels": [5, 6]}]
        self.assertEqual(pairs(run("mask_word_tokens", rows, MLM, word_tokens_to_mask=["dog"])), [
            ([3, 10, 4, 4, 11, 4, 1], [-100, -100, 20, 20, -100, 20, -100]),
            ([4, 3, 4, 1], [5, 6]),
        ])
        self.assertEqual(pairs(run("mask_word_tokens", rows, T5, word_tokens_to_mask=["dog", "cat"])), [
            # Adjacent masked tokens share a sentinel; the special token 3 keeps two occurrences apart.
            ([3, S0, 11, S1, 1], [S0, 10, 20, 20, S1, 20, EOS]),
            ([S0, 3, S1, 1], [5, 6]),
        ])

    @parameterized.named_parameters(
        ("two_tokens", "ice cream", "it encodes to 2 tokens: ['t11', 't12'] (ids [11, 12])"),
        ("unknown", "mystery", "it encodes to the unknown token: ['t2'] (ids [2])"),
    )
    def test_mask_word_tokens_needs_one_known_token(self, word, reason):
        with self.assertRaises(UserError) as caught:
            run("mask_word_tokens", [{"input_ids": [10]}], MLM, word_tokens_to_mask=["cat", word])
        self.assertEqual(
            str(caught.exception),
            f"mask_word_tokens: word_tokens_to_mask entry {word!r} must be one known token; {reason}",
        )

    def test_mask_words_mlm(self):
        # "hotdog" = 22 20 is matched before "dog" = 20 (longest first); " dog" = 21 is the mid-sentence form.
        row = {"input_ids": [3, 22, 20, 20, 21, 11, 12, 13, 1]}
        out = run("mask_words", [row], MLM, words_to_mask=["dog", "hotdog", "ice cream"])
        self.assertEqual(pairs(out), [([3, 4, 4, 4, 4, 4, 4, 13, 1], [-100, 22, 20, 20, 21, 11, 12, -100, -100])])

    def test_mask_words_seq2seq_one_span_per_word(self):
        rows = [
            {"input_ids": [10, 11, 12, 10, 5, 1]},  # cat | ice cream | cat: adjacent words stay three spans
            {"input_ids": [22, 20, 20, 6, 21, 1]},  # hotdog | dog, then " dog"
            {"input_ids": [11, 3, 12, 1]},  # a special token inside: no match
        ]
        self.assertEqual(pairs(run("mask_words", rows, T5, words_to_mask=["cat", "ice cream", "dog", "hotdog"])), [
            ([S0, S1, S2, 5, 1], [S0, 10, S1, 11, 12, S2, 10, EOS]),
            ([S0, S1, 6, S2, 1], [S0, 22, 20, S1, 20, S2, 21, EOS]),
            ([11, 3, 12, 1], [EOS]),
        ])

    def test_mask_words_matches_never_overlap(self):
        # "hotdog" (22 20) is matched first, everywhere; "dog" (20) then only where no hotdog took it.
        rows = [{"input_ids": [22, 20, 20, 22, 20]}]
        self.assertEqual(pairs(run("mask_words", rows, T5, words_to_mask=["dog", "hotdog"])), [
            ([S0, S1, S2], [S0, 22, 20, S1, 20, S2, 22, 20, EOS]),
        ])

    def test_mask_words_unknown_word(self):
        with self.assertRaises(UserError) as caught:
            run("mask_words", [{"input_ids": [10]}], MLM, words_to_mask=["mystery"])
        message = "mask_words: words_to_mask entry 'mystery' encodes to no known tokens: ['t2'] (ids [2])"
        self.assertEqual(str(caught.exception), message)

    def test_more_spans_than_sentinels(self):
        row = [20, 5] * 11  # 11 separate occurrences, 10 sentinels
        run("mask_word_tokens", [{"input_ids": row[:-2]}], T5, word_tokens_to_mask=["dog"])  # 10 fit
        with self.assertRaises(UserError) as caught:
            rows = [{"input_ids": [5]}, {"input_ids": row, "source": 6}]
            run("mask_word_tokens", rows, T5, word_tokens_to_mask=["dog"])
        self.assertEqual(str(caught.exception), "mask_word_tokens: example 7 needs 11 sentinels, the tokenizer has 10")

    def test_mlm_without_mask_token(self):
        info = dataclasses.replace(MLM, mask_token_id=None)
        with self.assertRaisesRegex(UserError, "^mask_words: the tokenizer has no mask token"):
            run("mask_words", [{"input_ids": [10]}], info, words_to_mask=["cat"])

    @parameterized.parameters(
        ("mask_random_tokens", {}), ("mask_random_spans", {}), ("mask_truerandom_spans", {}),
        ("mask_word_tokens", {"word_tokens_to_mask": ["cat"]}), ("mask_words", {"words_to_mask": ["cat"]}),
    )
    def test_nothing_to_mask(self, name, kwargs):
        """Rows of special tokens only are unchanged: mlm labels all -100, seq2seq labels just EOS."""
        out = run(name, [{"input_ids": [3, 1]}, {"input_ids": []}], MLM, **kwargs)
        self.assertEqual(pairs(out), [([3, 1], [-100, -100]), ([], [])])
        out = run(name, [{"input_ids": [1]}, {"input_ids": []}], T5, **kwargs)
        self.assertEqual(pairs(out), [([1], [EOS]), ([], [EOS])])

    @parameterized.parameters(
        ("mask_random_tokens", {"replacement_props": {"mask": 1.0, "random": 0.0, "original": 0.0}}),
        ("mask_random_spans", {}),
        ("mask_truerandom_spans", {}),
    )
    def test_one_maskable_token_is_the_span(self, name, kwargs):
        self.assertEqual(pairs(run(name, [{"input_ids": [3, 10, 1]}], MLM, **kwargs)), [([3, 4, 1], [-100, 10, -100])])
        self.assertEqual(pairs(run(name, [{"input_ids": [10, 1]}], T5)), [([S0, 1], [S0, 10, EOS])])

    def test_random_spans_special_token_splits_a_span(self):
        # 4 maskable tokens at mask_prop 1: 3 noise tokens in 1 span after the first token, which the
        # special token 3 (kept in place) cuts in two.
        out = run("mask_random_spans", [{"input_ids": [10, 11, 3, 12, 13, 1]}], T5, mask_prop=1.0)
        self.assertEqual(pairs(out), [([10, S0, 3, S1, 1], [S0, 11, S1, 12, 13, EOS])])


class RandomFunctionsTest(parameterized.TestCase):
    LENGTHS = (1, 2, 3, 5, 8, 13, 17, 30, 64)

    @parameterized.product(name=("mask_random_tokens", "mask_truerandom_spans"), mask_prop=(0.15, 0.5, 1.0))
    def test_count_and_reconstruction(self, name, mask_prop):
        """max(round(mask_prop * L), 1) maskable tokens masked; special tokens never; labels give them back."""
        rng = np.random.default_rng(0)
        rows = [{"input_ids": random_row(rng, n)} for n in self.LENGTHS for _ in range(3)]
        only_masks = {"replacement_props": {"mask": 1.0, "random": 0.0, "original": 0.0}}
        kwargs = only_masks if name == "mask_random_tokens" else {}
        for row, (inputs, labels) in zip(rows, pairs(run(name, rows, MLM, mask_prop=mask_prop, **kwargs))):
            ids = row["input_ids"]
            maskable = sum(t not in MLM.special_ids for t in ids)
            masked = [i for i, t in enumerate(inputs) if t == MASK]
            self.assertLen(masked, max(round(mask_prop * maskable), 1) if maskable else 0)
            self.assertEqual([i for i, label in enumerate(labels) if label != -100], masked)
            self.assertEqual([labels[i] if t == MASK else t for i, t in enumerate(inputs)], ids)
        for row, (inputs, labels) in zip(rows, pairs(run(name, rows, BIG_T5, mask_prop=mask_prop))):
            ids = row["input_ids"]
            maskable = sum(t not in BIG_T5.special_ids for t in ids)
            self.assertEqual(merge_t5(inputs, labels, BIG_T5.sentinel_ids), ids)
            num_spans = sum(t in BIG_T5.sentinel_ids for t in inputs)
            self.assertLen(labels, max(round(mask_prop * maskable), 1) + num_spans + 1 if maskable else 1)
            self.assertEqual([t for t in inputs if t in BIG_T5.sentinel_ids], list(BIG_T5.sentinel_ids[:num_spans]))

    def test_truerandom_merges_adjacent_tokens(self):
        out = run("mask_truerandom_spans", [{"input_ids": list(range(5, 15)) + [1]}], T5, mask_prop=1.0)
        self.assertEqual(pairs(out), [([S0, 1], [S0, *range(5, 15), EOS])])

    @parameterized.product(mask_prop=(0.15, 0.5, 0.8), mean=(1.0, 3.0))
    def test_random_spans_t5_counts_for_rows_of_different_lengths(self, mask_prop, mean):
        """T5's noise and span counts over each row's maskable tokens, rows of many lengths in one batch."""
        rng = np.random.default_rng(1)
        lengths = rng.permutation(np.repeat(self.LENGTHS, 3))
        mlm_rows = [{"input_ids": random_row(rng, n)} for n in lengths]  # special tokens inside too
        out = run("mask_random_spans", mlm_rows, MLM, mask_prop=mask_prop, mean_noise_span_length=mean)
        for row, (inputs, labels) in zip(mlm_rows, pairs(out)):
            ids = row["input_ids"]
            maskable = [i for i, t in enumerate(ids) if t not in MLM.special_ids]
            masked = [i for i, label in enumerate(labels) if label != -100]
            self.assertEqual(masked, [i for i, t in enumerate(inputs) if t == MASK])
            self.assertLen(masked, t5_counts(len(maskable), mask_prop, mean)[0])
            self.assertEqual([labels[i] if t == MASK else t for i, t in enumerate(inputs)], ids)
            if len(maskable) > 1:
                self.assertNotIn(maskable[0], masked)  # T5's first span is never noise
        t5_rows = [{"input_ids": [*rng.integers(5, 100, size=n).tolist(), EOS]} for n in lengths]
        out = run("mask_random_spans", t5_rows, BIG_T5, mask_prop=mask_prop, mean_noise_span_length=mean)
        for row, (inputs, labels) in zip(t5_rows, pairs(out)):
            noise, spans = t5_counts(len(row["input_ids"]) - 1, mask_prop, mean)
            self.assertEqual([t for t in inputs if t in BIG_T5.sentinel_ids], list(BIG_T5.sentinel_ids[:spans]))
            self.assertLen(labels, noise + spans + 1)
            self.assertEqual(merge_t5(inputs, labels, BIG_T5.sentinel_ids), row["input_ids"])

    def test_random_spans_equals_t5_collator(self):
        """Rows without special tokens (plus the final </s>) corrupt exactly as T5DataCollator.corrupt does
        with the same generator: the same masks, inputs and labels."""

        class StubT5Tokenizer:  # what T5DataCollator reads; sentinels as BIG_T5's
            pad_token_id, eos_token_id, unk_token_id = PAD, EOS, UNK

            def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
                return [BIG_T5.sentinel_ids[int(t[len("<extra_id_"):-1])] for t in tokens]

        for input_length, mask_prop, mean in ((16, 0.15, 3.0), (32, 0.3, 2.0), (64, 0.5, 3.0)):
            collator = T5DataCollator(StubT5Tokenizer(), mask_prop, mean, input_length=input_length, seed=7)
            self.assertEqual(collator.padding, 0)
            rows = np.random.default_rng(3).integers(5, 100, size=(8, collator.expanded_length))
            expected = collator.corrupt(rows)
            examples = [{"input_ids": [*row.tolist(), EOS]} for row in rows]
            out = run("mask_random_spans", examples, BIG_T5, seed=7, mask_prop=mask_prop, mean_noise_span_length=mean)
            self.assertEqual([e["input_ids"] for e in out], expected["input_ids"].tolist())
            self.assertEqual([e["labels"] for e in out], expected["labels"].tolist())

    def test_bert_replacement_proportions(self):
        """Devlin et al. 2019, sec. 3.1: of the chosen tokens 80% become [MASK], 10% a random token, 10% stay."""
        info = fake_info("mlm", vocab_size=10_000)
        rng = np.random.default_rng(0)
        rows = [{"input_ids": [CLS, *rng.integers(5, 10_000, size=20).tolist(), EOS]} for _ in range(2000)]
        counts = {"mask": 0, "random": 0, "original": 0}
        for inputs, labels in pairs(run("mask_random_tokens", rows, info, mask_prop=0.5)):
            chosen = [i for i, label in enumerate(labels) if label != -100]
            self.assertLen(chosen, 10)
            for i in chosen:
                kind = "mask" if inputs[i] == MASK else "original" if inputs[i] == labels[i] else "random"
                counts[kind] += 1
                if kind == "random":
                    self.assertNotIn(inputs[i], info.special_ids)
        total = sum(counts.values())  # 20000 chosen tokens: binomial sd 0.003 (mask), 0.002 (others)
        self.assertAlmostEqual(counts["mask"] / total, 0.8, delta=0.012)
        self.assertAlmostEqual(counts["random"] / total, 0.1, delta=0.008)
        self.assertAlmostEqual(counts["original"] / total, 0.1, delta=0.008)

    def test_random_replacements_never_special(self):
        info = fake_info("mlm", vocab_size=12)  # non-special ids 5..11
        rows = [{"input_ids": [5, 6, 7, 8, 9, 10, 11]}] * 50
        only_random = {"mask": 0, "random": 1, "original": 0}
        out = run("mask_random_tokens", rows, info, mask_prop=1.0, replacement_props=only_random)
        drawn = {t for e in out for t in e["input_ids"]}
        self.assertEqual(drawn, set(range(5, 12)))

    @parameterized.parameters("mask_random_tokens", "mask_random_spans", "mask_truerandom_spans")
    def test_seeded_and_labels_from_file_kept(self, name):
        rows = [{"input_ids": list(range(5, 45)), "labels": [7, 8]}, {"input_ids": list(range(44, 4, -1))}]
        first, again = run(name, rows, MLM, seed=3), run(name, rows, MLM, seed=3)
        self.assertEqual(first, again)
        self.assertNotEqual(first, run(name, rows, MLM, seed=4))
        self.assertEqual(first[0]["labels"], [7, 8])


@functools.lru_cache(maxsize=None)
def tiny_bert_tokenizer() -> Any:
    """A BERT WordPiece tokenizer trained on a few sentences."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    sentences = ["the cat sat on the mat", "a dog ate my hotdog", "ice cream is cold", "cats and dogs"] * 5
    tokenizer.train_from_iterator(sentences, vocab_size=80, min_frequency=1)
    return BertTokenizerFast(tokenizer_object=tokenizer._tokenizer)


class RealTokenizerTest(absltest.TestCase):
    def test_bert_token_info_and_mask_words(self):
        tokenizer = tiny_bert_tokenizer()
        info = TokenInfo.from_tokenizer(tokenizer, "mlm")
        specials = tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        self.assertEqual(info.mask_token_id, tokenizer.convert_tokens_to_ids("[MASK]"))
        self.assertEqual(info.special_ids, frozenset(specials))
        self.assertEqual((info.sentinel_ids, info.vocab_size), ((), len(tokenizer)))
        tokens = ["[CLS]", "[SEP]", "cat", "mat", "the", "[MASK]"]
        cls, sep, cat, mat, the, mask = tokenizer.convert_tokens_to_ids(tokens)
        ids = tokenizer("the cat sat on the mat")["input_ids"]
        self.assertEqual([ids[0], ids[1], ids[2], ids[-2], ids[-1]], [cls, the, cat, mat, sep])
        out = run("mask_words", [{"input_ids": ids}], info, words_to_mask=["Cat", "mat"])
        self.assertEqual(out[0]["input_ids"], [cls, the, mask, *ids[3:-2], mask, sep])
        self.assertEqual(out[0]["labels"], [-100, -100, cat, *[-100] * (len(ids) - 5), mat, -100])

    def test_t5_token_info_and_mask_words(self):
        tokenizer = tiny_tokenizer()
        info = TokenInfo.from_tokenizer(tokenizer, "seq2seq")
        sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
        self.assertEqual(info.sentinel_ids, tuple(sentinels))
        self.assertEqual(info.sentinel_ids[:2], (len(tokenizer) - 1, len(tokenizer) - 2))
        specials = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, *sentinels}
        self.assertEqual(info.special_ids, frozenset(specials))
        self.assertEqual((info.mask_token_id, info.eos_token_id), (None, tokenizer.eos_token_id))
        the, model, learns = tokenizer.convert_tokens_to_ids(["▁the", "▁model", "▁learns"])
        ids = tokenizer("the model learns the model")["input_ids"]
        self.assertEqual(ids, [the, model, learns, the, model, EOS])
        out = run("mask_words", [{"input_ids": ids}], info, words_to_mask=["model"])
        s0, s1 = sentinels[:2]
        self.assertEqual(pairs(out), [([the, s0, learns, the, s1, EOS], [s0, model, s1, model, EOS])])


class LMCollatorTest(absltest.TestCase):
    def test_decoder_inputs_are_the_labels_shifted_right(self):
        # The Trainer takes the labels out of the batch before an encoder-decoder's forward pass: the collator
        # gives T5 its decoder inputs (labels behind the start token, padding as pad).
        collator = LMCollator(pad_token_id=0, decoder_start_token_id=0)
        batch = collator([{"input_ids": [5, 6, 1], "labels": [9, 7, 1]}, {"input_ids": [5, 1], "labels": [9, 1]}])
        self.assertEqual(batch["labels"].tolist(), [[9, 7, 1], [9, 1, -100]])
        self.assertEqual(batch["decoder_input_ids"].tolist(), [[0, 9, 7], [0, 9, 1]])
        self.assertNotIn("decoder_input_ids", LMCollator(pad_token_id=0)([{"input_ids": [5, 1]}]))

    def test_pads_and_drops_other_keys(self):
        features = [
            {"input_ids": [5, 6, 7], "labels": [8, 9], "text": "a b c", "source": 3},
            {"input_ids": np.array([5]), "source": 4, "metadata": {"x": 1}},  # no labels: a copy of the inputs
            {"input_ids": [5, 6], "labels": [8, 9, 10, 11], "source": 5},  # seq2seq labels longer than inputs
        ]
        batch = LMCollator(pad_token_id=0)(features)
        self.assertEqual(set(batch), {"input_ids", "attention_mask", "labels"})
        self.assertTrue(all(value.dtype == torch.long for value in batch.values()))
        self.assertEqual(batch["input_ids"].tolist(), [[5, 6, 7], [5, 0, 0], [5, 6, 0]])
        self.assertEqual(batch["attention_mask"].tolist(), [[1, 1, 1], [1, 0, 0], [1, 1, 0]])
        self.assertEqual(batch["labels"].tolist(), [[8, 9, -100, -100], [5, -100, -100, -100], [8, 9, 10, 11]])
        batch = LMCollator(pad_token_id=0, keep_source=True)(features)
        self.assertEqual(batch["source"].tolist(), [3, 4, 5])
        self.assertEqual(batch["source"].dtype, torch.long)

    def test_per_batch_preprocessing(self):
        features = [{"input_ids": [CLS, *range(5, 35), EOS], "text": "t"}, {"input_ids": [CLS, *range(5, 25), EOS]}]
        kwargs = check_preprocessing("mask_random_tokens", {}, "per_batch", "mlm", WHERE)
        bound = BoundPreprocessing("mask_random_tokens", kwargs, MLM)
        collator = LMCollator(pad_token_id=PAD, preprocess=bound, seed=1)
        first, second = collator(features), collator(features)
        self.assertFalse(torch.equal(first["labels"], second["labels"]))  # new masks each batch
        self.assertTrue(torch.equal(first["labels"], LMCollator(PAD, bound, seed=1)(features)["labels"]))  # seeded
        self.assertEqual((first["labels"] != -100).sum(dim=1).tolist(), [round(0.15 * 30), round(0.15 * 20)])
        self.assertEqual(first["attention_mask"].sum(dim=1).tolist(), [32, 22])

    def test_expanded_batch_keeps_source(self):
        bound = BoundPreprocessing("expand_with_masks", {}, T5)
        features = [{"input_ids": [10, 11, 1]}, {"input_ids": [12, 1], "source": 9}]
        batch = LMCollator(PAD, bound, keep_source=True)(features)
        self.assertEqual(batch["source"].tolist(), [0, 0, 9])
        self.assertEqual(batch["input_ids"].tolist(), [[S0, 11, 1], [10, S0, 1], [S0, 1, PAD]])
        self.assertEqual(batch["labels"].tolist(), [[S0, 10, EOS], [S0, 11, EOS], [S0, 12, EOS]])

    def test_dataloader_workers_draw_different_masks(self):
        bound = BoundPreprocessing("mask_random_tokens", {"mask_prop": 0.15, "replacement_props": None}, MLM)
        features = [{"input_ids": list(range(5, 45))}] * 4
        loader = torch.utils.data.DataLoader(features, batch_size=2, num_workers=2, collate_fn=LMCollator(PAD, bound))
        first, second = [batch["labels"] for batch in loader][:2]  # one batch from each worker, same rows
        self.assertFalse(torch.equal(first, second))


class ImportTest(absltest.TestCase):
    def test_module_imports_no_torch(self):
        code = "import sys, lm_preprocessing; assert 'torch' not in sys.modules, 'torch imported'"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


if __name__ == "__main__":
    absltest.main()
