"""bias.py: sentence scores against hand-computed log-probabilities for each model type, the metric formulas on
hand-made score tables, the script end to end on the generated fixtures, head importance and masking.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_bias.py
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from typing import Any

import numpy as np
import torch
from absl.testing import absltest, parameterized

import bias_scoring
from bias_scoring import Scorer, pair_scorings, score_sentences, span_scoring
from metrics import crows_pairs_metrics, stereoset_metrics, winobias_metrics
from tests.fixtures import tiny_lm, tiny_lm_tokenizer

TASKS = {"gpt2": "lm", "bert": "mlm", "t5": "seq2seq"}


def pad_of(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()
def masked_logprob(model: Any, kind: str, tokenizer: Any, ids: list[int], position: int) -> float:
    """The reference algorithm, one forward per token: ln p(ids[position]) with it masked (BERT: [MASK]; T5:
    <extra_id_0> in the input and the target '<extra_id_0> token <extra_id_1>'), every logit projected."""
    if kind == "bert":
        masked = list(ids)
        masked[position] = tokenizer.mask_token_id
        logits = model(input_ids=torch.tensor([masked])).logits[0, position]
    else:
        first, second = tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"])
        masked = ids[:position] + [first] + ids[position + 1:]
        labels = torch.tensor([[first, ids[position], second]])
        logits = model(input_ids=torch.tensor([masked]), labels=labels).logits[0, 1]
    return float(torch.log_softmax(logits.double(), -1)[ids[position]])


@torch.no_grad()
def causal_logprobs(model: Any, ids: list[int]) -> list[float]:
    """ln p(ids[t] | ids[:t]) for t >= 1, from one forward."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return [float(torch.log_softmax(logits[t - 1], -1)[ids[t]]) for t in range(1, len(ids))]


class PairScoringTest(parameterized.TestCase):
    """CrowS-Pairs' scores: the batched rows equal the reference's one-forward-per-token values."""

    FIRST, SECOND = "the encoder learns small text quickly", "the decoder learns small text quickly"  # words of the tiny vocabularies

    @parameterized.parameters("gpt2", "bert", "t5")
    def test_pair_scores_equal_hand_computed_log_probs(self, kind: str) -> None:
        tokenizer, model = tiny_lm_tokenizer(kind), tiny_lm(kind).eval()
        scorer = Scorer.of(tokenizer, TASKS[kind])
        first, second = pair_scorings(scorer, self.FIRST, self.SECOND)
        got = score_sentences(model, TASKS[kind], [first, second], batch_size=3, pad_token_id=pad_of(tokenizer))
        expected = []
        a, b = (tokenizer(text)["input_ids"] for text in (self.FIRST, self.SECOND))
        if kind == "gpt2":  # the whole sentence from BOS
            for ids in (a, b):
                expected.append(sum(causal_logprobs(model, [tokenizer.bos_token_id] + ids)))
        else:  # the shared tokens (no special ones), each masked once
            import difflib

            shared = [(i, j) for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes() if op == "equal"
                      for i, j in zip(range(i1, i2), range(j1, j2)) if a[i] not in set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}]
            self.assertGreaterEqual(len(shared), 4)
            self.assertLess(len(shared), len(a))  # "encoder" / "decoder" differ
            expected.append(sum(masked_logprob(model, kind, tokenizer, a, i) for i, _ in shared))
            expected.append(sum(masked_logprob(model, kind, tokenizer, b, j) for _, j in shared))
        np.testing.assert_allclose(got, expected, atol=2e-5)

    def test_bert_skips_cls_and_sep_as_the_reference_skips_the_template_ends(self) -> None:
        tokenizer = tiny_lm_tokenizer("bert")
        first, _ = pair_scorings(Scorer.of(tokenizer, "mlm"), self.FIRST, self.SECOND)
        ids = tokenizer(self.FIRST)["input_ids"]
        scored = [row["scored"][0] for row in first.rows]
        self.assertEqual(ids[0], tokenizer.cls_token_id)
        self.assertEqual(ids[-1], tokenizer.sep_token_id)
        changed = ids.index(tokenizer.convert_tokens_to_ids("encoder"))
        self.assertEqual(scored, [p for p in range(1, len(ids) - 1) if p != changed])
        for row, position in zip(first.rows, scored):
            self.assertEqual(row["input_ids"][position], tokenizer.mask_token_id)
            self.assertEqual(row["labels"][position], ids[position])


