"""DeepSpeed ZeRO-2 on the CPU: a tiny T5 pre-trains for a few steps under `torchrun` with the shipped config.

One test on purpose: the first run compiles DeepSpeed's CPU ops (~80 s), later runs take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests.fixtures import generated_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZeroStage2Test(absltest.TestCase):
    def test_pretrains_under_zero_stage2_on_the_cpu(self) -> None:
        tmp = tempfile.mkdtemp()
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("\n".join(generated_corpus(300)) + "\n")
        out = os.path.join(tmp, "run")
        proc = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "1", "--master_port", "29571",
             os.path.join(ROOT, "pre_train_t5.py"), "--deepspeed", os.path.join(ROOT, "zero_stage2_config.json"),
             "--output_dir", out, "--train_file", corpus, "--train_tokenizer_vocab_size", "200", "--d_model", "32",
             "--d_ff", "37", "--d_kv", "8", "--num_layers", "2", "--num_heads", "4", "--max_seq_length", "32",
             "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--max_steps", "12",
             "--logging_steps", "3", "--save_strategy", "no", "--disable_tqdm", "True", "--report_to", "none"],
            capture_output=True, text=True, cwd=ROOT, timeout=900,
            env={**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        self.assertIn("You are using ZeRO with an untested optimizer", proc.stdout + proc.stderr)  # the DeepSpeed engine ran
        with open(os.path.join(out, "trainer_state.json")) as f:
            losses = [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]
        self.assertLen(losses, 4)
        self.assertLess(losses[-1], losses[0])
        with open(os.path.join(out, "all_results.json")) as f:
            self.assertLess(json.load(f)["eval_loss"], losses[0])


if __name__ == "__main__":
    absltest.main()
