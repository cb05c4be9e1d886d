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
from unittest import mock

import numpy as np
import torch
from absl.testing import absltest, parameterized

import bias_scoring
from errors import UserError
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

    @parameterized.parameters("gpt2", "bert", "t5")
    def test_intersentence_scores_the_sentence_after_its_context(self, kind: str) -> None:
        tokenizer, model = tiny_lm_tokenizer(kind), tiny_lm(kind).eval()
        context, sentence = "the model learns text.", "the decoder predicts tokens."
        text = f"{context} {sentence}"
        scoring = span_scoring(Scorer.of(tokenizer, TASKS[kind]), text, len(context) + 1, len(text))
        (got,) = score_sentences(model, TASKS[kind], [scoring], batch_size=4, pad_token_id=pad_of(tokenizer))
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        special = set(tokenizer.all_special_ids)
        inside = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > s and s >= len(context) and ids[i] not in special]
        self.assertEqual(tokenizer.decode([ids[i] for i in inside]).replace(" ", ""), sentence.replace(" ", ""))
        if kind == "gpt2":
            logprobs = causal_logprobs(model, [tokenizer.bos_token_id] + ids)
            expected = np.mean([logprobs[i] for i in inside])
        elif kind == "bert":
            expected = np.mean([masked_logprob(model, kind, tokenizer, ids, i) for i in inside])
        else:  # the continuation behind one sentinel: input "context <extra_id_0> </s>"
            first, second = tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"])
            inputs = ids[: inside[0]] + [first] + ids[inside[-1] + 1:]
            self.assertEqual(inputs[-2:], [first, tokenizer.eos_token_id])
            labels = [first] + [ids[i] for i in inside] + [second]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([inputs]), labels=torch.tensor([labels])).logits[0].double()
            expected = np.mean([float(torch.log_softmax(logits[k], -1)[labels[k]]) for k in range(1, len(labels) - 1)])
        self.assertAlmostEqual(got, expected, delta=2e-5)

    def test_filled_word_follows_the_official_word_index_rule(self) -> None:
        self.assertEqual(bias_scoring.filled_word_span("Many people are BLANK.", "Many people are zorbian."), (16, 23))
        self.assertEqual(bias_scoring.filled_word_span("The BLANK chef cooked.", "The quellan chef cooked."), (4, 11))
        with self.assertRaisesRegex(Exception, r"^no word of 'Short\.' at the position of BLANK in 'A long BLANK here\.'$"):
            bias_scoring.filled_word_span("A long BLANK here.", "Short.")
        # Punctuation inside the word stays (the release's dev set has such words); only what surrounds it goes.
        sentence = "The man is hard-working."
        start, end = bias_scoring.filled_word_span("The man is BLANK.", sentence)
        self.assertEqual(sentence[start:end], "hard-working")
        sentence = "It is \"mom's\" car."
        start, end = bias_scoring.filled_word_span("It is BLANK car.", sentence)
        self.assertEqual(sentence[start:end], "mom's")

    def test_antistereo_pairs_are_matched_less_first_as_metric_py(self) -> None:
        tokenizer = tiny_lm_tokenizer("bert")
        scorer = Scorer.of(tokenizer, "mlm")
        # Found by search: difflib shares different tokens of sent_more in the two orders for this pair.
        more, less = "tests tests when sentinel when sentinel tests", "tests sentinel tests when tests tests tests"
        record = {"sent_more": more, "sent_less": less, "stereo_antistereo": "antistereo", "bias_type": "gender"}
        (item,) = bias_scoring.crows_pairs_items([record], scorer)
        want_less, want_more = bias_scoring.pair_scorings(scorer, less, more)
        self.assertEqual(item.scorings["sent_more"].rows, want_more.rows)
        self.assertEqual(item.scorings["sent_less"].rows, want_less.rows)
        other_order, _ = bias_scoring.pair_scorings(scorer, more, less)
        self.assertNotEqual(item.scorings["sent_more"].rows, other_order.rows)  # the order matters for this pair
        (stereo,) = bias_scoring.crows_pairs_items([{**record, "stereo_antistereo": "stereo"}], scorer)
        self.assertEqual(stereo.scorings["sent_more"].rows, other_order.rows)


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



