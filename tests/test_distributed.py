"""Two processes on the CPU (gloo): torchrun and `accelerate launch --multi_gpu`, as users launch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests.fixtures import pairs_mount, save_tiny_t5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
QUIET = ["--disable_tqdm", "True", "--save_strategy", "no", "--per_device_eval_batch_size", "32"]


def launch(launcher: list[str], argv: list[str], **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        launcher + [os.path.join(ROOT, "fine_tune_t5.py")] + argv, capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env},
    )
    if proc.returncode != 0:
        raise AssertionError(f"{launcher} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def results(run: str) -> dict:
    name = "eval_results.json" if os.path.exists(os.path.join(run, "eval_results.json")) else "all_results.json"
    with open(os.path.join(run, name)) as f:
        return json.load(f)


def predictions(run: str) -> list[dict]:
    with open(os.path.join(run, "predictions_test.jsonl")) as f:
        return [json.loads(line) for line in f]


class TwoProcessTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        from examples import write_toy_benchmark

        cls.tmp = tempfile.mkdtemp()
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "tiny"), d_model=64)
        cls.data = os.path.join(cls.tmp, "toy")
        write_toy_benchmark(cls.data, n_train=400, n_validation=61, n_test=37)  # odd sizes: the sampler pads shards
        cls.trained = os.path.join(cls.tmp, "torchrun")
        cls.wandb_dir = os.path.join(cls.tmp, "wandb")
        os.makedirs(cls.wandb_dir)
        launch(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", "29531"],
            ["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", cls.model, "--dataset_dir", cls.data,
             "--output_dir", cls.trained, "--max_steps", "10", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
             "--logging_steps", "5", "--do_predict", "--report_to", "wandb"] + QUIET,
            WANDB_MODE="offline", WANDB_DIR=cls.wandb_dir, WANDB_SILENT="true",
        )

    def test_both_ranks_train(self) -> None:
        # 10 steps x 8 examples x 2 processes = 160 of 400 examples: epoch 0.4 (one process: 0.2).
        self.assertAlmostEqual(results(self.trained)["epoch"], 0.4, places=3)

    def test_predictions_hold_each_example_once(self) -> None:
        rows = predictions(self.trained)
        self.assertEqual([r["idx"] for r in rows], list(range(37)))
        with open(os.path.join(self.trained, "sentiment.tsv")) as f:
            self.assertEqual(len(f.read().splitlines()), 38)

    def test_only_rank_zero_logs_to_wandb(self) -> None:
        runs = [d for d in os.listdir(os.path.join(self.wandb_dir, "wandb")) if d.startswith("offline-run-")]
        self.assertLen(runs, 1)

    def test_one_and_two_processes_give_the_same_metrics(self) -> None:
        common = ["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.trained,
                  "--dataset_dir", self.data, "--no_train", "--do_predict", "--report_to", "none"] + QUIET
        one, two = os.path.join(self.tmp, "eval1"), os.path.join(self.tmp, "eval2")
        launch([sys.executable], common + ["--output_dir", one])
        launch([os.path.join(BIN, "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29532"],
               common + ["--output_dir", two])
        self.assertEqual(results(one)["eval_accuracy"], results(two)["eval_accuracy"])
        # The loss is a mean of per-batch means, which depend on how the examples are batched.
        self.assertLess(abs(results(one)["eval_loss"] - results(two)["eval_loss"]), 0.02 * results(one)["eval_loss"])
        self.assertEqual(predictions(one), predictions(two))


class RunNameTest(absltest.TestCase):
    def test_ranks_whose_clocks_straddle_a_second_share_one_run_dir(self) -> None:
        """Without --training_run_name the run dir is named after the clock; rank 0's name is broadcast."""
        mount = pairs_mount(8)
        proc = subprocess.run(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", "29533", os.path.join(ROOT, "tests", "run_name_job.py"),
             "seq2seq.py", "--mount_dir", mount, "--model_init_name", "tiny", "--data", "pairs", "--max_steps", "2",
             "--save_strategy", "steps", "--save_steps", "2", "--train_batch_size", "2", "--max_target_length", "4",
             "--disable_tqdm", "True", "--report_to", "none"],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        runs = sorted(set(os.listdir(os.path.join(mount, "models"))) - {"tiny"})
        self.assertEqual(runs, ["pairs-tiny-20261202-120000"])  # rank 0's clock; rank 1's would end in 120001
        checkpoint = os.path.join(mount, "models", runs[0], "checkpoint-2")
        self.assertTrue(os.path.isfile(os.path.join(checkpoint, "rng_state_1.pth")))  # rank 1 saved into the same run
        self.assertTrue(os.path.isfile(os.path.join(mount, "models", runs[0], "all_results.json")))


if __name__ == "__main__":
    absltest.main()
