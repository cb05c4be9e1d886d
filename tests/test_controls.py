"""Training controls (controls.py) on every script: early stopping with the original finetune-lm rule, frozen
parameters and rows that stay bit-identical under AdamW with weight decay and under T5's Adafactor, new tokens,
and the KL term as the scripts take it."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from typing import Any

import torch
from absl.testing import absltest, parameterized

from tests.fixtures import generated_corpus, pairs_mount, save_tiny_lm, save_tiny_t5, tiny_t5, tiny_tokenizer, write_corpus
from tests.term_job import collate, rows

QUIET = ["--disable_tqdm", "True", "--report_to", "none"]


class EarlyStoppingRuleTest(absltest.TestCase):
    def test_only_an_improvement_beyond_delta_counts(self) -> None:
        from controls import early_stopping_state

        losses = [1.0, 0.95, 0.96, 0.949, 0.94]
        self.assertEqual(early_stopping_state(losses[:2], 0.02, False), (0.95, 0, 1))
        self.assertEqual(early_stopping_state(losses[:4], 0.02, False), (0.95, 2, 1))  # 0.949 is better, not by 0.02
        self.assertEqual(early_stopping_state(losses, 0.0, False), (0.94, 0, 4))
        self.assertEqual(early_stopping_state([70.0, 71.0, 71.5, 80.0], 1.0, True), (80.0, 0, 3))
        self.assertEqual(early_stopping_state([70.0, 71.0, 70.5], 1.0, True), (70.0, 2, 0))


class ScriptedEvaluations:
    """A ToolkitTrainer whose evaluations report a scripted sequence of validation losses."""

    @staticmethod
    def run(out: str, losses: list[float], **flags: Any) -> Any:
        from trainer_arguments import ToolkitTrainingArguments
        from trainers import ToolkitTrainer

        script = iter(losses)

        class Scripted(ToolkitTrainer):
            def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
                metrics = {"eval_loss": next(script), "epoch": self.state.epoch}
                self.log(metrics)
                return metrics

        args = ToolkitTrainingArguments(
            output_dir=out, per_device_train_batch_size=4, num_train_epochs=len(losses) + 3, learning_rate=1e-2,
            eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="loss",
            greater_is_better=False, save_total_limit=1, report_to="none", disable_tqdm=True, seed=0, **flags)
        trainer = Scripted(model=tiny_t5(), args=args, train_dataset=rows(8), eval_dataset=rows(4), data_collator=collate,
                           processing_class=tiny_tokenizer())
        trainer.train()
        return trainer


class EarlyStoppingTest(parameterized.TestCase):
    @parameterized.parameters(
        # (min_epochs, epochs run, best epoch): 2 steps an epoch. 0.949 after 0.95 is no improvement at delta 0.02.
        (0, 4, 2),
        (5, 5, 2),
    )
    def test_stops_and_restores_by_the_rule(self, min_epochs: int, stopped: int, best: int) -> None:
        from safetensors.torch import load_file

        out = tempfile.mkdtemp()
        trainer = ScriptedEvaluations.run(out, [1.0, 0.95, 0.96, 0.949, 0.94, 0.9, 0.8], patience=2, delta=0.02, min_epochs=min_epochs)
        self.assertEqual(trainer.state.epoch, stopped)
        self.assertEqual(trainer.state.best_model_checkpoint, os.path.join(out, f"checkpoint-{2 * best}"))
        self.assertEqual(trainer.state.best_metric, 0.95)
        saved = load_file(os.path.join(trainer.state.best_model_checkpoint, "model.safetensors"))
        for name, param in trainer.model.named_parameters():  # the best model is the one in memory at the end
            self.assertTrue(torch.equal(param.detach(), saved[name]), name)

    def test_patience_needs_evaluations(self) -> None:
        from errors import UserError
        from trainer_arguments import ToolkitTrainingArguments
        from trainers import ToolkitTrainer

        args = ToolkitTrainingArguments(output_dir=tempfile.mkdtemp(), patience=2, report_to="none")
        with self.assertRaisesRegex(UserError, r"^--patience 2: early stopping needs evaluations; set --eval_strategy epoch"):
            ToolkitTrainer(model=tiny_t5(), args=args, train_dataset=rows(8), data_collator=collate)


class FreezingTest(parameterized.TestCase):
    def train(self, optim: str, **flags: Any) -> tuple[Any, Any]:
        from trainer_arguments import ToolkitTrainingArguments
        from trainers import ToolkitTrainer

        model = tiny_t5()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = ToolkitTrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, max_steps=6,
                                        learning_rate=3e-2, weight_decay=0.1, optim=optim, save_strategy="no",
                                        report_to="none", disable_tqdm=True, seed=0, **flags)
        trainer = ToolkitTrainer(model=model, args=args, train_dataset=rows(8), data_collator=collate, processing_class=tiny_tokenizer())
        trainer.train()
        return before, dict(trainer.model.named_parameters())

    @parameterized.parameters("adamw_torch", "adafactor")
    def test_frozen_rows_and_params_stay_bit_identical(self, optim: str) -> None:
        tokenizer = tiny_tokenizer()
        word = tokenizer("model", add_special_tokens=False)["input_ids"][0]
        before, after = self.train(optim, frozen_params=["shared.weight[5,17]", "encoder.block.0.*"], freeze_words=None)
        self.assertTrue(torch.equal(after["shared.weight"][[5, 17]], before["shared.weight"][[5, 17]]))
        self.assertFalse(torch.equal(after["shared.weight"], before["shared.weight"]))  # the other rows train
        frozen = [n for n in before if n.startswith("encoder.block.0.")]
        self.assertNotEqual(frozen, [])
        for n in frozen:
            self.assertTrue(torch.equal(after[n], before[n]), n)
        self.assertFalse(torch.equal(after["decoder.block.0.layer.0.SelfAttention.q.weight"],
                                     before["decoder.block.0.layer.0.SelfAttention.q.weight"]))
        # A word's rows, in both the input and the (untied) output embeddings.
        before, after = self.train(optim, freeze_words=["model"])
        for n in ("shared.weight", "lm_head.weight"):
            self.assertTrue(torch.equal(after[n][word], before[n][word]), n)
            self.assertFalse(torch.equal(after[n], before[n]), n)

    def test_unfrozen_words_are_all_that_trains(self) -> None:
        tokenizer = tiny_tokenizer()
        word = tokenizer("model", add_special_tokens=False)["input_ids"][0]
        before, after = self.train("adamw_torch", unfreeze_words=["model"])
        for n in before:
            if n in ("shared.weight", "lm_head.weight"):
                rest = [i for i in range(before[n].shape[0]) if i != word]
                self.assertTrue(torch.equal(after[n][rest], before[n][rest]), n)
                self.assertFalse(torch.equal(after[n][word], before[n][word]), n)
            else:
                self.assertTrue(torch.equal(after[n], before[n]), n)

    def test_mistakes_are_one_line(self) -> None:
        from errors import UserError

        with self.assertRaisesRegex(UserError, r"^--frozen_params 'decoder\.nothing\*': matches no parameter of the model"):
            self.train("adamw_torch", frozen_params=["decoder.nothing*"])
        with self.assertRaisesRegex(UserError, r"^--freeze_words 'qqzzxxv': must be a single known token"):
            self.train("adamw_torch", freeze_words=["qqzzxxv"])
        from trainer_arguments import ToolkitTrainingArguments

        with self.assertRaisesRegex(UserError, r"^--frozen_params and --unfrozen_params together"):
            ToolkitTrainingArguments(output_dir="x", frozen_params=["a"], unfrozen_params=["b"])
        # The KL data's preprocessing is checked with the other early checks, before any model loads.
        from arguments import EarlyTrainingFlags
        from controls import check_controls

        with self.assertRaisesRegex(UserError, r"^--kl_preprocessing_fn: unknown preprocessing function 'mask_all'"):
            check_controls(EarlyTrainingFlags(kl_dataset=["k.txt"], kl_preprocessing_fn="mask_all"))
        with self.assertRaisesRegex(UserError, r"^--kl_preprocessing_fn_kwargs: invalid JSON \(Expecting"):
            check_controls(EarlyTrainingFlags(kl_dataset=["k.txt"], kl_preprocessing_fn_kwargs="{mask_prop: 1"))


class NewTokensTest(absltest.TestCase):
    def test_rows_grow_only_when_outgrown_and_start_at_the_mean(self) -> None:
        from controls import add_new_tokens
        from modeling import new_t5
        from tests.fixtures import tiny_t5_config

        tokenizer = tiny_tokenizer().__class__.from_pretrained(save_tiny_t5(tempfile.mkdtemp()))
        size = len(tokenizer)
        spare = new_t5(tiny_t5_config(size + 8))  # spare rows, as T5 checkpoints have (32128 for 32100 tokens)
        mean = spare.get_input_embeddings().weight[:size].mean(0).detach().clone()
        ids = add_new_tokens(tokenizer, spare, ["zyxw", "the", "zyxw"])  # "the" is one token already ("▁the"): left alone
        self.assertEqual(ids, [size])
        self.assertEqual(spare.get_input_embeddings().weight.shape[0], size + 8)  # never shrunk
        for weight in (spare.get_input_embeddings().weight, spare.get_output_embeddings().weight):
            self.assertTrue(torch.allclose(weight[size], mean if weight is spare.get_input_embeddings().weight
                                           else weight[:size].mean(0)))
        tight = new_t5(tiny_t5_config(len(tokenizer)))
        add_new_tokens(tokenizer, tight, ["qwvu"])
        self.assertEqual(tight.get_input_embeddings().weight.shape[0], len(tokenizer))
        self.assertEqual(tokenizer.convert_ids_to_tokens(tokenizer("a zyxw b")["input_ids"]).count("zyxw"), 1)


class EveryScriptTest(parameterized.TestCase):
    """Each script takes the controls: the KL term is trained with and logged, frozen rows stay, new tokens
    are saved with the model, and early stopping stops."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.kl = os.path.join(cls.tmp, "kl.txt.gz")
        with gzip.open(cls.kl, "wt", encoding="utf-8") as f:
            f.write("\n".join(generated_corpus(30, seed=9)) + "\n")
        cls.corpus = write_corpus(os.path.join(cls.tmp, "corpus.txt"), 200)
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "t5"))

    def controls(self) -> list[str]:
        return ["--kl_dataset", self.kl, "--kl_examples_per_step", "4", "--kl_scaleby", "1.5", "--frozen_params", "shared.weight[3]",
                "--add_new_tokens", "qqnewtok", "--learning_rate", "1e-2"]

    def check(self, run_dir: str, model_dir: str | None = None) -> None:
        with open(os.path.join(run_dir, "trainer_state.json"), encoding="utf-8") as f:
            history = json.load(f)["log_history"]
        kl = [e["kl_loss"] for e in history if "kl_loss" in e]
        self.assertNotEqual(kl, [])
        self.assertGreater(max(kl), 0.0)
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        model_dir = model_dir or run_dir
        self.assertIn("qqnewtok", AutoTokenizer.from_pretrained(model_dir).get_vocab())
        weights = load_file(os.path.join(model_dir, "model.safetensors"))
        start = load_file(os.path.join(self.model, "model.safetensors"))
        self.assertTrue(torch.equal(weights["shared.weight"][3], start["shared.weight"][3]))
        self.assertFalse(torch.equal(weights["shared.weight"][4], start["shared.weight"][4]))

    def test_pre_train_t5(self) -> None:
        import pre_train_t5

        out = os.path.join(self.tmp, "pt")
        with contextlib.redirect_stdout(io.StringIO()):
            pre_train_t5.main(["--output_dir", out, "--model_name_or_path", self.model, "--train_file", self.corpus, "--max_steps", "4",
                               "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--logging_steps", "2",
                               "--save_strategy", "no", *self.controls(), *QUIET])
        self.check(out)

    def test_fine_tune_t5(self) -> None:
        import fine_tune_t5
        from examples import write_toy_benchmark

        glue = os.path.join(self.tmp, "glue")
        write_toy_benchmark(glue)
        out = os.path.join(self.tmp, "ft")
        with contextlib.redirect_stdout(io.StringIO()):
            fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.model, "--dataset_dir", glue,
                               "--output_dir", out, "--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "2",
                               "--max_train_samples", "32", "--max_eval_samples", "16", "--save_strategy", "no", *self.controls(), *QUIET])
        self.check(out)

    def test_seq2seq_and_clf(self) -> None:
        import clf
        import seq2seq

        mount = pairs_mount(8)
        shutil.rmtree(os.path.join(mount, "models", "tiny"))
        shutil.copytree(self.model, os.path.join(mount, "models", "tiny"))
        with contextlib.redirect_stdout(io.StringIO()):
            seq2seq.main(["--mount_dir", mount, "--model_init_name", "tiny", "--data_name", "pairs", "--training_run_name", "s2s",
                          "--max_steps", "4", "--train_batch_size", "4", "--logging_steps", "2", "--save_strategy", "no",
                          *self.controls(), *QUIET])
        self.check(os.path.join(mount, "models", "s2s"))
        with open(os.path.join(mount, "data", "yes.json"), "w", encoding="utf-8") as f:
            json.dump({"train": [{"input": f"sentence {i}", "target": i / 8} for i in range(8)], "eval": [{"input": "x", "target": 0.5}]}, f)
        with contextlib.redirect_stdout(io.StringIO()):
            clf.main(["--mount_dir", mount, "--model_pretrain_name", "tiny", "--data_name", "yes", "--training_run_name", "clf",
                      "--max_steps", "4", "--train_batch_size", "4", "--logging_steps", "2", "--save_strategy", "no",
                      "--yes_token", "terrific", "--no_token", "painful", *self.controls(), *QUIET])
        self.check(os.path.join(mount, "models", "clf"))

    def test_finetune_lm_with_early_stopping(self) -> None:
        import finetune_lm

        gpt2 = save_tiny_lm(os.path.join(self.tmp, "gpt2"), "gpt2")
        data = os.path.join(self.tmp, "lm")
        os.makedirs(data)
        lines = generated_corpus(40, seed=11)
        for name, part in (("train", lines[:32]), ("dev", lines[32:])):
            with gzip.open(os.path.join(data, f"{name}.txt.gz"), "wt", encoding="utf-8") as f:
                f.write("\n".join(part) + "\n")
        out = os.path.join(self.tmp, "lm_run")
        with contextlib.redirect_stdout(io.StringIO()):
            results = finetune_lm.main(["--model_name_or_path", gpt2, "--train_file", os.path.join(data, "train.txt.gz"),
                                        "--validation_file", os.path.join(data, "dev.txt.gz"), "--output_dir", out, "--epochs", "30",
                                        "--lr", "5e-2", "--per_device_train_batch_size", "16", "--patience", "1", "--delta", "10",
                                        "--kl_dataset", self.kl, "--kl_examples_per_step", "4", *QUIET])
        self.assertEqual(results["epoch"], 2.0)  # no validation loss improves by 10 nats: the second epoch stops it
        import csv

        with gzip.open(os.path.join(out, "metrics.csv.gz"), "rt", encoding="utf-8") as f:
            metrics = list(csv.DictReader(f))
        self.assertIn("KLBaselineLoss", metrics[0])  # the original's column name
        train_kl = [float(m["KLBaselineLoss"]) for m in metrics if m["dataset_type"] == "train"]
        self.assertEqual(train_kl[0], 0.0)  # the first step: the model is its base
        self.assertGreater(max(train_kl), 0.0)
        self.assertTrue(all(m["KLBaselineLoss"] == "" for m in metrics if m["dataset_type"] == "validation"))


if __name__ == "__main__":
    absltest.main()