class BiasScriptTest(parameterized.TestCase):
    """bias.py end to end on the generated fixtures, for every benchmark and model type; a second run into the same
    dir replaces nothing; scores are fp32 unless --bf16; --mask_top_k too large for a model whose heads are known
    only once it loads fails before anything is written."""

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

    def test_a_second_run_takes_new_names_and_records_its_precision(self) -> None:
        out = os.path.join(self.tmp, "twice")
        argv = ("--dataset_name", "crows_pairs", "--dataset_dir", self.data, "--model_name_or_path", self.models["bert"],
                "--output_dir", out, "--max_examples", "4")
        first = self.run_bias(*argv)
        second = self.run_bias(*argv, "--seed", "7")
        self.assertEqual((first["provenance_file"], second["provenance_file"]), ("provenance.json", "provenance-1.json"))
        with open(os.path.join(out, "provenance.json")) as f:
            self.assertNotIn("7", [a for a in json.load(f)["command"] if a == "7"])  # the first run's, unchanged
        with open(os.path.join(out, "provenance-1.json")) as f:
            self.assertIn("--seed", json.load(f)["command"])
        self.assertEqual(first["precision"], "fp32")

    def test_mask_top_k_checked_once_the_model_loads(self) -> None:
        import controls

        out = os.path.join(self.tmp, "topk")
        with mock.patch.object(controls, "local_mask_shapes", return_value=None):  # as for a Hub name: unknown early
            with self.assertRaisesRegex(UserError, r"^--mask_top_k 100: the model has 8 heads$"):
                self.run_bias("--dataset_name", "crows_pairs", "--dataset_dir", self.data, "--model_name_or_path", self.models["bert"],
                              "--output_dir", out, "--head_importance", "--mask_top_k", "100")
        self.assertFalse(os.path.exists(out) and os.listdir(out), os.listdir(out) if os.path.exists(out) else None)


