"""The toolkit's Trainer base class: every script trains with it, and a loss term plugged into it changes
the gradient exactly as computed by hand, is logged under its own name (train and eval, one process and
two), and keeps gradient accumulation exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any
from unittest import mock

import numpy as np
from absl.testing import absltest

from tests.fixtures import save_tiny_t5, write_corpus
from tests.term_job import WEIGHT, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--save_strategy", "no"]


def flat(grads: dict[str, list[float]]) -> np.ndarray:
    return np.concatenate([np.asarray(grads[n]) for n in sorted(grads)])


class LossTermTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.one_by_eight = run(os.path.join(cls.tmp, "1x8"), 8, 1)
        cls.two_by_four = run(os.path.join(cls.tmp, "2x4"), 2, 4)
        cls.without = run(os.path.join(cls.tmp, "none"), 8, 1, with_term=False)

    def test_gradient_is_the_task_gradient_plus_the_terms_by_hand(self) -> None:
        # d/dp [w * sum (p - ref)^2] = 2 w (p - ref): what the term adds to the task gradient.
        added = flat(self.one_by_eight["grads"]) - flat(self.without["grads"])
        np.testing.assert_allclose(added, 2 * WEIGHT * flat(self.one_by_eight["reference_gap"]), rtol=1e-4, atol=1e-7)
        self.assertGreater(np.abs(added).max(), 1e-4)

    def test_two_by_four_equals_one_by_eight_with_the_term(self) -> None:
        np.testing.assert_allclose(flat(self.two_by_four["grads"]), flat(self.one_by_eight["grads"]), rtol=1e-4, atol=1e-7)
        for key in ("loss", "grad_norm", "l2_to_reference"):
            self.assertAlmostEqual(self.two_by_four["log"][key], self.one_by_eight["log"][key], places=5, msg=key)

    def test_logged_under_its_own_name_in_train_and_eval(self) -> None:
        log, metrics = self.one_by_eight["log"], self.one_by_eight["eval"]
        self.assertAlmostEqual(log["l2_to_reference"], self.one_by_eight["term_before"], places=6)
        self.assertAlmostEqual(log["loss"] - log["l2_to_reference"], self.without["log"]["loss"], places=5)
        self.assertAlmostEqual(metrics["eval_l2_to_reference"], self.one_by_eight["term_after"], places=5)
        self.assertNotIn("l2_to_reference", self.without["log"])

    def test_two_processes_log_the_same_term_and_gradient(self) -> None:
        """Under DDP the Trainer multiplies the task loss by the number of processes (average_tokens_across_devices);
        a term added before that would come out twice as large."""
        out = os.path.join(self.tmp, "ddp")
        proc = subprocess.run(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", "29541",
             os.path.join(ROOT, "tests", "term_job.py"), out, "4", "1"],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(os.path.join(out, "result.json")) as f:
            ddp = json.load(f)
        for key in ("l2_to_reference", "loss", "grad_norm"):
            self.assertAlmostEqual(ddp["log"][key], self.one_by_eight["log"][key], places=4, msg=key)
        np.testing.assert_allclose(flat(ddp["grads"]), flat(self.one_by_eight["grads"]), rtol=1e-3, atol=1e-6)
        self.assertAlmostEqual(ddp["eval"]["eval_l2_to_reference"], self.one_by_eight["eval"]["eval_l2_to_reference"], places=5)


    def test_deepspeed_zero2_logs_the_same_term_and_loss(self) -> None:
        out = os.path.join(self.tmp, "zero2")
        proc = subprocess.run(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "1", "--master_port", "29542",
             os.path.join(ROOT, "tests", "term_job.py"), out, "8", "1", "--deepspeed", os.path.join(ROOT, "zero_stage2_config.json")],
            capture_output=True, text=True, cwd=ROOT, timeout=900,
            env={**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(os.path.join(out, "result.json")) as f:
            zero2 = json.load(f)
        self.assertTrue(zero2["deepspeed"])
        for key in ("l2_to_reference", "loss"):
            self.assertAlmostEqual(zero2["log"][key], self.one_by_eight["log"][key], places=4, msg=key)
        self.assertAlmostEqual(zero2["eval"]["eval_l2_to_reference"], self.one_by_eight["eval"]["eval_l2_to_reference"], places=4)


class EveryScriptTest(absltest.TestCase):
    """Each script's Trainer is `trainers.ToolkitTrainer` or a subclass of it."""

    def test_the_four_scripts(self) -> None:
        import transformers

        import clf
        import fine_tune_t5
        import pre_train_t5
        import seq2seq
        from examples import write_toy_benchmark
        from trainers import ToolkitTrainer

        built: list[type] = []
        init = transformers.Trainer.__init__

        def record(self: Any, *args: Any, **kwargs: Any) -> None:
            built.append(type(self))
            init(self, *args, **kwargs)

        tmp = tempfile.mkdtemp()
        mount = os.path.join(tmp, "mount")
        save_tiny_t5(os.path.join(mount, "models", "tiny"))
        os.makedirs(os.path.join(mount, "data"))
        pairs = [{"prompt": f"sentence {i}", "completion": "positive"} for i in range(8)]
        scored = [{"input": f"sentence {i}", "target": i / 7} for i in range(8)]
        with open(os.path.join(mount, "data", "pairs.json"), "w") as f:
            json.dump({"train": pairs, "eval": pairs[:4]}, f)
        with open(os.path.join(mount, "data", "scored.json"), "w") as f:
            json.dump({"train": scored, "eval": scored[:4]}, f)
        write_toy_benchmark(os.path.join(tmp, "toy"), n_train=16, n_validation=8, n_test=4)
        step = ["--max_steps", "1", "--per_device_eval_batch_size", "8"] + QUIET
        runs = {
            "pre_train_t5": lambda: pre_train_t5.main([
                "--output_dir", os.path.join(tmp, "pt"), "--train_file", write_corpus(os.path.join(tmp, "c.txt"), 200),
                "--train_tokenizer_vocab_size", "120", "--d_model", "16", "--d_ff", "32", "--d_kv", "4", "--num_layers", "1",
                "--num_heads", "2", "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--max_eval_samples", "8"] + step),
            "fine_tune_t5": lambda: fine_tune_t5.main([
                "--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", os.path.join(tmp, "toy"),
                "--model_name_or_path", os.path.join(mount, "models", "tiny"), "--output_dir", os.path.join(tmp, "ft")] + step),
            "seq2seq": lambda: seq2seq.main(["--mount_dir", mount, "--model_init_name", "tiny", "--data", "pairs",
                                             "--training_run_name", "s2s", "--max_target_length", "4"] + step),
            "clf": lambda: clf.main(["--mount_dir", mount, "--model_pretrain_name", "tiny", "--data", "scored",
                                     "--training_run_name", "clf", "--yes_token", "movie", "--no_token", "film"] + step),
        }
        with mock.patch.object(transformers.Trainer, "__init__", record):
            for name, main in runs.items():
                before = len(built)
                main()
                self.assertLen(built, before + 1, name)
                self.assertTrue(issubclass(built[-1], ToolkitTrainer), f"{name} trains with {built[-1].__name__}")


if __name__ == "__main__":
    absltest.main()