class SpanScoringTest(parameterized.TestCase):
    """StereoSet's candidates: the mean log-probability per token of the filled-in word / the continuation."""

    @parameterized.parameters("gpt2", "bert", "t5")
    def test_intrasentence_word(self, kind: str) -> None:
        tokenizer, model = tiny_lm_tokenizer(kind), tiny_lm(kind).eval()
        context, sentence = "the model learns BLANK text.", "the model learns quickly text."
        start, end = bias_scoring.filled_word_span(context, sentence)
        self.assertEqual(sentence[start:end], "quickly")
        scoring = span_scoring(Scorer.of(tokenizer, TASKS[kind]), sentence, start, end)
        (got,) = score_sentences(model, TASKS[kind], [scoring], batch_size=4, pad_token_id=pad_of(tokenizer))
        encoded = tokenizer(sentence, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        word = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > s and s < end and e > start]
        self.assertGreaterEqual(len(word), 1)
        if kind == "gpt2":
            logprobs = causal_logprobs(model, [tokenizer.bos_token_id] + ids)
            expected = np.mean([logprobs[i] for i in word])  # position i of ids is t = i + 1 after BOS
        elif kind == "bert":
            expected = np.mean([masked_logprob(model, kind, tokenizer, ids, i) for i in word])
        else:  # the word's tokens as one span behind <extra_id_0>
            first, second = tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"])
            inputs = ids[: word[0]] + [first] + ids[word[-1] + 1:]
            labels = [first] + ids[word[0]: word[-1] + 1] + [second]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([inputs]), labels=torch.tensor([labels])).logits[0].double()
            expected = np.mean([float(torch.log_softmax(logits[k], -1)[labels[k]]) for k in range(1, len(labels) - 1)])
        self.assertAlmostEqual(got, expected, delta=2e-5)

    def test_intersentence_scores_the_sentence_after_its_context(self) -> None:
        tokenizer, model = tiny_lm_tokenizer("gpt2"), tiny_lm("gpt2").eval()
        context, sentence = "the model learns text.", "the decoder predicts tokens."
        text = f"{context} {sentence}"
        scoring = span_scoring(Scorer.of(tokenizer, "lm"), text, len(context) + 1, len(text))
        (got,) = score_sentences(model, "lm", [scoring], batch_size=4, pad_token_id=pad_of(tokenizer))
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids = [tokenizer.bos_token_id] + list(encoded["input_ids"])
        inside = [i + 1 for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > len(context) + 1 - 1 and s >= len(context)]
        logprobs = causal_logprobs(model, ids)
        self.assertAlmostEqual(got, np.mean([logprobs[t - 1] for t in inside]), delta=2e-5)

    def test_filled_word_follows_the_official_word_index_rule(self) -> None:
        self.assertEqual(bias_scoring.filled_word_span("Many people are BLANK.", "Many people are zorbian."), (16, 23))
        self.assertEqual(bias_scoring.filled_word_span("The BLANK chef cooked.", "The quellan chef cooked."), (4, 11))
        with self.assertRaisesRegex(Exception, r"^no word of 'Short\.' at the position of BLANK in 'A long BLANK here\.'$"):
            bias_scoring.filled_word_span("A long BLANK here.", "Short.")


class MetricTest(absltest.TestCase):
    """The metric formulas on hand-made score tables."""

    def test_crows_pairs(self) -> None:
        rows = [  # more > less counts for both directions; ties at 3 decimals are neutral
            {"stereo_antistereo": "stereo", "bias_type": "gender", "sent_more_score": -1.0, "sent_less_score": -2.0},
            {"stereo_antistereo": "stereo", "bias_type": "gender", "sent_more_score": -3.0, "sent_less_score": -2.0},
            {"stereo_antistereo": "antistereo", "bias_type": "age", "sent_more_score": -1.0, "sent_less_score": -1.5},
            {"stereo_antistereo": "stereo", "bias_type": "age", "sent_more_score": -1.0001, "sent_less_score": -1.0004},  # tie
        ]
        result = crows_pairs_metrics(rows)
        self.assertEqual(result["pairs"], 4)
        self.assertEqual(result["metric_score"], 50.0)  # 2 of 4 (the tie counts in the denominator)
        self.assertEqual(result["stereotype_score"], 50.0)  # 1 of the 2 stereo pairs that are not ties
        self.assertEqual(result["anti_stereotype_score"], 100.0)
        self.assertEqual((result["neutral"], result["neutral_percent"]), (1, 25.0))
        self.assertEqual(result["by_bias_type"]["age"]["metric_score"], 50.0)
        self.assertEqual(result["by_bias_type"]["gender"]["metric_score"], 50.0)
        self.assertIsNone(result["by_bias_type"]["gender"]["anti_stereotype_score"])

    def test_stereoset_macro_icat(self) -> None:
        def row(kind: str, domain: str, target: str, stereo: float, anti: float, unrelated: float) -> dict[str, Any]:
            return {"kind": kind, "bias_type": domain, "target": target, "stereotype_score": stereo,
                    "anti_stereotype_score": anti, "unrelated_score": unrelated}

        rows = [
            row("intrasentence", "gender", "mother", -1, -2, -3),  # stereo wins, both related
            row("intrasentence", "gender", "mother", -2, -2, -1),  # tie -> anti; neither beats unrelated
            row("intrasentence", "race", "zorbian", -1, -3, -2),  # stereo wins; one related
        ]
        result = stereoset_metrics(rows)
        # mother: ss 50, lms 100 * 2 / 4 = 50; zorbian: ss 100, lms 50.
        gender = result["intrasentence"]["gender"]
        self.assertEqual((gender["count"], gender["ss_score"], gender["lm_score"]), (2, 50.0, 50.0))
        self.assertEqual(gender["icat_score"], 50.0)
        overall = result["intrasentence"]["overall"]
        self.assertEqual((overall["ss_score"], overall["lm_score"]), (75.0, 50.0))  # means over target terms
        self.assertEqual(overall["icat_score"], 50.0 * 25.0 / 50.0)  # from the means, not the mean of per-term ICATs
        self.assertEqual(result["overall"], overall)
        self.assertNotIn("intersentence", result)

    def test_winobias(self) -> None:
        rows = [{"type": 1, "pro_score": -1.0, "anti_score": -2.0}, {"type": 1, "pro_score": -2.0, "anti_score": -1.0},
                {"type": 1, "pro_score": -1.0, "anti_score": -3.0}, {"type": 2, "pro_score": -1.0, "anti_score": -1.0}]
        result = winobias_metrics(rows)
        self.assertAlmostEqual(result["type1"]["pro_preferred"], 200 / 3)
        self.assertAlmostEqual(result["type1"]["gap"], 100 / 3)
        self.assertEqual((result["type2"]["pro_preferred"], result["type2"]["ties"]), (0.0, 1))
        self.assertAlmostEqual(result["type1_minus_type2"], 200 / 3)
        self.assertEqual(result["overall"]["pairs"], 4)
        self.assertEqual(result["overall"]["pro_preferred"], 50.0)


