"""Preemption-safe resume with a real signal, and the non-finite loss guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import torch
from absl.testing import absltest

from tests.fixtures import write_corpus

import pre_train_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40
TINY = [
    "--train_tokenizer_vocab_size", "200", "--d_model", "32", "--d_ff", "37", "--d_kv", "8", "--num_layers", "2",
    "--num_heads", "4", "--max_seq_length", "32", "--per_device_train_batch_size", "8", "--logging_steps", "1",
    "--save_strategy", "no", "--disable_tqdm", "True", "--report_to", "none", "--dataloader_num_workers", "0",
]


def parameters(run: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(run, "model.safetensors"))


def last_loss(run: str) -> float:
    with open(os.path.join(run, "trainer_state.json")) as f:
        return [e["loss"] for e in json.load(f)["log_history"] if "loss" in e][-1]


class PreemptionTest(absltest.TestCase):
    def test_interrupted_and_resumed_equals_straight(self) -> None:
        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 400)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

        def command(out: str, *extra: str) -> list[str]:
            return [sys.executable, os.path.join(ROOT, "pre_train_t5.py"), "--output_dir", out, "--train_file", corpus,
                    "--max_steps", str(STEPS), *TINY, *extra]

        straight = os.path.join(tmp, "straight")
        subprocess.run(command(straight), check=True, capture_output=True, cwd=ROOT, env=env, timeout=300)

        # Interrupted by a real SIGUSR1 (Slurm's warning signal) once about a third of the steps are logged.
        interrupted = os.path.join(tmp, "interrupted")
        proc = subprocess.Popen(command(interrupted), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        logged = 0
        for line in proc.stdout:
            logged += line.startswith("{'loss'")
            if logged == STEPS // 3:
                proc.send_signal(signal.SIGUSR1)
                break
        proc.stdout.read()
        self.assertEqual(proc.wait(timeout=300), 75)
        with open(os.path.join(interrupted, "PREEMPTED")) as f:
            stopped_at = int(f.read())
        self.assertBetween(stopped_at, STEPS // 3, STEPS - 1)
        self.assertTrue(os.path.isdir(os.path.join(interrupted, f"checkpoint-{stopped_at}")))
        self.assertFalse(os.path.exists(os.path.join(interrupted, "all_results.json")))

        resumed = subprocess.run(command(interrupted, "--resume_from_checkpoint", "auto"), capture_output=True, text=True,
                                 cwd=ROOT, env=env, timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
        self.assertFalse(os.path.exists(os.path.join(interrupted, "PREEMPTED")))
        self.assertAlmostEqual(last_loss(interrupted), last_loss(straight), places=6)
        a, b = parameters(straight), parameters(interrupted)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


class NonFiniteLossTest(absltest.TestCase):
    def test_stops_at_the_first_nan_naming_the_step_and_keeps_checkpoints(self) -> None:
        import modeling

        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 300)
        original = modeling.new_t5
        calls = {"n": 0}

        def poisoned(config):  # noqa: ANN001, ANN202
            model = original(config)

            def hook(module, inputs, output):  # noqa: ANN001, ANN202
                calls["n"] += 1
                return output * float("nan") if module.training and calls["n"] == 5 else output

            model.lm_head.register_forward_hook(hook)
            return model

        modeling.new_t5 = poisoned
        out = os.path.join(tmp, "run")
        try:
            with self.assertRaisesRegex(UserError, r"training stopped: the loss is nan at step 5; last good checkpoint: .*checkpoint-4"):
                pre_train_t5.main(["--output_dir", out, "--train_file", corpus, "--max_steps", "10", *TINY,
                                   "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "5"])
        finally:
            modeling.new_t5 = original
        self.assertTrue(os.path.isdir(os.path.join(out, "checkpoint-4")))
        self.assertFalse(os.path.exists(os.path.join(out, "all_results.json")))
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))


if __name__ == "__main__":
    absltest.main()
