"""Guards that keep one run from destroying another's results, run as a user runs the scripts: one run
per output dir (a lock), never training into the starting model's folder, no model dir without a
tokenizer, result files readable by collaborators, valid JSON whatever the user's fields hold."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest, parameterized

from tests.fixtures import pairs_mount, save_tiny_t5, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
TINY_PRETRAIN = ["--train_tokenizer_vocab_size", "120", "--d_model", "16", "--d_ff", "32", "--d_kv", "4", "--num_layers", "1",
                 "--num_heads", "2", "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--max_eval_samples", "8",
                 "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"]
HOLD = "import sys, time; from outputs import RunLock\nwith RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)"


def script(name: str, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *argv], capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=timeout)


def one_error_line(test: absltest.TestCase, proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    test.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    test.assertLen(lines, 1, proc.stderr[-2000:])
    test.assertTrue(lines[0].startswith("error: "), lines[0])
    return lines[0].removeprefix("error: ")


class LockTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.corpus = write_corpus(os.path.join(cls.tmp, "corpus.txt"), 200)
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "tiny"))

    def hold(self, directory: str) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", HOLD, directory], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
        self.addCleanup(holder.kill)
        self.assertEqual(holder.stdout.readline().strip(), "locked")
        return holder

    def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holder_frees_it(self) -> None:
        out = os.path.join(self.tmp, "held")
        holder = self.hold(out)
        for argv in (["--train_file", self.corpus], ["--model_name_or_path", self.model, "--no_train"]):  # training, evaluation-only
            message = one_error_line(self, script("pre_train_t5.py", "--output_dir", out, *argv, *TINY_PRETRAIN))
            self.assertRegex(message, rf"^{out}: another run is using this output dir \(host \S+ pid {holder.pid} since [\d-]+ [\d:]+\)")
        self.assertEqual(os.listdir(out), [".lock"])  # the refused runs wrote nothing
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        from outputs import RunLock

        with RunLock(out):  # a killed run's lock frees itself
            with open(os.path.join(out, ".lock")) as f:
                self.assertIn(f"pid {os.getpid()} ", f.read())

    def test_two_real_runs_into_one_dir(self) -> None:
        out = os.path.join(self.tmp, "two")
        first = subprocess.Popen([sys.executable, os.path.join(ROOT, "pre_train_t5.py"), "--output_dir", out, "--train_file", self.corpus,
                                  "--max_steps", "5", "--seed", "1", *TINY_PRETRAIN], cwd=ROOT, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not (os.path.exists(os.path.join(out, ".lock")) and os.path.getsize(os.path.join(out, ".lock"))) and time.time() < deadline:
            time.sleep(0.2)
        second = script("pre_train_t5.py", "--output_dir", out, "--train_file", self.corpus, "--max_steps", "2", "--seed", "2", *TINY_PRETRAIN)
        self.assertIn(f"pid {first.pid} ", one_error_line(self, second))
        _, stderr = first.communicate(timeout=300)
        self.assertEqual(first.returncode, 0, stderr[-2000:])
        with open(os.path.join(out, "all_results.json")) as f:
            self.assertEqual(json.load(f)["epoch"] > 0, True)
        with open(os.path.join(out, "provenance.json")) as f:
            self.assertEqual(json.load(f)["arguments"]["seed"], 1)  # the first run's, whole

    def test_an_empty_dir_made_for_a_failed_run_is_removed(self) -> None:
        out = os.path.join(self.tmp, "failed")
        # Passes the early checks, fails after the lock: the corpus is shorter than one row.
        short = os.path.join(self.tmp, "short.txt")
        with open(short, "w") as f:
            f.write("a few words.\n")
        proc = script("pre_train_t5.py", "--output_dir", out, "--train_file", short, *TINY_PRETRAIN)
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        self.assertIn("shorter than one row", proc.stderr.splitlines()[-1])  # after the datasets progress bars
        self.assertFalse(os.path.exists(out))


class ModelFolderTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.mount = os.path.join(cls.tmp, "mount")
        cls.model = save_tiny_t5(os.path.join(cls.mount, "models", "base"))
        cls.no_tokenizer = os.path.join(cls.mount, "models", "bare")
        os.makedirs(cls.no_tokenizer)
        with open(os.path.join(cls.model, "config.json")) as src, open(os.path.join(cls.no_tokenizer, "config.json"), "w") as dst:
            dst.write(src.read())
        os.makedirs(os.path.join(cls.mount, "data"))
        with open(os.path.join(cls.mount, "data", "d.json"), "w") as f:
            json.dump({"train": [{"prompt": "a", "completion": "b", "input": "a", "target": 0.5}],
                       "eval": [{"prompt": "a", "completion": "b", "input": "a", "target": 0.5}]}, f)
        cls.toy = os.path.join(cls.tmp, "toy")
        from examples import write_toy_benchmark

        write_toy_benchmark(cls.toy, n_train=8, n_validation=4, n_test=2)

    def snapshot(self) -> dict[str, bytes]:
        return {name: open(os.path.join(self.model, name), "rb").read() for name in sorted(os.listdir(self.model))}

    @parameterized.named_parameters(
        ("fine_tune_same_dir", "fine_tune_t5.py", ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", "{toy}",
                                                   "--model_name_or_path", "{model}", "--output_dir", "{model}"], r"^--output_dir \S+: is the starting model's folder"),
        ("fine_tune_inside", "fine_tune_t5.py", ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", "{toy}",
                                                 "--model_name_or_path", "{model}", "--output_dir", "{model}/sub"], r"^--output_dir \S+/sub: is the starting model's folder"),
        ("pre_train_same_dir", "pre_train_t5.py", ["--model_name_or_path", "{model}", "--output_dir", "{model}/."], r"^--output_dir \S+: is the starting model's folder"),
        ("seq2seq_same_name", "seq2seq.py", ["--mount_dir", "{mount}", "--model_init_name", "base", "--training_run_name", "base", "--data", "d"],
         r"^--training_run_name \S+/models/base: is the starting model's folder \(--model_init_name"),
        ("clf_same_name", "clf.py", ["--mount_dir", "{mount}", "--model_pretrain_name", "base", "--training_run_name", "base", "--data", "d"],
         r"^--training_run_name \S+/models/base: is the starting model's folder \(--model_pretrain_name"),
        ("no_tokenizer_seq2seq", "seq2seq.py", ["--mount_dir", "{mount}", "--model_init_name", "bare", "--training_run_name", "r1", "--data", "d"],
         r"^--model_init_name '\S+/models/bare': the directory holds no tokenizer \(none of tokenizer\.json, spiece\.model"),
        ("no_tokenizer_fine_tune", "fine_tune_t5.py", ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", "{toy}",
                                                       "--model_name_or_path", "{bare}", "--output_dir", "{tmp}/ft"], r"^--model_name_or_path '\S+/bare': the directory holds no tokenizer"),
    )
    def test_refused_in_one_line_and_the_model_is_untouched(self, name: str, argv: list[str], pattern: str) -> None:
        fill = {"toy": self.toy, "model": self.model, "mount": self.mount, "bare": self.no_tokenizer, "tmp": self.tmp}
        before = self.snapshot()
        message = one_error_line(self, script(name, *[a.format(**fill) for a in argv], "--max_steps", "1"))
        self.assertRegex(message, pattern)
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "ft")))


class DamagedWeightsTest(absltest.TestCase):
    def test_a_truncated_weights_file_is_one_line(self) -> None:
        tmp = tempfile.mkdtemp()
        model = save_tiny_t5(os.path.join(tmp, "cut"))
        weights = os.path.join(model, "model.safetensors")
        with open(weights, "rb") as f:
            data = f.read()
        with open(weights, "wb") as f:
            f.write(data[: len(data) // 2])  # as a save killed half-way leaves it
        toy = os.path.join(tmp, "toy")
        from examples import write_toy_benchmark

        write_toy_benchmark(toy, n_train=8, n_validation=4, n_test=2)
        proc = script("fine_tune_t5.py", "--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", toy,
                      "--model_name_or_path", model, "--output_dir", os.path.join(tmp, "out"), "--max_steps", "1", "--report_to", "none")
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        self.assertRegex(proc.stderr.splitlines()[-1], r"^error: --model_name_or_path '\S+/cut': the weights file is damaged \(.*\); "
                                                         r"a save that was cut short\? Use another checkpoint$")
        self.assertNotIn("Traceback", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(tmp, "out")))  # the lock's empty dir is removed again


class UnnamedPreemptedRunTest(absltest.TestCase):
    def test_the_printed_command_and_auto_resume_the_same_run(self) -> None:
        """seq2seq.py without --training_run_name names its run after the clock: after a preemption the
        printed command names the run, and `auto` without a name resumes the newest preempted run."""
        mount = pairs_mount(16)
        argv = ["--mount_dir", mount, "--model_init_name", "tiny", "--data", "pairs", "--max_steps", "12", "--train_batch_size", "2",
                "--logging_steps", "1", "--max_target_length", "4", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"]
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "seq2seq.py"), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env={**ENV, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            if line.startswith("{'loss'"):
                proc.send_signal(signal.SIGTERM)
                break
        proc.stdout.read()
        stderr = proc.stderr.read()
        self.assertEqual(proc.wait(timeout=300), 75, stderr[-2000:])
        (run,) = sorted(set(os.listdir(os.path.join(mount, "models"))) - {"tiny"})
        self.assertRegex(run, r"^pairs-tiny-\d{8}-\d{6}$")
        self.assertIn(f"--training_run_name {run} --resume_from_checkpoint auto", stderr)
        resumed = script("seq2seq.py", *argv, "--resume_from_checkpoint", "auto")
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
        self.assertEqual(sorted(set(os.listdir(os.path.join(mount, "models"))) - {"tiny"}), [run])  # no new run dir
        self.assertTrue(os.path.isfile(os.path.join(mount, "models", run, "all_results.json")))
        self.assertFalse(os.path.exists(os.path.join(mount, "models", run, "PREEMPTED")))
        self.assertIn(f"resume auto without --training_run_name: run dir {os.path.join(mount, 'models', run)}", resumed.stdout)


class LauncherKilledTest(absltest.TestCase):
    def test_a_run_whose_launcher_dies_checkpoints_and_stops(self) -> None:
        """SIGTERM to `accelerate launch` alone ends the launcher at once; the training process gets SIGUSR1
        from the kernel (PR_SET_PDEATHSIG), saves a checkpoint, writes PREEMPTED and exits, freeing the lock."""
        tmp = tempfile.mkdtemp()
        out = os.path.join(tmp, "run")
        launcher = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
             "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(ROOT, "pre_train_t5.py"), "--output_dir", out,
             "--train_file", write_corpus(os.path.join(tmp, "c.txt"), 200), "--max_steps", "100000", "--logging_steps", "1",
             *TINY_PRETRAIN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env={**ENV, "PYTHONUNBUFFERED": "1"})
        self.addCleanup(launcher.kill)
        self.addCleanup(subprocess.run, ["pkill", "-KILL", "-f", out])  # an orphan, should the guard fail
        for line in launcher.stdout:
            if line.startswith("{'loss'"):
                break
        launcher.send_signal(signal.SIGTERM)
        self.assertNotEqual(launcher.wait(timeout=60), 0)
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, "PREEMPTED")) and time.time() < deadline:
            time.sleep(0.2)
        with open(os.path.join(out, "PREEMPTED")) as f:
            step = int(f.read())
        self.assertTrue(os.path.isfile(os.path.join(out, f"checkpoint-{step}", "trainer_state.json")))
        from errors import UserError
        from outputs import RunLock

        while time.time() < deadline:  # the orphan is gone once its lock is free
            try:
                with RunLock(out):
                    break
            except UserError:
                time.sleep(0.2)
        else:
            self.fail("the training process outlived its launcher")


class FileTest(absltest.TestCase):
    def test_results_are_readable_by_collaborators_and_valid_json(self) -> None:
        from outputs import RunOutputs, write_json_atomic, write_records

        out = tempfile.mkdtemp()
        old = os.umask(0o022)
        try:
            write_json_atomic(os.path.join(out, "all_results.json"), {"a": 1})
            with self.assertLogs("outputs", "WARNING") as logs:
                path = write_records(os.path.join(out, "eval_3.json"), [{"samples": ["x"]}], carry=[{"prompt": "p", "weight": float("nan"),
                                                                                                          "meta": {"z": float("inf")}}])
            RunOutputs(out, evaluation_only=True).write_records("predictions.jsonl", [{"score": float("-inf")}])
        finally:
            os.umask(old)
        for name in os.listdir(out):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode), 0o644, name)
        with open(path) as f:
            self.assertEqual(json.load(f), [{"prompt": "p", "weight": None, "meta": {"z": None}, "samples": ["x"]}])
        self.assertIn("NaN or infinite values written as null", logs.output[0])
        with open(os.path.join(out, "predictions.jsonl")) as f:
            self.assertEqual(json.loads(f.readline()), {"score": None})


if __name__ == "__main__":
    absltest.main()