class HeadImportanceTest(absltest.TestCase):
    """--head_importance is the gradient of the bias objective; --mask_top_k re-scores without the top heads."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        import bias_data

        cls.tmp = tempfile.mkdtemp()
        bias_data.write_bias_fixtures(os.path.join(cls.tmp, "data"))
        cls.pairs = bias_data.read_crows_pairs(os.path.join(cls.tmp, "data", bias_data.CROWS_PAIRS_FILE))[:6]

    def test_gradient_equals_the_objectives_finite_difference(self) -> None:
        from heads import apply_head_mask, mask_shape, ones_masks

        tokenizer, model = tiny_lm_tokenizer("bert"), tiny_lm("bert").double().eval()
        items = bias_scoring.crows_pairs_items(self.pairs, Scorer.of(tokenizer, "mlm"))
        pairs = bias_scoring.preference_pairs("crows_pairs", items)
        shapes = mask_shape(model.config)
        masks = ones_masks(shapes, requires_grad=True)
        apply_head_mask(model, masks)
        objective = bias_scoring.backward_preference(model, "mlm", pairs, 5, tokenizer.pad_token_id)
        gradient = masks["encoder"].grad.numpy()
        self.assertEqual(gradient.shape, (2, 4))
        self.assertTrue(all(p.grad is None for p in model.parameters()))  # the model's own weights get none

        def objective_at(mask: np.ndarray) -> float:
            apply_head_mask(model, {"encoder": mask})
            scores = bias_scoring.score_items(model, items, 7, tokenizer.pad_token_id, "mlm")
            return float(np.mean([s["sent_more"] - s["sent_less"] for s in scores]))

        self.assertAlmostEqual(objective, objective_at(np.ones((2, 4))), delta=1e-9)
        eps = 1e-4
        for layer, head in ((0, 1), (1, 3)):
            up, down = np.ones((2, 4)), np.ones((2, 4))
            up[layer, head] += eps
            down[layer, head] -= eps
            difference = (objective_at(up) - objective_at(down)) / (2 * eps)
            self.assertLess(abs(gradient[layer, head] - difference), 1e-5 * max(1.0, abs(difference)))  # float32 mask grads

    def test_script_writes_importance_and_masks_the_top_k(self) -> None:
        import bias
        from heads import apply_head_mask, masks_without, top_heads
        from modeling import load_language_model
        from tests.fixtures import save_tiny_lm

        model_dir = save_tiny_lm(os.path.join(self.tmp, "bert"), "bert")
        out = os.path.join(self.tmp, "out")
        results = bias.main(["--dataset_name", "crows_pairs", "--dataset_dir", os.path.join(self.tmp, "data"), "--model_name_or_path",
                             model_dir, "--output_dir", out, "--head_importance", "--mask_top_k", "3", "--max_examples", "6",
                             "--disable_tqdm", "True", "--report_to", "none"])
        with np.load(os.path.join(out, "head_importance.npz")) as saved:
            importance = {k: saved[k] for k in saved.files}
        self.assertEqual(list(importance), ["encoder"])
        self.assertTrue(os.path.isfile(os.path.join(out, "head_importance_encoder.png")))
        heads = top_heads(importance, 3)
        self.assertEqual(results["mask_top_k"]["heads"], [list(h) for h in heads])
        flat = np.sort(importance["encoder"].ravel())[::-1]
        self.assertEqual(sorted(importance["encoder"][layer, head] for _, layer, head in heads), sorted(flat[:3]))
        # "after" is the metric of an independent scoring with those heads masked.
        tokenizer = tiny_lm_tokenizer("bert")
        model = load_language_model(model_dir, "mlm").eval()
        apply_head_mask(model, masks_without({"encoder": (2, 4)}, heads))
        items = bias_scoring.crows_pairs_items(self.pairs, Scorer.of(tokenizer, "mlm"))
        rows = bias_scoring.metric_rows("crows_pairs", items, bias_scoring.score_items(model, items, 4, tokenizer.pad_token_id, "mlm"))
        self.assertEqual(results["mask_top_k"]["after"], crows_pairs_metrics(rows)["metric_score"])
        with gzip.open(os.path.join(out, "scores.jsonl.gz"), "rt") as f:
            written = [json.loads(line) for line in f]
        for got, want in zip(written, rows):
            self.assertAlmostEqual(got["sent_more_score_masked"], want["sent_more_score"], delta=1e-4)
        self.assertEqual(results["mask_top_k"]["before"], results["metrics"]["metric_score"])
        self.assertIsInstance(results["bias_objective"], float)


class BiasRegistryTest(absltest.TestCase):
    """The bias benchmarks as registry tasks: the original's dataset classes, seeded, trained by fine_tune_t5.py."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        import bias_data

        cls.tmp = tempfile.mkdtemp()
        cls.data = os.path.join(cls.tmp, "data")
        bias_data.write_bias_fixtures(cls.data)
        cls.bias_data = bias_data

    def splits(self, task: str) -> Any:
        from tasks import get_task, load_task_splits

        return load_task_splits(get_task("bias", task), dataset_dir=self.data)

    def test_crows_pairs_pairs_in_a_seeded_order_80_20(self) -> None:
        pairs = {p["id"]: p for p in self.bias_data.find_crows_pairs(self.data)}
        splits = self.splits("crows_pairs")
        self.assertEqual((len(splits["train"]), len(splits["validation"])), (len(pairs) - round(0.2 * len(pairs)), round(0.2 * len(pairs))))
        rows = [row for split in splits.values() for row in split]
        self.assertEqual(sorted(r["idx"] for r in rows), sorted(pairs))
        for row in rows:
            pair = pairs[row["idx"]]
            expected = (pair["sent_more"], pair["sent_less"]) if row["label"] == 1 else (pair["sent_less"], pair["sent_more"])
            self.assertEqual((row["sentence1"], row["sentence2"]), expected)
        self.assertEqual({r["label"] for r in rows}, {0, 1})
        again = self.splits("crows_pairs")
        self.assertEqual(again["validation"].to_list(), splits["validation"].to_list())  # seeded

    def test_stereoset_intersentence_without_unrelated_70_30(self) -> None:
        examples = self.bias_data.find_stereoset(self.data)["intersentence"]
        expected = sorted((e["context"], s["sentence"], int(s["gold_label"] == "stereotype")) for e in examples for s in e["sentences"]
                          if s["gold_label"] != "unrelated")
        splits = self.splits("stereoset")
        rows = [row for split in splits.values() for row in split]
        self.assertEqual(sorted((r["context"], r["sentence"], r["label"]) for r in rows), expected)
        self.assertEqual(len(splits["validation"]), round(0.3 * len(expected)))

    def test_winobias_dev_trains_test_validates(self) -> None:
        splits = self.splits("winobias")
        for split, files in (("train", "dev"), ("validation", "test")):
            records = self.bias_data.read_winobias(self.data, files)
            self.assertEqual([(r["sentence"], r["label"]) for r in splits[split]],
                             [(r["sentence"], int(r["stereotype"] == "pro")) for r in records])

    def test_fine_tune_t5_trains_a_classifier_on_it(self) -> None:
        import fine_tune_t5
        from tests.fixtures import save_tiny_t5

        model = save_tiny_t5(os.path.join(self.tmp, "tiny"))
        results = fine_tune_t5.main(["--benchmark", "bias", "--dataset_name", "stereoset", "--dataset_dir", self.data,
                                     "--model_name_or_path", model, "--output_dir", os.path.join(self.tmp, "ft"), "--max_steps", "3",
                                     "--per_device_train_batch_size", "4", "--disable_tqdm", "True", "--report_to", "none",
                                     "--save_strategy", "no"])
        self.assertIn(results["eval_accuracy"], {100.0 * k / 5 for k in range(6)})  # 5 validation examples
        self.assertTrue(np.isfinite(results["train_loss"]))


