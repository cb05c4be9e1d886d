"""LoRA through peft (adapters.py): only the adapters train, the adapter reloads to the same evaluation, merged equals
unmerged, every script takes an adapter directory as its model, the flags' mistakes are one line; DDP and ZeRO-2."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile

import torch
from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_lm, save_tiny_t5, tiny_lm_tokenizer

import fine_tune_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--save_strategy", "no", "--per_device_eval_batch_size", "64"]
T5_LINEAR = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


def lora_size(model: torch.nn.Module, names: tuple[str, ...], r: int) -> int:
    """r * (in + out) summed over the linear layers whose last name is in `names`: the adapters' parameter count."""
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names)


class T5LoraTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        from examples import write_toy_benchmark

        cls.tmp = tempfile.mkdtemp()
        cls.base = save_tiny_t5(os.path.join(cls.tmp, "base"), d_model=64)
        cls.data = os.path.join(cls.tmp, "toy")
        write_toy_benchmark(cls.data)
        cls.adapter_dir = os.path.join(cls.tmp, "lora")
        cls.common = ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", cls.data, "--max_eval_samples", "64"] + QUIET
        with absltest.TestCase("__init__").assertLogs("adapters", logging.INFO) as logs:
            cls.results = fine_tune_t5.main(cls.common + [
                "--model_name_or_path", cls.base, "--output_dir", cls.adapter_dir, "--max_steps", "12", "--learning_rate", "1e-2",
                "--per_device_train_batch_size", "32", "--logging_steps", "3", "--lora_r", "4", "--lora_alpha", "8", "--merge_lora",
                "--push_to_hub_dry_run"])
        cls.logs = [r.getMessage() for r in logs.records]

    def test_the_log_prints_trainable_and_total_parameters(self) -> None:
        from modeling import load_model

        base = load_model(self.base)
        trainable = lora_size(base, T5_LINEAR, 4)
        total = sum(p.numel() for p in base.parameters()) + trainable
        self.assertIn(f"LoRA: trainable parameters {trainable:,} of {total:,} ({100 * trainable / total:.4f}%)", self.logs)

    def test_only_the_adapters_are_saved_and_only_they_changed(self) -> None:
        from safetensors.torch import load_file

        from adapters import is_peft_model
        from modeling import load_model

        self.assertTrue(os.path.isfile(os.path.join(self.adapter_dir, "adapter_config.json")))
        for absent in ("config.json", "model.safetensors"):
            self.assertFalse(os.path.exists(os.path.join(self.adapter_dir, absent)), absent)
        saved = load_file(os.path.join(self.adapter_dir, "adapter_model.safetensors"))
        self.assertTrue(saved and all(".lora_A." in k or ".lora_B." in k for k in saved), list(saved)[:5])
        self.assertTrue(any(".lora_B." in k and v.abs().max() > 0 for k, v in saved.items()))  # B starts at 0: trained
        with open(os.path.join(self.adapter_dir, "adapter_config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["base_model_name_or_path"], os.path.abspath(self.base))
        self.assertEqual((config["r"], config["lora_alpha"]), (4, 8))
        self.assertEqual(sorted(config["target_modules"]), sorted(["q", "k", "v", "o", "wi_0", "wi_1", "wo"]))  # gated T5: no wi
        adapted, original = load_model(self.adapter_dir), load_model(self.base)
        self.assertTrue(is_peft_model(adapted))
        base_weights = {k.replace(".base_layer", ""): v for k, v in adapted.get_base_model().state_dict().items() if "lora_" not in k}
        for name, value in original.state_dict().items():
            torch.testing.assert_close(base_weights[name], value, rtol=0, atol=0, msg=name)

    def test_the_saved_adapter_evaluates_to_the_same_loss(self) -> None:
        again = fine_tune_t5.main(self.common + ["--model_name_or_path", self.adapter_dir, "--no_train",
                                                 "--output_dir", os.path.join(self.tmp, "reload")])
        self.assertAlmostEqual(again["eval_loss"], self.results["eval_loss"], places=5)
        self.assertEqual(again["eval_accuracy"], self.results["eval_accuracy"])

    def test_training_lowered_the_loss(self) -> None:
        with open(os.path.join(self.adapter_dir, "trainer_state.json")) as f:
            losses = [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]
        self.assertLen(losses, 4)
        self.assertLess(losses[-1], losses[0])

    def test_merged_equals_unmerged(self) -> None:
        from modeling import load_model

        merged_dir = os.path.join(self.adapter_dir, "merged")
        self.assertTrue(os.path.isfile(os.path.join(merged_dir, "config.json")))
        self.assertTrue(os.path.isfile(os.path.join(merged_dir, "tokenizer.json")))
        merged, adapted = load_model(merged_dir).eval(), load_model(self.adapter_dir).eval()
        self.assertFalse(any("lora_" in name for name, _ in merged.named_parameters()))
        inputs = {"input_ids": torch.tensor([[5, 9, 14, 20, 1], [7, 8, 3, 1, 0]]), "attention_mask": torch.tensor([[1] * 5, [1] * 4 + [0]]),
                  "labels": torch.tensor([[11, 12, 1], [13, 1, -100]])}
        with torch.no_grad():
            a, b = merged(**inputs).logits, adapted(**inputs).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        with torch.no_grad(), adapted.disable_adapter():  # and the adapter does change the outputs
            self.assertGreater(float((adapted(**inputs).logits - b).abs().max()), 1e-4)

    def test_the_hub_gets_the_adapter_not_the_merged_model(self) -> None:
        hub = os.path.join(self.adapter_dir, "hub")
        self.assertEqual(sorted(os.listdir(hub)), ["README.md", "adapter_config.json", "adapter_model.safetensors", "all_results.json",
                                                   "loss_curve.png", "provenance.json", "tokenizer.json", "tokenizer_config.json"])
        with open(os.path.join(hub, "README.md"), encoding="utf-8") as f:
            card = f.read()
        self.assertTrue(card.startswith("---\nlibrary_name: peft\ntags:\n- t5-toolkit\n- fine_tune_t5\n- lora\n---\n"), card[:120])
        self.assertIn("(a LoRA adapter: load it with peft on that base model", card)
        self.assertIn("| lora_r | 4 |\n| lora_alpha | 8.0 |\n", card)

    def test_continues_training_an_adapter(self) -> None:
        more = os.path.join(self.tmp, "more")
        fine_tune_t5.main(self.common + ["--model_name_or_path", self.adapter_dir, "--output_dir", more, "--max_steps", "2",
                                         "--per_device_train_batch_size", "8"])
        with open(os.path.join(more, "adapter_config.json")) as f:
            self.assertEqual(json.load(f)["base_model_name_or_path"], os.path.abspath(self.base))
        self.assertFalse(os.path.exists(os.path.join(more, "config.json")))


class LoraFlagTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.base = save_tiny_t5(os.path.join(cls.tmp, "base"))
        adapter = os.path.join(cls.tmp, "adapter")
        os.makedirs(adapter)
        with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
            json.dump({"base_model_name_or_path": cls.base, "r": 4, "peft_type": "LORA"}, f)
        cls.adapter = adapter

    @parameterized.named_parameters(
        ("glob", ["--lora_r", "4", "--lora_target_modules", "*.q"], "--lora_target_modules '*.q': not a valid regular expression",
         "not a glob: write '.*\\.q'"),
        ("names_and_regex", ["--lora_r", "4", "--lora_target_modules", "q", ".*v"], "give module names (q v wo) or one regular expression", ""),
        ("rank_zero", ["--lora_r", "0"], "--lora_r 0: the adapters' rank must be at least 1", ""),
        ("alpha_without_rank", ["--lora_alpha", "16"], "--lora_alpha without --lora_r: LoRA is off", ""),
        ("freezing", ["--lora_r", "4", "--frozen_params", "shared.weight"], "--frozen_params with --lora_r", ""),
        ("merge_without_adapters", ["--merge_lora"], "--merge_lora without adapters", ""),
        ("fp16_still_refused", ["--lora_r", "4", "--fp16"], "--fp16", "or pass --allow_fp16 to force it"),
    )
    def test_one_line_error(self, extra: list[str], message: str, hint: str) -> None:
        out = os.path.join(self.tmp, "never")
        with self.assertRaises(UserError) as caught:
            fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.base,
                               "--output_dir", out] + extra + QUIET)
        self.assertIn(message, str(caught.exception))
        self.assertIn(hint, str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))
        self.assertFalse(os.path.exists(out))

    def test_new_adapters_on_an_adapter_directory(self) -> None:
        with self.assertRaisesRegex(UserError, "with the adapter directory .*: a run continues training its adapter"):
            fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.adapter,
                               "--output_dir", os.path.join(self.tmp, "never2"), "--lora_r", "4"] + QUIET)

    def test_targets_that_match_nothing_name_the_models_layers(self) -> None:
        from adapters import add_lora
        from modeling import load_model

        with self.assertRaisesRegex(UserError, "^--lora_target_modules query: matches no layer of this model; its linear layers are named "
                                               "k, lm_head, o, q, v, wi_0, wi_1, wo$"):
            add_lora(load_model(self.base), 4, None, 0.0, ["query"])


