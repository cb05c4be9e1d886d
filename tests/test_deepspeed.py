"""DeepSpeed on the CPU: a tiny T5 pre-trains for a few steps under `torchrun` with the shipped ZeRO-2
config, and a T5 v1.1 checkpoint loaded under ZeRO-3 keeps its own output layer.

Few tests on purpose: the first run compiles DeepSpeed's CPU ops (~80 s), later runs take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests.fixtures import save_tiny_t5, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZeroStage2Test(absltest.TestCase):
    def test_pretrains_under_zero_stage2_on_the_cpu(self) -> None:
        tmp = tempfile.mkdtemp()
        corpus = write_corpus(os.path.join(tmp, "corpus.txt"), 300)
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


ZERO3_LOAD = """
import os, sys
sys.path.insert(0, {root!r})
os.environ.update(DS_ACCELERATOR="cpu", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29572")
import deepspeed, torch
deepspeed.init_distributed(dist_backend="gloo")
from transformers.integrations import HfDeepSpeedConfig
keep = HfDeepSpeedConfig({{"zero_optimization": {{"stage": 3}}, "train_micro_batch_size_per_gpu": 1}})
from modeling import _checkpoint_tensor, load_model, output_layer_is_tied
model = load_model({path!r})
saved = _checkpoint_tensor({path!r}, "lm_head.weight")
with deepspeed.zero.GatheredParameters([model.lm_head.weight, model.shared.weight]):
    print("RESULT", output_layer_is_tied(model), torch.equal(model.lm_head.weight.detach().cpu(), saved),
          torch.equal(model.shared.weight.detach().cpu(), saved))
"""


class ZeroStage3LoadTest(absltest.TestCase):
    def test_v1_1_checkpoint_keeps_its_output_layer(self) -> None:
        """transformers 5.23 ties lm_head to the embeddings when loading under ZeRO-3; load_model restores it."""
        path = save_tiny_t5(os.path.join(tempfile.mkdtemp(), "tiny"))
        proc = subprocess.run([sys.executable, "-c", ZERO3_LOAD.format(root=ROOT, path=path)], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
        self.assertEqual(result, "RESULT False True False")  # untied, the checkpoint's weights, not the embeddings


if __name__ == "__main__":
    absltest.main()
