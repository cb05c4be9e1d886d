"""Preemption-safe resume with a real signal (also with DataLoader workers), atomic checkpoints that a
kill -9 mid-save cannot half write, and the non-finite loss guard."""

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


def pretrain_command(out: str, corpus: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "pre_train_t5.py"), "--output_dir", out, "--train_file", corpus, *TINY, *extra]


def run_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def assert_complete(test: absltest.TestCase, checkpoint: str, step: int) -> None:
    """A checkpoint a save finished: its trainer state at `step` and weights that load."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        test.assertEqual(json.load(f)["global_step"], step)
    test.assertNotEmpty(parameters(checkpoint))


def checkpoint_entries(out: str) -> list[str]:
    """Every entry of `out` that is or may become a checkpoint (finished or being written)."""
    return sorted(name for name in os.listdir(out) if "checkpoint" in name)


class CheckpointSafetyTest(absltest.TestCase):
    """Half-written checkpoints (kill -9 or a full disk during a save) never break `--resume_from_checkpoint auto`."""

    def test_resume_auto_skips_a_half_written_checkpoint_and_warns(self) -> None:
        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 300)
        out = os.path.join(tmp, "run")
        steps = ["--save_strategy", "steps", "--save_steps", "4"]
        subprocess.run(pretrain_command(out, corpus, "--max_steps", "8", *steps), check=True, capture_output=True,
                       cwd=ROOT, env=run_env(), timeout=300)
        # What a save killed while writing the weights left before saves were atomic: a truncated
        # model.safetensors and nothing after it (no optimizer, RNG or trainer state).
        broken = os.path.join(out, "checkpoint-8")
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            os.remove(os.path.join(broken, name))
        weights = os.path.join(broken, "model.safetensors")
        os.truncate(weights, os.path.getsize(weights) // 2)

        resumed = subprocess.run(pretrain_command(out, corpus, "--max_steps", "12", *steps, "--resume_from_checkpoint", "auto"),
                                 capture_output=True, text=True, cwd=ROOT, env=run_env(), timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
        self.assertRegex(resumed.stderr, r"incomplete checkpoint .*checkpoint-8")
        self.assertRegex(resumed.stdout, r"resume_from_checkpoint auto: .*checkpoint-4\n")
        for step in (4, 8, 12):  # checkpoint-8 saved again, whole
            assert_complete(self, os.path.join(out, f"checkpoint-{step}"), step)
        with open(os.path.join(out, "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["global_step"], 12)

    def test_a_save_out_of_disk_or_killed_leaves_no_checkpoint_and_resume_finishes(self) -> None:
        """The disk fills up during the save of checkpoint-8: one line, exit 2, no checkpoint-8. The rerun
        resumes from checkpoint-4 and is killed (-9) during the same save; the next one finishes."""
        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 300)
        out = os.path.join(tmp, "run")
        args = ["--max_steps", "12", "--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "2"]

        def failing(mode: str, *extra: str) -> subprocess.CompletedProcess:
            command = [sys.executable, os.path.join(ROOT, "tests", "fail_during_save.py"), mode, "8",
                       *pretrain_command(out, corpus, *args, *extra)[2:]]
            return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=run_env(), timeout=300)

        full = failing("disk_full")
        self.assertEqual(full.returncode, 2, full.stderr[-3000:])
        self.assertNotIn("Traceback", full.stderr)
        self.assertEqual([line for line in full.stderr.splitlines() if line.startswith("error: ")], full.stderr.splitlines()[-1:])
        self.assertRegex(full.stderr.splitlines()[-1], rf"^error: {out}: disk full while writing checkpoint-8 \([\d.]+ MiB free\); "
                         r"free space, then rerun with --resume_from_checkpoint auto \(the checkpoints saved before are intact\)$")
        self.assertEqual(checkpoint_entries(out), ["checkpoint-4"])  # the half-written save is gone, hidden dir and all
        assert_complete(self, os.path.join(out, "checkpoint-4"), 4)

        killed = failing("kill", "--resume_from_checkpoint", "auto")
        self.assertEqual(killed.returncode, -signal.SIGKILL, killed.stderr[-3000:])
        self.assertRegex(killed.stdout, r"resume_from_checkpoint auto: .*checkpoint-4\n")
        self.assertNotIn("checkpoint-8", os.listdir(out))  # only a hidden temporary dir, if anything
        self.assertEqual([name for name in os.listdir(out) if name.startswith("checkpoint-")], ["checkpoint-4"])
        assert_complete(self, os.path.join(out, "checkpoint-4"), 4)

        resumed = subprocess.run(pretrain_command(out, corpus, *args, "--resume_from_checkpoint", "auto"),
                                 capture_output=True, text=True, cwd=ROOT, env=run_env(), timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
        self.assertRegex(resumed.stdout, r"resume_from_checkpoint auto: .*checkpoint-4\n")
        # The temporary dir of the killed save is gone, and rotation (save_total_limit 2) kept the newest two.
        self.assertEqual(checkpoint_entries(out), ["checkpoint-12", "checkpoint-8"])
        assert_complete(self, os.path.join(out, "checkpoint-8"), 8)
        assert_complete(self, os.path.join(out, "checkpoint-12"), 12)


class DataLoaderWorkerPreemptionTest(absltest.TestCase):
    def test_sigterm_to_the_process_group_with_workers_checkpoints_exits_75_and_resumes(self) -> None:
        """Slurm signals every process of a step: DataLoader workers must outlive SIGTERM until the save. The
        resumed run ends too, though its persistent workers (which ignore SIGTERM) are alive at exit."""
        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 300)
        out = os.path.join(tmp, "run")
        workers = ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "True", "--eval_strategy", "steps",
                   "--eval_steps", "2"]
        proc = subprocess.Popen(pretrain_command(out, corpus, "--max_steps", "100000", *workers), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=run_env(), start_new_session=True)
        try:
            logged = 0
            for line in proc.stdout:
                logged += line.startswith("{'loss'")
                if logged == 5:  # training runs, the workers are up
                    os.killpg(proc.pid, signal.SIGTERM)
                    break
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self.assertEqual(logged, 5, stderr[-3000:])
        self.assertEqual(proc.returncode, 75, stderr[-3000:])
        self.assertNotIn("Traceback", stderr)
        with open(os.path.join(out, "PREEMPTED")) as f:
            stopped_at = int(f.read())
        self.assertGreaterEqual(stopped_at, 5)
        self.assertEqual(checkpoint_entries(out), [f"checkpoint-{stopped_at}"])
        assert_complete(self, os.path.join(out, f"checkpoint-{stopped_at}"), stopped_at)

        resumed = subprocess.run(pretrain_command(out, corpus, "--max_steps", str(stopped_at + 4), *workers,
                                                  "--resume_from_checkpoint", "auto"),
                                 capture_output=True, text=True, cwd=ROOT, env=run_env(), timeout=120)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
        self.assertNotIn("Traceback", resumed.stderr)
        with open(os.path.join(out, "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["global_step"], stopped_at + 4)


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
