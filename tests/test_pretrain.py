"""pre_train_t5.py end to end on tiny generated corpora, its bad inputs, and exact gradient accumulation."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
from typing import Any
from unittest import mock

import numpy as np
import torch
from absl.testing import absltest, parameterized

from tests.fixtures import generated_corpus, tiny_t5, tiny_tokenizer

import pre_train_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--train_tokenizer_vocab_size", "200", "--d_model", "32", "--d_ff", "37", "--d_kv", "8",
    "--num_layers", "2", "--num_heads", "4", "--max_seq_length", "32",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
    "--save_strategy", "no", "--disable_tqdm", "True", "--report_to", "none",
]


def write_lines(path: str, lines: list[str]) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


class PretrainEndToEndTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.corpus = write_lines(os.path.join(cls.tmp, "corpus.txt"), generated_corpus(300))

    def test_trains_and_writes_every_output(self) -> None:
        out = os.path.join(self.tmp, "run")
        argv = ["--output_dir", out, "--train_file", self.corpus, "--max_steps", "60", "--logging_steps", "5",
                "--hub_token", "hf_abcdefghijklmnopqrstuvwxyz012345"] + TINY
        results = pre_train_t5.main(argv)

        losses = [e["loss"] for e in json.load(open(os.path.join(out, "trainer_state.json")))["log_history"] if "loss" in e]
        self.assertLen(losses, 12)
        self.assertTrue(all(math.isfinite(x) for x in losses))
        self.assertLess(abs(losses[0] - math.log(175)), 0.6)  # starts near ln(vocab): a sane initialisation
        self.assertLess(np.mean(losses[-3:]), 0.7 * losses[0])  # repeated data: loss falls fast (4.7 -> 2.9)
        self.assertLess(results["eval_loss"], 0.7 * losses[0])
        self.assertBetween(results["eval_token_accuracy"], 0.05, 1.0)

        for name in ("model.safetensors", "config.json", "tokenizer.json", "spiece.model", "loss_curve.png", "provenance.json"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        with open(os.path.join(out, "all_results.json")) as f:
            saved = json.load(f)
        self.assertAlmostEqual(saved["eval_loss"], results["eval_loss"], places=6)
        with open(os.path.join(out, "loss_curve.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        provenance = json.load(open(os.path.join(out, "provenance.json")))
        self.assertEqual(provenance["arguments"]["noise_density"], 0.15)
        self.assertEqual(provenance["arguments"]["train_file"], self.corpus)
        self.assertEqual(provenance["command"][0], os.path.basename(sys.argv[0]))
        self.assertIn("--max_steps", provenance["command"])
        self.assertEqual(provenance["packages"]["transformers"], __import__("transformers").__version__)
        for root, _, files in os.walk(out):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    self.assertNotIn(b"hf_abcdefghijklmnopqrstuvwxyz012345", f.read(), name)

        # The saved model and tokenizer continue pre-training (dropout override reaches the modules).
        from modeling import load_model, load_tokenizer

        more = os.path.join(self.tmp, "continued")
        pre_train_t5.main(["--output_dir", more, "--model_name_or_path", out, "--train_file", self.corpus,
                           "--max_steps", "3", "--dropout_rate", "0.2"] + TINY)
        continued = load_model(more)
        self.assertAlmostEqual(continued.config.dropout_rate, 0.2)
        self.assertEqual(continued.config.d_model, 32)
        self.assertEqual(load_tokenizer(more)("model learns").input_ids, load_tokenizer(out)("model learns").input_ids)

    def test_refuses_to_train_into_a_finished_run(self) -> None:
        out = os.path.join(self.tmp, "finished")
        pre_train_t5.main(["--output_dir", out, "--train_file", self.corpus, "--max_steps", "2"] + TINY)
        before = open(os.path.join(out, "all_results.json")).read()
        with self.assertRaisesRegex(UserError, "holds a finished run"):
            pre_train_t5.main(["--output_dir", out, "--train_file", self.corpus, "--max_steps", "2"] + TINY)
        self.assertEqual(open(os.path.join(out, "all_results.json")).read(), before)
        evaluated = pre_train_t5.main(["--output_dir", out, "--model_name_or_path", out, "--train_file", self.corpus, "--no_train"] + TINY)
        self.assertEqual(open(os.path.join(out, "all_results.json")).read(), before)  # evaluation-only: beside it
        with open(os.path.join(out, "eval_results.json")) as f:
            self.assertAlmostEqual(json.load(f)["eval_loss"], evaluated["eval_loss"])
        pre_train_t5.main(["--output_dir", out, "--train_file", self.corpus, "--max_steps", "2", "--overwrite_output_dir"] + TINY)

    def test_data_dir_jsonl_gz_and_streaming(self) -> None:
        data_dir = os.path.join(self.tmp, "dir")
        os.makedirs(data_dir)
        write_lines(os.path.join(data_dir, "train.txt.gz"), generated_corpus(200, seed=1))
        with open(os.path.join(data_dir, "dev.jsonl"), "w") as f:  # a different kind of file: refused
            f.write(json.dumps({"text": "x"}) + "\n")
        with self.assertRaisesRegex(UserError, "same kind of file"):
            pre_train_t5.main(["--output_dir", os.path.join(self.tmp, "d0"), "--data_dir", data_dir, "--max_steps", "2"] + TINY)
        os.remove(os.path.join(data_dir, "dev.jsonl"))
        write_lines(os.path.join(data_dir, "dev.txt"), generated_corpus(60, seed=2))
        results = pre_train_t5.main(["--output_dir", os.path.join(self.tmp, "d1"), "--data_dir", data_dir, "--max_steps", "2"] + TINY)
        self.assertTrue(math.isfinite(results["eval_loss"]))

        jsonl = os.path.join(self.tmp, "corpus.jsonl")
        with open(jsonl, "w") as f:
            for line in generated_corpus(200, seed=3):
                f.write(json.dumps({"text": line, "source": "gen"}) + "\n")
        results = pre_train_t5.main(["--output_dir", os.path.join(self.tmp, "s"), "--train_file", jsonl, "--streaming",
                                     "--max_steps", "3", "--max_eval_samples", "8"] + TINY)
        self.assertTrue(math.isfinite(results["eval_loss"]))

    def test_config_file_and_wandb_agent_argument(self) -> None:
        config = os.path.join(self.tmp, "config.yaml")
        with open(config, "w") as f:
            f.write(f"train_file: {self.corpus}\nlearning_rate: 5e-3\nmax_steps: 50\nnoise_density: 0.3\n")
        args = pre_train_t5.parse_args(
            pre_train_t5.ARGUMENTS,
            ["--config", config, "--max_steps", "4", "--output_dir", "x", "--_wandb=foo"],
        )
        model_args, data_args, training_args = args
        self.assertEqual(training_args.learning_rate, 5e-3)  # "5e-3" in YAML is a string; it still parses
        self.assertEqual(training_args.max_steps, 4)  # the command line overrides the file
        self.assertEqual(data_args.noise_density, 0.3)
        self.assertEqual(training_args.optim, "adafactor")  # pre-training defaults
        self.assertEqual(training_args.lr_scheduler_type, "inverse_sqrt")
        self.assertFalse(training_args.bf16)  # auto: fp32 on a CPU
        self.assertEqual(training_args.precision, "fp32")

    def test_reports_to_wandb_offline_and_tensorboard(self) -> None:
        wandb_dir = os.path.join(self.tmp, "wandb")
        os.makedirs(wandb_dir)
        out = os.path.join(self.tmp, "reported")
        fake_key = "0123456789abcdef0123456789abcdefwandbkey"  # a fake W&B API key: must appear in no output
        env = {"WANDB_MODE": "offline", "WANDB_DIR": wandb_dir, "WANDB_SILENT": "true", "WANDB_API_KEY": fake_key}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            argv = ["--output_dir", out, "--train_file", self.corpus, "--max_steps", "2", "--logging_steps", "1",
                    "--hub-token", "hf_wandbleakcheck0123456789abcdef"] + TINY
            saved_argv = list(sys.argv)
            sys.argv[:] = ["pre_train_t5.py"] + argv  # W&B records the process's command line
            try:
                pre_train_t5.main(argv + ["--report_to", "wandb,tensorboard"])
            finally:
                sys.argv[:] = saved_argv
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k)
                else:
                    os.environ[k] = v
        runs = [d for d in os.listdir(os.path.join(wandb_dir, "wandb")) if d.startswith("offline-run-")]
        self.assertLen(runs, 1)
        events = [f for _, _, files in os.walk(out) for f in files if f.startswith("events.out.tfevents")]
        self.assertNotEmpty(events)
        for directory in (wandb_dir, out):  # the dash form of the flag too, in every file either writes
            for root, _, files in os.walk(directory):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        content = f.read()
                        self.assertNotIn(b"wandbleakcheck", content, os.path.join(root, name))
                        self.assertNotIn(fake_key.encode(), content, os.path.join(root, name))

    def test_config_name_builds_a_fresh_model_of_that_shape(self) -> None:
        from modeling import load_model

        source = os.path.join(self.tmp, "shape")
        tiny_t5(seed=1, d_model=48, d_kv=12).save_pretrained(source)
        out = os.path.join(self.tmp, "from-config")
        pre_train_t5.main(["--output_dir", out, "--config_name", source, "--tokenizer_name", self.tokenizer_dir(),
                           "--train_file", self.corpus, "--max_steps", "2"] + TINY)
        model = load_model(out)
        self.assertEqual(model.config.d_model, 48)
        self.assertEqual(model.config.dropout_rate, 0.0)

    def tokenizer_dir(self) -> str:
        from modeling import save_tokenizer

        path = os.path.join(self.tmp, "tokenizer")
        if not os.path.isdir(path):
            save_tokenizer(tiny_tokenizer(), path)
        return path

    def test_cpu_bf16_autocast_trains_and_warns_on_a_cpu_without_bf16_instructions(self) -> None:
        import trainer_arguments

        with mock.patch.object(trainer_arguments, "cpu_has_native_bf16", return_value=False), \
                self.assertLogs("trainer_arguments", level="WARNING") as logs:
            results = pre_train_t5.main(["--output_dir", os.path.join(self.tmp, "bf16"), "--train_file", self.corpus,
                                         "--max_steps", "3", "--bf16"] + TINY)
        self.assertTrue(math.isfinite(results["train_loss"]))
        self.assertEqual([record.getMessage() for record in logs.records], [trainer_arguments.CPU_BF16_ADVICE])
        self.assertIn("about 50x slower than fp32", trainer_arguments.CPU_BF16_ADVICE)


class CpuBf16DetectionTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("avx512_bf16_flag", "fpu avx2 avx512f avx512_bf16", True),
        ("amx_bf16_flag", "fpu avx2 amx_bf16 amx_tile", True),
        ("avx512_without_bf16", "fpu avx2 avx512f avx512bw avx512_vnni", False),
        ("avx2_only", "fpu sse4_2 avx2 fma", False),
    )
    def test_cpu_flags_when_torch_probes_say_no(self, flags: str, expected: bool) -> None:
        from trainer_arguments import cpu_has_native_bf16

        with tempfile.TemporaryDirectory() as tmp:
            cpuinfo = write_lines(os.path.join(tmp, "cpuinfo"), ["processor\t: 0", "model name\t: Some CPU", f"flags\t\t: {flags}"])
            with mock.patch.object(torch.cpu, "_is_avx512_bf16_supported", return_value=False), \
                    mock.patch.object(torch.cpu, "_is_amx_tile_supported", return_value=False):
                self.assertEqual(cpu_has_native_bf16(cpuinfo), expected)
            with mock.patch.object(torch.cpu, "_is_amx_tile_supported", return_value=True):
                self.assertTrue(cpu_has_native_bf16(cpuinfo))  # torch's probe is enough

    def test_warns_only_for_cpu_bf16_on_the_main_process(self) -> None:
        import types

        import trainer_arguments

        def warned(native: bool, **args: Any) -> bool:
            with mock.patch.object(trainer_arguments, "cpu_has_native_bf16", return_value=native):
                return trainer_arguments.warn_about_cpu_bf16(types.SimpleNamespace(**args))

        self.assertTrue(warned(False, bf16=True, use_cpu=True, should_log=True))
        self.assertFalse(warned(True, bf16=True, use_cpu=True, should_log=True))  # bf16 instructions: fine
        self.assertFalse(warned(False, bf16=False, use_cpu=True, should_log=True))  # fp32
        self.assertFalse(warned(False, bf16=True, use_cpu=False, should_log=True))  # a GPU run
        self.assertFalse(warned(False, bf16=True, use_cpu=True, should_log=False))  # other ranks stay quiet


class BadInputTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.good = write_lines(os.path.join(cls.tmp, "good.txt"), generated_corpus(100))
        cls.empty = write_lines(os.path.join(cls.tmp, "empty.txt"), ["", "   "])
        cls.short = write_lines(os.path.join(cls.tmp, "short.txt"), ["just a few words here."])
        cls.latin1 = os.path.join(cls.tmp, "latin1.txt")
        with open(cls.latin1, "wb") as f:
            f.write("caf\u00e9 au lait\nna\u00efve\n".encode("latin-1"))
        cls.bad_jsonl = os.path.join(cls.tmp, "bad.jsonl")
        with open(cls.bad_jsonl, "w") as f:
            f.write('{"text": "fine"}\n{"txt": "no text field"}\n')
        cls.a_file = write_lines(os.path.join(cls.tmp, "a_file"), ["x"])

    def cases(self) -> dict:
        t = self.tmp
        return {
            "missing": (["--train_file", os.path.join(t, "nope.txt")], r"--train_file .*nope\.txt: no such file"),
            "empty": (["--train_file", self.empty], r"empty\.txt: the file holds no text"),
            "not_utf8": (["--train_file", self.latin1], r"latin1\.txt: not UTF-8 text: byte 0xe9 at offset 3 \(line 1\)"),
            "jsonl_field": (["--train_file", self.bad_jsonl], r"bad\.jsonl: line 2: .*\"text\" field"),
            "too_short": (["--train_file", self.short], r"short\.txt: the training text is shorter than one row of \d+ tokens"),
            "unknown_model": (["--train_file", self.good, "--model_name_or_path", "no-such-org/no-such-t5"], r"--model_name_or_path 'no-such-org/no-such-t5': not a local directory, and not in the Hub cache with the Hub off"),
            "streaming_no_steps": (["--train_file", self.good, "--streaming", "--max_steps", "-1"], r"--streaming needs --max_steps"),
            "streaming_all_eval": (["--train_file", self.good, "--streaming"], r"good\.txt: no training rows left after holding out 61 rows"),
            "fp16": (["--train_file", self.good, "--fp16"], r"--fp16: T5's activations overflow float16"),
            "below_file": (["--train_file", self.good], r"is a file, not a directory"),
            "unknown_flag": (["--train_file", self.good, "--no_such_flag", "1"], r"^unknown flag --no_such_flag$"),
            "density": (["--train_file", self.good, "--noise_density", "1.5"], r"--noise_density 1.5: must lie strictly between 0 and 1"),
            "config_not_utf8": (["--train_file", self.good, "--config", self.latin1], r"latin1\.txt: not UTF-8 text \(byte 0xe9 at offset 3, line 1\)"),
            "resume_missing": (["--train_file", self.good, "--resume_from_checkpoint", os.path.join(t, "no-ckpt")], r"--resume_from_checkpoint .*no-ckpt: no such checkpoint directory"),
            "model_dir_empty": (["--train_file", self.good, "--model_name_or_path", t], r"--model_name_or_path '\S+': the directory holds no config\.json; give a saved model's directory or a Hub name"),
        }

    @parameterized.parameters(
        "missing", "empty", "not_utf8", "jsonl_field", "too_short", "unknown_model", "streaming_no_steps", "streaming_all_eval", "fp16",
        "below_file", "unknown_flag", "density", "config_not_utf8", "resume_missing", "model_dir_empty",
    )
    def test_one_line_error_and_no_output(self, case: str) -> None:
        argv, pattern = self.cases()[case]
        out = os.path.join(self.a_file, "run") if case == "below_file" else os.path.join(self.tmp, "out-" + case)
        with self.assertRaisesRegex(UserError, pattern):
            pre_train_t5.main(["--output_dir", out, "--max_steps", "2"] + argv + TINY)
        self.assertFalse(os.path.exists(out), "a failed run must leave no output directory")

    def test_wandb_without_a_key_is_refused_before_anything_is_written(self) -> None:
        out = os.path.join(self.tmp, "wandb-no-key")
        saved = {k: os.environ.pop(k, None) for k in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
        os.environ["NETRC"] = os.path.join(self.tmp, "no-netrc")
        try:
            with self.assertRaisesRegex(UserError, r"--report_to wandb: no W&B API key; .*WANDB_MODE=offline"):
                pre_train_t5.main(["--output_dir", out, "--train_file", self.good, "--max_steps", "2"] + TINY + ["--report_to", "wandb"])
        finally:
            os.environ.pop("NETRC")
            os.environ.update({k: v for k, v in saved.items() if v is not None})
        self.assertFalse(os.path.exists(out))

    def test_user_error_is_one_line_on_stderr_as_a_user_sees_it(self) -> None:
        out = os.path.join(self.tmp, "cli-out")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "pre_train_t5.py"), "--output_dir", out, "--train_file", self.latin1],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        )
        self.assertEqual(proc.returncode, 2)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        self.assertEqual(lines, [f"error: --train_file {self.latin1}: not UTF-8 text: byte 0xe9 at offset 3 (line 1); re-encode the file as UTF-8"])
        self.assertFalse(os.path.exists(out))


class GradientAccumulationTest(absltest.TestCase):
    """k micro-batches must give the loss and gradient of one batch k times larger, token-weighted."""

    def run_one_step(self, batch_size: int, accumulation: int, use_fix: bool) -> tuple[dict, dict[str, torch.Tensor]]:
        from transformers import Seq2SeqTrainer, TrainerCallback

        from trainer_arguments import ToolkitTrainingArguments
        from trainers import ToolkitTrainer

        rng = np.random.default_rng(0)
        vocab = len(tiny_tokenizer())
        rows = []
        for i in range(8):  # label lengths differ, so token weighting matters
            n = 3 + 2 * i
            labels = rng.integers(3, vocab - 100, size=n).tolist() + [1]
            rows.append({"input_ids": rng.integers(3, vocab - 100, size=12).tolist() + [1], "labels": labels})

        def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
            width = max(len(r["labels"]) for r in batch)
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
            decoder_input_ids = torch.cat([torch.zeros(len(batch), 1, dtype=torch.long), labels[:, :-1].clamp(min=0)], dim=1)
            return {"input_ids": torch.tensor([r["input_ids"] for r in batch]), "labels": labels, "decoder_input_ids": decoder_input_ids}

        grads: dict[str, torch.Tensor] = {}

        class Capture(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
                for name, p in model.named_parameters():
                    grads[name] = p.grad.detach().clone()

        with tempfile.TemporaryDirectory() as out:
            args = ToolkitTrainingArguments(
                output_dir=out, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                max_steps=1, learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
                max_grad_norm=0.0, disable_tqdm=True, seed=0,
            )
            trainer = (ToolkitTrainer if use_fix else Seq2SeqTrainer)(
                model=tiny_t5(seed=0), args=args, train_dataset=rows, data_collator=collate, callbacks=[Capture()],
            )
            trainer.train()
            logged = next(e for e in trainer.state.log_history if "loss" in e)
        return logged, grads

    def test_two_by_four_equals_one_by_eight(self) -> None:
        big_log, big = self.run_one_step(8, 1, use_fix=True)
        small_log, small = self.run_one_step(2, 4, use_fix=True)
        self.assertAlmostEqual(small_log["loss"], big_log["loss"], places=4)
        self.assertAlmostEqual(small_log["grad_norm"], big_log["grad_norm"], places=4)
        self.assertIn("lm_head.weight", big)
        for name in big:
            torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6, msg=name)

    def test_the_fix_is_needed(self) -> None:
        """With transformers' own Trainer and loss, 5.23 scales T5's accumulated gradient wrongly."""
        big_log, _ = self.run_one_step(8, 1, use_fix=False)
        small_log, _ = self.run_one_step(2, 4, use_fix=False)
        self.assertGreater(small_log["loss"] / big_log["loss"], 2.0)
        self.assertGreater(small_log["grad_norm"] / big_log["grad_norm"], 2.0)

    def test_loss_equals_hand_computed_token_mean(self) -> None:
        from losses import token_weighted_cross_entropy

        logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
        labels = torch.tensor([[0, 1], [2, -100]])
        expected = (
            -math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.e / (math.e + 2)) - math.log(math.exp(3) / (math.exp(3) + 2))
        )
        self.assertAlmostEqual(token_weighted_cross_entropy({"logits": logits}, labels).item(), expected / 3, places=5)
        self.assertAlmostEqual(token_weighted_cross_entropy({"logits": logits}, labels, num_items_in_batch=6).item(), expected / 6, places=5)


class ModelingTest(absltest.TestCase):
    def test_from_scratch_v1_1_has_its_own_output_layer_and_a_sane_first_loss(self) -> None:
        from modeling import fit_embeddings_to_tokenizer, load_model, output_layer_is_tied

        model = tiny_t5(seed=0)
        self.assertFalse(output_layer_is_tied(model))
        self.assertFalse(model.config.scale_decoder_outputs)
        vocab = model.config.vocab_size
        ids = torch.randint(3, vocab, (4, 10), generator=torch.Generator().manual_seed(0))
        loss = model(input_ids=ids, labels=ids).loss.item()
        self.assertLess(abs(loss - math.log(vocab)), 1.0)  # ~ln(V) at init, not tens of nats

        with tempfile.TemporaryDirectory() as out:
            model.save_pretrained(out)
            reloaded = load_model(out)
            self.assertFalse(output_layer_is_tied(reloaded))
            torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)

        class Bigger:
            def __len__(self) -> int:
                return vocab + 7

        head = model.lm_head.weight.detach().clone()
        fit_embeddings_to_tokenizer(model, Bigger())
        self.assertFalse(output_layer_is_tied(model))  # transformers' resize alone would tie it
        self.assertEqual(tuple(model.lm_head.weight.shape), (vocab + 7, 32))
        torch.testing.assert_close(model.lm_head.weight[:vocab], head)
        fit_embeddings_to_tokenizer(model, tiny_tokenizer())  # never shrinks
        self.assertEqual(model.shared.weight.shape[0], vocab + 7)


class OptimizerTest(parameterized.TestCase):
    @parameterized.parameters((["--optim", "adafactor"], True), (["--optim", "adafactor", "--no_adafactor_scale_parameter"], False))
    def test_adafactor_is_t5s_with_parameter_scaling(self, flags: list[str], scaled: bool) -> None:
        from transformers.optimization import Adafactor

        from arguments import parse_args
        from optim import T5Adafactor
        from trainers import ToolkitTrainer

        with tempfile.TemporaryDirectory() as out:
            (args,) = parse_args(("ToolkitTrainingArguments",), ["--output_dir", out, "--learning_rate", "0.01"] + flags)
            trainer = ToolkitTrainer(model=tiny_t5(), args=args)
            optimizer = trainer.create_optimizer()
        self.assertIsInstance(optimizer, T5Adafactor if scaled else Adafactor)
        group = optimizer.param_groups[0]
        self.assertEqual((group["scale_parameter"], group["relative_step"], group["lr"]), (scaled, False, 0.01))

    @parameterized.named_parameters(
        ("t5", dict(lr=1e-2, scale_parameter=True, relative_step=False, warmup_init=False)),
        ("clipping_bites", dict(lr=1e-2, scale_parameter=True, relative_step=False, warmup_init=False, clip_threshold=0.01)),
        ("first_moment_and_decay", dict(lr=1e-3, scale_parameter=False, relative_step=False, beta1=0.9, weight_decay=0.1)),
        ("relative_step", dict(lr=None, scale_parameter=True, relative_step=True, warmup_init=False)),
    )
    def test_fast_adafactor_matches_transformers(self, options: dict) -> None:
        from transformers.optimization import Adafactor

        from optim import T5Adafactor

        torch.manual_seed(0)
        shapes = [(24, 40), (40, 24), (3, 8, 5), (40,), (1,)]  # matrices (factored), a 3-d tensor, vectors
        start = [torch.randn(shape) for shape in shapes]
        runs = {}
        for cls in (Adafactor, T5Adafactor):
            params = [torch.nn.Parameter(t.clone()) for t in start]
            optimizer = cls(params, **options)
            generator = torch.Generator().manual_seed(1)
            for _ in range(5):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=generator) * 3
                optimizer.step()
            runs[cls.__name__] = (params, optimizer.state_dict()["state"])
        (ref, ref_state), (fast, fast_state) = runs["Adafactor"], runs["T5Adafactor"]
        for r, f, s in zip(ref, fast, start):
            self.assertFalse(torch.equal(r, s))  # the parameters moved
            torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-6)
        for i in ref_state:
            self.assertEqual(sorted(ref_state[i]), sorted(fast_state[i]))
            for key, value in ref_state[i].items():
                torch.testing.assert_close(torch.as_tensor(fast_state[i][key]).float(), torch.as_tensor(value).float(), rtol=1e-5, atol=1e-7)


class TokenizerTest(absltest.TestCase):
    def test_trained_tokenizer_matches_sentencepiece_and_round_trips(self) -> None:
        import sentencepiece as spm

        from modeling import save_tokenizer, train_tokenizer
        from transformers import AutoTokenizer

        tokenizer = train_tokenizer(generated_corpus(300), vocab_size=120, seed=0)
        n = len(tokenizer)
        self.assertEqual(tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>", "<extra_id_99>"]), [n - 1, n - 2, n - 100])
        self.assertEqual((tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id), (0, 1, 2))
        text = "the model predicts missing spans of words."
        with tempfile.TemporaryDirectory() as out:
            save_tokenizer(tokenizer, out)
            processor = spm.SentencePieceProcessor(model_file=os.path.join(out, "spiece.model"))
            self.assertEqual(tokenizer(text).input_ids, processor.encode(text) + [1])
            reloaded = AutoTokenizer.from_pretrained(out)
            self.assertEqual(reloaded(text).input_ids, tokenizer(text).input_ids)
            self.assertEqual(len(reloaded), n)
        self.assertEqual(tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True), text)
        again = train_tokenizer(generated_corpus(300), vocab_size=120, seed=0)
        self.assertEqual(again(text).input_ids, tokenizer(text).input_ids)  # deterministic: every rank trains the same


class LongDocumentTest(absltest.TestCase):
    """A corpus that is one long line (a text dump without newlines): tokenized in pieces cut before spaces,
    with the tokens of the whole line and one </s> at its end, in bounded memory; before, one call on the
    whole line (a 50 MB line: 7.4 GB, 3 min with the progress bar at 0/1). SentencePiece skips lines over
    4192 bytes, so the tokenizer trained on such a corpus had nothing to learn from (a traceback)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.lines = generated_corpus(28_000)
        cls.text = " ".join(cls.lines)  # about 2.5 MB

    def test_split_at_spaces(self) -> None:
        from corpus import split_at_spaces

        self.assertEqual(split_at_spaces("ab cd  ef gh", 6), ["ab cd", "  ef", " gh"])  # a run of spaces opens a piece
        self.assertEqual(split_at_spaces("abcdefgh ij", 4), ["abcd", "efgh", " ij"])  # no space in reach: cut at the limit
        pieces = split_at_spaces(self.text, 10_000)
        self.assertEqual("".join(pieces), self.text)
        self.assertTrue(all(len(p) <= 10_000 for p in pieces))
        self.assertTrue(all(p.startswith(" ") and not p[1].isspace() for p in pieces[1:]))

    def test_one_line_is_packed_in_pieces_as_the_whole_line(self) -> None:
        import contextlib

        from corpus import DOCUMENT_PIECE_CHARS, CorpusFiles, load_raw_corpus, tokenize_and_pack

        tokenizer = tiny_tokenizer()
        seen: list[int] = []

        class Spy:  # what the tokenizer is given
            eos_token_id = tokenizer.eos_token_id

            def __call__(self, texts: list[str], **kwargs: object) -> dict:
                seen.extend(len(t) for t in texts)
                return tokenizer(texts, **kwargs)

        path = write_lines(os.path.join(self.tmp, "one_line.txt"), [self.text])
        raw = load_raw_corpus(CorpusFiles(path), None, None, "text", False, cache_dir=os.path.join(self.tmp, "cache"))
        rows = tokenize_and_pack(raw, Spy(), 39, "text", None, lambda desc="": contextlib.nullcontext())["train"]
        self.assertLessEqual(max(seen), DOCUMENT_PIECE_CHARS)
        self.assertGreater(len(seen), len(self.text) // DOCUMENT_PIECE_CHARS)
        # The same words tokenized line by line, joined, one </s> at the end: T5's tokenizer never joins
        # words across a space, so this is what one call on the whole line gives.
        ids = [i for line in tokenizer(self.lines, add_special_tokens=False)["input_ids"] for i in line] + [tokenizer.eos_token_id]
        expected = np.array(ids[: len(ids) // 39 * 39]).reshape(-1, 39)
        np.testing.assert_array_equal(rows[:]["input_ids"], expected)

    def test_pre_trains_on_a_single_line_corpus(self) -> None:
        from transformers import AutoTokenizer

        path = write_lines(os.path.join(self.tmp, "short_line.txt"), [self.text[:60_000]])
        out = os.path.join(self.tmp, "run")
        results = pre_train_t5.main(["--output_dir", out, "--train_file", path, "--max_steps", "2"] + TINY)
        self.assertTrue(math.isfinite(results["eval_loss"]))
        self.assertGreater(len(AutoTokenizer.from_pretrained(out)), 150)  # pieces learned from the line


if __name__ == "__main__":
    absltest.main()