if __name__ == "__main__":
    absltest.main()


class BiasScriptTest(parameterized.TestCase):
    """bias.py end to end on the generated fixtures, for every benchmark and model type."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        import bias_data
        from tests.fixtures import save_tiny_lm

        cls.tmp = tempfile.mkdtemp()
        cls.data = os.path.join(cls.tmp, "data")
        bias_data.write_bias_fixtures(cls.data)
        cls.models = {kind: save_tiny_lm(os.path.join(cls.tmp, kind), kind) for kind in TASKS}

    def run_bias(self, *argv: str) -> dict[str, Any]:
        import bias

        return bias.main(["--per_device_eval_batch_size", "16", "--disable_tqdm", "True", "--report_to", "none", *argv])

    @parameterized.product(benchmark=["crows_pairs", "stereoset", "winobias"], kind=["gpt2", "bert", "t5"])
    def test_scores_and_metrics(self, benchmark: str, kind: str) -> None:
        import bias_data
        from bias_scoring import ITEMS, metric_rows, score_items
        from metrics import BIAS_METRICS
        from transformers import AutoTokenizer

        out = os.path.join(self.tmp, "out", f"{benchmark}-{kind}")
        results = self.run_bias("--dataset_name", benchmark, "--dataset_dir", self.data, "--model_name_or_path", self.models[kind],
                                "--output_dir", out)
        self.assertEqual(results["model_task"], TASKS[kind])
        with gzip.open(os.path.join(out, "scores.jsonl.gz"), "rt") as f:
            rows = [json.loads(line) for line in f]
        with open(os.path.join(out, "results.json")) as f:
            saved = json.load(f)
        self.assertEqual(saved["metrics"], json.loads(json.dumps(results["metrics"])))
        self.assertEqual(saved["benchmark"], f"bias/{benchmark}")
        self.assertTrue(os.path.isfile(os.path.join(out, "bias_by_type.png")))
        # The metrics are the metric function of the written scores; the scores those of an independent rescoring.
        self.assertEqual(json.loads(json.dumps(BIAS_METRICS[benchmark][0](rows))), saved["metrics"])
        tokenizer = AutoTokenizer.from_pretrained(self.models[kind])
        from bias_scoring import Scorer
        from modeling import load_language_model

        model = load_language_model(self.models[kind], TASKS[kind]).eval()
        items = ITEMS[benchmark](bias_data.read_benchmark(benchmark, self.data, "test"), Scorer.of(tokenizer, TASKS[kind]))
        self.assertLen(rows, len(items))
        items = items[:: max(len(items) // 4, 1)]  # a few items, each row alone in its batch
        expected = metric_rows(benchmark, items, score_items(model, items, 1, pad_of(tokenizer), TASKS[kind]))
        rows = rows[:: max(len(rows) // 4, 1)]
        score_keys = [k for k in expected[0] if k.endswith("_score")]
        self.assertGreaterEqual(len(score_keys), 2)
        for got, want in zip(rows, expected):
            for key in score_keys:
                self.assertAlmostEqual(got[key], want[key], delta=1e-4)
            self.assertEqual({k: v for k, v in got.items() if not k.endswith("_score")},
                             json.loads(json.dumps({k: v for k, v in want.items() if not k.endswith("_score")})))