class LanguageModelLoraTest(absltest.TestCase):
    def test_finetune_lm_trains_a_gpt2_adapter_and_scores_with_it(self) -> None:
        import finetune_lm

        tmp = tempfile.mkdtemp()
        base = save_tiny_lm(os.path.join(tmp, "gpt2"), "gpt2")
        text = os.path.join(tmp, "train.txt")
        with open(text, "w") as f:
            f.write("\n".join(["the model reads the text", "a decoder predicts the next token"] * 16) + "\n")
        run = os.path.join(tmp, "run")
        finetune_lm.main(["--model_name_or_path", base, "--train_file", text, "--test_file", text, "--output_dir", run,
                          "--max_steps", "3", "--lora_r", "2", "--per_device_train_batch_size", "8", "--report_to", "none",
                          "--disable_tqdm", "True", "--bf16"])  # CPU bf16 autocast: adapters train in it too
        with open(os.path.join(run, "model", "adapter_config.json")) as f:  # finetune_lm.py saves its model in model/
            config = json.load(f)
        self.assertEqual((config["task_type"], config["target_modules"]), ("CAUSAL_LM", ["c_attn"]))  # peft's GPT-2 default
        scored = os.path.join(tmp, "scored")
        finetune_lm.main(["--model_name_or_path", os.path.join(run, "model"), "--test_file", text, "--output_dir", scored, "--report_to", "none",
                          "--disable_tqdm", "True"])
        import csv
        import gzip
        import math

        (name,) = [n for n in os.listdir(scored) if n.endswith("-test_results.csv.gz")]
        with gzip.open(os.path.join(scored, name), "rt", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(sum(r["item"] == "0" for r in rows), len(tiny_lm_tokenizer("gpt2")("the model reads the text")["input_ids"]))
        self.assertTrue(all(math.isfinite(float(r["surprisal"])) and float(r["surprisal"]) > 0 for r in rows))
        # bias.py takes the adapter directory as its model too (the same loader as every script).
        import bias
        import bias_data

        bias_data.write_bias_fixtures(os.path.join(tmp, "bias"))
        results = bias.main(["--dataset_name", "crows_pairs", "--dataset_dir", os.path.join(tmp, "bias"), "--model_name_or_path",
                             os.path.join(run, "model"), "--output_dir", os.path.join(tmp, "bias_out"), "--max_examples", "4",
                             "--disable_tqdm", "True"])
        self.assertEqual((results["model_task"], results["examples"]), ("lm", 4))


class DistributedLoraTest(absltest.TestCase):
    def launch(self, launcher: list[str], out: str, extra: list[str], **env: str) -> subprocess.CompletedProcess:
        from examples import write_toy_benchmark

        tmp = os.path.dirname(out)
        base = save_tiny_t5(os.path.join(tmp, "base"), d_model=64)
        write_toy_benchmark(os.path.join(tmp, "toy"), n_train=200, n_validation=32, n_test=8)
        proc = subprocess.run(
            launcher + [os.path.join(ROOT, "fine_tune_t5.py"), "--benchmark", "toy", "--dataset_name", "sentiment",
                        "--model_name_or_path", base, "--dataset_dir", os.path.join(tmp, "toy"), "--output_dir", out,
                        "--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "2", "--lora_r", "4"] + extra + QUIET,
            capture_output=True, text=True, cwd=ROOT, timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env})
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        self.assertTrue(os.path.isfile(os.path.join(out, "adapter_model.safetensors")))
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))
        return proc

    def test_two_processes(self) -> None:
        out = os.path.join(tempfile.mkdtemp(), "ddp")
        self.launch([os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", "29581"], out, [])
        with open(os.path.join(out, "all_results.json")) as f:
            self.assertAlmostEqual(json.load(f)["epoch"], 4 / 13, places=4)  # 200 examples in batches of 8 x 2 ranks: 13 a epoch

    def test_zero_stage3_trains_saves_and_merges(self) -> None:
        """ZeRO-3 partitions every model transformers loads in the process: the merge loads its whole copy outside it
        (a merge under ZeRO-3 once added a (64, 64) update to a weight of size 0)."""
        from modeling import load_model

        out = os.path.join(tempfile.mkdtemp(), "zero3")
        self.launch([os.path.join(BIN, "torchrun"), "--nproc_per_node", "1", "--master_port", "29583"], out,
                    ["--deepspeed", os.path.join(ROOT, "zero_stage3_config.json"), "--merge_lora"], DS_ACCELERATOR="cpu")
        merged, adapted = load_model(os.path.join(out, "merged")).eval(), load_model(out).eval()
        inputs = {"input_ids": torch.tensor([[5, 9, 14, 1]]), "labels": torch.tensor([[11, 1]])}
        with torch.no_grad():
            torch.testing.assert_close(merged(**inputs).logits, adapted(**inputs).logits, rtol=0, atol=1e-5)

    def test_zero_stage2_on_the_cpu(self) -> None:
        out = os.path.join(tempfile.mkdtemp(), "zero2")
        proc = self.launch([os.path.join(BIN, "torchrun"), "--nproc_per_node", "1", "--master_port", "29582"], out,
                           ["--deepspeed", os.path.join(ROOT, "zero_stage2_config.json")], DS_ACCELERATOR="cpu")
        self.assertIn("You are using ZeRO with an untested optimizer", proc.stdout + proc.stderr)  # the DeepSpeed engine ran


if __name__ == "__main__":
    absltest.main()
