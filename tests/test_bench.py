"""The benchmarks run (tiny CPU smokes, no timing assertions) and the throughput one counts right.

    HF_HUB_OFFLINE=1 python -m pytest -q -p no:logging tests/test_bench.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import torch
from absl.testing import absltest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import pretrain_throughput  # noqa: E402


class StepFlopsTest(absltest.TestCase):
    def test_matches_torch_flop_counter_on_a_training_step(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode
        from transformers import T5Config, T5ForConditionalGeneration

        config = T5Config(vocab_size=320, d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=3,
                          feed_forward_proj="gated-gelu", dropout_rate=0.0, decoder_start_token_id=0)
        # Eager attention: transformers 5.23 runs T5's cross-attention (which has no position bias) through
        # SDPA, whose CPU kernel the FLOP counter does not count; the FLOPs are the same.
        config._attn_implementation = "eager"
        model = T5ForConditionalGeneration(config)
        batch, enc, dec = 3, 20, 7
        input_ids = torch.randint(0, 320, (batch, enc))
        labels = torch.randint(0, 320, (batch, dec))
        with FlopCounterMode(display=False) as counter:
            model(input_ids=input_ids, labels=labels).loss.backward()
        self.assertEqual(pretrain_throughput.step_flops(config, batch, enc, dec), counter.get_total_flops())


def run_bench(test: absltest.TestCase, script: str, argv: list[str], json_out: str, **env: str) -> tuple[dict, str]:
    """(the JSON report, stdout) of `python bench/<script> ARGV --json JSON_OUT`, offline."""
    proc = subprocess.run([sys.executable, f"bench/{script}", *argv, "--json", json_out], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    test.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(json_out, encoding="utf-8") as f:
        return json.load(f), proc.stdout


class SmokeTest(absltest.TestCase):
    def test_tiny_run_reports_every_variant_and_the_loops_agree(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "pretrain_throughput.py", [
                "--size", "tiny", "--steps", "2", "--warmup_steps", "1", "--repeats", "1", "--matmul_size", "256",
                "--variants", "c,a,b", "--workdir", tmp, "--cpu_bf16", "yes"], os.path.join(tmp, "report.json"), OMP_NUM_THREADS="1",
                # The recipe's flags are passed and recorded, but torch.compile runs eagerly: compiling took ~100 s of
                # this smoke test on a 2-core CPU, and the smoke test checks the plumbing, not the compiler.
                TORCHDYNAMO_DISABLE="1")
        self.assertEqual(report["baseline"], "c")
        variants = {v["variant"]: v for v in report["variants"]}
        self.assertEqual(list(variants), ["c", "a", "b"])
        self.assertEqual(variants["b"]["flags"], ["--bf16", "--torch_compile"])
        self.assertEqual([variants[n]["precision"] for n in "cab"], ["fp32", "fp32", "bf16"])
        for v in variants.values():
            self.assertLen(v["losses"], 3)
            self.assertGreater(v["input_tokens_per_s"], 0)
            self.assertAlmostEqual(v["samples_per_s"] * 512, v["input_tokens_per_s"], places=6)
        # The pipeline and the hand-written loop see the same weights, batches and noise: the same losses in
        # fp32 (up to float rounding: the pipeline sums the token losses, the model averages them), close
        # ones in bf16.
        self.assertLess(variants["a"]["max_abs_loss_diff_vs_baseline"], 1e-5)
        self.assertLess(variants["b"]["max_abs_loss_diff_vs_baseline"], 0.05)
        self.assertGreater(variants["c"]["losses"][0], 9.0)  # ~ln(32128) = 10.4 from a fresh init
        self.assertIn("(a) pipeline, defaults", stdout)


class CpuWithoutBf16PlanTest(absltest.TestCase):
    def test_bf16_variants_are_skipped_and_the_recipe_is_fp32(self) -> None:
        flags, skipped = pretrain_throughput.plan("cpu", ["c", "a", "b", "plain_bf16", "bf16", "compile"], bf16=False)
        self.assertEqual(flags, {"c": [], "a": [], "b": ["--torch_compile"], "compile": ["--torch_compile"]})
        self.assertEqual(sorted(skipped), ["bf16", "plain_bf16"])
        self.assertIn("no bf16 instructions", skipped["bf16"])

    def test_with_bf16_nothing_is_skipped(self) -> None:
        flags, skipped = pretrain_throughput.plan("cpu", ["c", "a", "b", "plain_bf16"], bf16=True)
        self.assertEqual(flags, {"c": [], "a": [], "b": ["--bf16", "--torch_compile"], "plain_bf16": []})
        self.assertEqual(skipped, {})
        flags, skipped = pretrain_throughput.plan("cuda", ["b", "bf16"], bf16=True)
        self.assertEqual(flags["b"][:1], ["--bf16"])
        self.assertEqual(skipped, {})

    def test_auto_follows_the_cpu_and_a_gpu_always_measures_bf16(self) -> None:
        from trainer_arguments import cpu_has_native_bf16

        self.assertEqual(pretrain_throughput.bf16_measured("cpu", "auto"), cpu_has_native_bf16())
        self.assertFalse(pretrain_throughput.bf16_measured("cpu", "no"))
        self.assertTrue(pretrain_throughput.bf16_measured("cpu", "yes"))
        self.assertTrue(pretrain_throughput.bf16_measured("cuda", "no"))

    def test_a_run_of_bf16_variants_alone_is_refused_with_the_reason(self) -> None:
        proc = subprocess.run([sys.executable, "bench/pretrain_throughput.py", "--size", "tiny", "--variants", "plain_bf16,bf16",
                               "--cpu_bf16", "no", "--workdir", "/nonexistent/never-made"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--- skipping plain_bf16: this CPU has no bf16 instructions", proc.stdout)
        self.assertIn("every variant asked for runs in bf16", proc.stderr)


class CollatorBenchSmokeTest(absltest.TestCase):
    def test_tiny_run_times_both_row_formats_and_names_the_pipeline_format(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "collator.py", ["--batch_size", "8", "--input_length", "64", "--repeats", "2",
                                                             "--warmup", "1"], os.path.join(tmp, "collator.json"))
        self.assertEqual(report["row_length"], 70)  # 64 corrupted inputs
        self.assertEqual(sorted(report["formats"]), ["lists", "numpy"])
        for figures in report["formats"].values():
            self.assertGreater(figures["speedup"], 0)
            self.assertGreater(figures["T5DataCollator_median_ms"], 0)
        self.assertEqual(report["pipeline_row_format"], "numpy")  # what corpus.tokenize_and_pack hands over
        self.assertIn("lists rows: T5DataCollator is", stdout)
        self.assertIn("numpy rows: T5DataCollator is", stdout)
        self.assertIn("pre_train_t5.py hands the collator numpy rows", stdout)


class SurprisalBenchSmokeTest(absltest.TestCase):
    def test_tiny_run_reports_ours_and_the_loop_and_they_agree(self) -> None:
        # No --minicons_dir: minicons is not a requirement, so the bench skips it (and says how to install it).
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "surprisal_throughput.py", ["--small", "--num_sentences", "12", "--batch_sizes", "4,6", "--repeats", "1"],
                                       os.path.join(tmp, "surprisal.json"))
        rows = [line.split()[0] for line in stdout.splitlines() if line.split()[:1] and line.split()[0].partition("@")[0] in ("ours", "loop", "minicons")]
        minicons = [name for name in rows if name.startswith("minicons")]
        self.assertEqual([name for name in rows if not name.startswith("minicons")], ["ours@4", "ours@6", "loop"])
        if not minicons:
            self.assertIn("pip install --no-deps --target /tmp/minicons minicons==0.3.39", stdout)
        printed = re.search(r"max \|ours@4 - loop\|: (\S+) bits over (\d+) tokens", stdout)
        self.assertIsNotNone(printed, stdout)
        self.assertLess(float(printed.group(1)), 1e-4)
        self.assertEqual(int(printed.group(2)), report["tokens"])
        self.assertGreater(report["tokens"], 12 * 5)  # at least 5 words a sentence
        methods = report["methods"]
        self.assertEqual(methods["loop"]["sentences_with_other_tokens"], 0)
        self.assertLess(methods["ours@6"]["max_abs_diff_bits_vs_ours"], 1e-4)
        self.assertGreater(methods["ours@4"]["tokens_per_s"], 0)
        # Work, as counted at the model's input: ours feeds length-sorted rows without their last token; the loop
        # every sentence whole, BOS included.
        for name in ("ours@4", "ours@6", "loop"):
            self.assertEqual(methods[name]["model_positions"], methods[name]["expected_positions"], name)
        self.assertEqual(methods["loop"]["model_positions"], report["tokens"] + 12)


class KLBenchSmokeTest(absltest.TestCase):
    def test_tiny_run_times_both_sides_and_the_term_is_on(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "kl_overhead.py", ["--small"], os.path.join(tmp, "kl.json"), OMP_NUM_THREADS="1")
        self.assertGreater(report["off_s"], 0.0)
        self.assertGreater(report["on_s"], 0.0)
        self.assertNotEqual(report["kl_loss_logged"], [])  # the "on" runs trained with the term
        self.assertIn("ratio on/off", stdout)


class BiasBenchSmokeTest(absltest.TestCase):
    def test_tiny_run_times_both_and_the_scores_agree(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "bias.py", ["--small", "--pairs", "6", "--repeats", "1"], os.path.join(tmp, "bias.json"))
        self.assertEqual(report["pairs"], 6)
        self.assertGreater(report["masked_copies"], 6 * 2 * 3)
        self.assertLess(report["max_abs_score_difference"], 1e-4)
        self.assertEqual(set(report["median_seconds"]), {"reference", "batched_all_positions", "ours"})
        self.assertLess(report["max_abs_score_difference_batched_all_positions"], 1e-4)
        self.assertIn("speedup", stdout)


class LoraMemoryBenchSmokeTest(absltest.TestCase):
    def test_tiny_run_reports_both_peaks_and_the_trainable_counts(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report, stdout = run_bench(self, "lora_memory.py", ["--small", "--optims", "adafactor", "--max_steps", "1",
                                                                 "--lora_r", "2", "--eval_samples", "4"], os.path.join(tmp, "lora.json"))
        full, lora = report["variants"]
        self.assertEqual((full["variant"], lora["variant"]), ("full_adafactor", "lora_adafactor"))
        self.assertEqual(full["trainable_parameters"], report["parameters"])
        self.assertLess(0, lora["trainable_parameters"])
        self.assertLess(lora["trainable_parameters"], report["parameters"] / 10)
        self.assertGreater(full["max_rss_mib"], 100)
        self.assertAlmostEqual(report["ratio_adafactor"], full["max_rss_mib"] / lora["max_rss_mib"])
        self.assertIn("full / LoRA", stdout)


if __name__ == "__main__":
    absltest.main()