class HeadMaskFlagTest(absltest.TestCase):
    """--head_mask on the other scripts: finetune_lm.py's test scoring and the Trainer of every training script."""

    def test_finetune_lm_scores_with_the_mask(self) -> None:
        import finetune_lm
        from tests.fixtures import save_tiny_lm

        tmp = tempfile.mkdtemp()
        model = save_tiny_lm(os.path.join(tmp, "gpt2"), "gpt2")
        data = os.path.join(tmp, "stimuli.txt")
        with open(data, "w") as f:
            f.write("the model learns small text quickly\nthe decoder predicts tokens\n")
        masks = {"ones": [[1, 1, 1, 1]] * 2, "zeros": [[0, 0, 0, 0], [1, 0.5, 1, 1]]}
        surprisals = {}
        for name, mask in [("none", None), *masks.items()]:
            argv = ["--model_name_or_path", model, "--test_file", data, "--output_dir", os.path.join(tmp, name), "--disable_tqdm", "True"]
            if mask is not None:
                with open(os.path.join(tmp, f"{name}.json"), "w") as f:
                    json.dump({"decoder": mask}, f)
                argv += ["--head_mask", os.path.join(tmp, f"{name}.json")]
            finetune_lm.main(argv + ["--report_to", "none"])
            with gzip.open(os.path.join(tmp, name, f"{model.replace('/', '-')}-test_results.csv.gz"), "rt") as f:
                import csv

                surprisals[name] = [float(r["surprisal"]) for r in csv.DictReader(f)]
        self.assertEqual(surprisals["ones"], surprisals["none"])
        self.assertNotEqual(surprisals["zeros"], surprisals["none"])
        # The masked values are the model's with the mask applied directly.
        from heads import apply_head_mask

        tokenizer, lm = tiny_lm_tokenizer("gpt2"), tiny_lm("gpt2").eval()
        apply_head_mask(lm, {"decoder": np.array(masks["zeros"])})
        ids = [tokenizer.bos_token_id] + tokenizer("the model learns small text quickly")["input_ids"]
        expected = [-lp / np.log(2) for lp in causal_logprobs(lm, ids)]
        np.testing.assert_allclose(surprisals["zeros"][: len(expected)], expected, atol=1e-4)

    def test_trainer_applies_it(self) -> None:
        from heads import mask_shape
        from trainer_arguments import ToolkitTrainingArguments
        from trainers import ToolkitTrainer

        tmp = tempfile.mkdtemp()
        model = tiny_lm("t5")
        shapes = mask_shape(model.config)
        path = os.path.join(tmp, "mask.npz")
        np.savez(path, cross=np.zeros(shapes["cross"]))
        batch = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "labels": torch.tensor([[8, 9, 1]])}
        with torch.no_grad():
            before = model(**batch).logits
        args = ToolkitTrainingArguments(output_dir=tmp, head_mask=path, report_to="none")
        trainer = ToolkitTrainer(model=model, args=args)
        with torch.no_grad():
            after = trainer.model(**batch).logits
        self.assertFalse(torch.allclose(before, after))
        encoder_out = trainer.model.encoder(input_ids=batch["input_ids"]).last_hidden_state
        self.assertTrue(torch.isfinite(encoder_out).all())
        model.decoder.block[0].layer[1].EncDecAttention.o.register_forward_hook(
            lambda module, args, output: self.assertTrue(torch.equal(output, torch.zeros_like(output))))
        with torch.no_grad():
            trainer.model(**batch)  # the cross-attention outputs are zero: every cross head masked


class OutputFormTest(absltest.TestCase):
    def test_print_mask_shape(self) -> None:
        import contextlib
        import io

        import bias
        from tests.fixtures import save_tiny_lm

        model = save_tiny_lm(os.path.join(tempfile.mkdtemp(), "t5"), "t5")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            bias.main(["--print_mask_shape", "--model_name_or_path", model])
        self.assertEqual(printed.getvalue(), '{"encoder": [2, 4], "decoder": [2, 4], "cross": [2, 4]}\n')

    def test_table(self) -> None:
        import bias

        metrics = winobias_metrics([{"type": 1, "pro_score": -1.0, "anti_score": -2.0}, {"type": 2, "pro_score": -1.0, "anti_score": -1.0}])
        self.assertEqual(bias.format_table("winobias", metrics).splitlines(), [
            "winobias",
            "              pairs  pro_preferred  anti_preferred      ties       gap  type1_minus_type2",
            "type1             1         100.00            0.00         0    100.00                  -",
            "type2             1           0.00            0.00         1      0.00                  -",
            "overall           2          50.00            0.00         1     50.00                  -",
            "summary           -              -               -         -         -             100.00",
        ])


if __name__ == "__main__":
    absltest.main()
