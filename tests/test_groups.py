"""groups.py: group files, the runs they expand to, the Slurm job array (through stand-in sbatch / squeue / sacct /
scancel / srun that record their arguments), and the local executor for real on tiny runs."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import tempfile

from unittest import mock

from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_t5

import groups  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GROUP = """name: rte-lr
script: fine_tune_t5.py
args: {{benchmark: glue, dataset_name: rte, model_name_or_path: google-t5/t5-small, max_steps: 100, bf16: true}}
grid: {{learning_rate: [1.0e-4, 1.0e-3], seed: [1, 2]}}
slurm: {{partition: gpu, account: nlp, gpus: 2, cpus: 4, time: "01:00:00", container_image: "nvcr.io#nvidia/pytorch:24.01-py3", container_mounts: "/data:/data"}}
output_root: {root}
"""

STAND_INS = {
    # Job ids 777, 778, ... in submission order; sacct / squeue print $FAKE_DIR/sacct.txt / squeue.txt when a test wrote one.
    "sbatch": '#!/bin/bash\necho "sbatch $*" >> "$FAKE_DIR/calls.log"\necho "$((776 + $(grep -c ^sbatch "$FAKE_DIR/calls.log")));cluster"\n',
    "scancel": '#!/bin/bash\necho "scancel $*" >> "$FAKE_DIR/calls.log"\n',
    "sacct": '#!/bin/bash\necho "sacct $*" >> "$FAKE_DIR/calls.log"\n[ -f "$FAKE_DIR/sacct.txt" ] && exec cat "$FAKE_DIR/sacct.txt"\n'
             'printf "777_0|COMPLETED\\n777_0.batch|COMPLETED\\n777_1|FAILED\\n777_[2-3]|PENDING\\n"\n',
    "squeue": '#!/bin/bash\necho "squeue $*" >> "$FAKE_DIR/calls.log"\n[ -f "$FAKE_DIR/squeue.txt" ] && exec cat "$FAKE_DIR/squeue.txt"\n'
              'printf "777_2 RUNNING\\n777_3 PENDING\\n"\n',
    "srun": '#!/bin/bash\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
    # The run's launcher (2 GPUs: accelerate launch): records its arguments and the W&B run id, and "finishes".
    "accelerate": "#!{python}\nimport json, os, sys\n"
                  "json.dump({'argv': sys.argv[1:], 'WANDB_RUN_ID': os.environ.get('WANDB_RUN_ID')},\n"
                  "          open(os.path.join(os.environ['FAKE_DIR'], 'run.json'), 'w'))\n",
}


def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class GroupFileTest(parameterized.TestCase):
    def test_grid_and_runs_expand_to_named_output_dirs(self) -> None:
        tmp = tempfile.mkdtemp()
        path = write(os.path.join(tmp, "g.yaml"), GROUP.format(root=tmp) + "runs: [{dropout_rate: 0.0}, {dropout_rate: 0.1}]\n")
        runs = groups.expand(groups.read_group(path))
        self.assertLen(runs, 8)
        self.assertEqual([r.key for r in runs[:4]], ["dropout_rate=0.0,learning_rate=0.0001,seed=1", "dropout_rate=0.0,learning_rate=0.0001,seed=2",
                                                     "dropout_rate=0.0,learning_rate=0.001,seed=1", "dropout_rate=0.0,learning_rate=0.001,seed=2"])
        self.assertEqual(runs[5].output_dir, os.path.join(tmp, "rte-lr", "dropout_rate=0.1,learning_rate=0.0001,seed=2"))
        self.assertEqual(runs[5].argv, ["--benchmark", "glue", "--dataset_name", "rte", "--model_name_or_path", "google-t5/t5-small",
                                        "--max_steps", "100", "--bf16", "True", "--dropout_rate", "0.1", "--learning_rate", "0.0001",
                                        "--seed", "2", "--output_dir", runs[5].output_dir])
        self.assertEqual(groups.command(groups.read_group(path), runs[0])[:5], ["accelerate", "launch", "--num_processes", "2", "fine_tune_t5.py"])

    def test_each_run_knows_its_results_file(self) -> None:
        tmp = tempfile.mkdtemp()
        path = write(os.path.join(tmp, "g.yaml"), f"name: b\nscript: bias.py\nargs: {{dataset_name: crows_pairs}}\ngrid: {{seed: [1]}}\n"
                                                  f"output_root: {tmp}\n")
        self.assertEqual([r.results_file for r in groups.expand(groups.read_group(path))], ["results.json"])
        path = write(os.path.join(tmp, "g.yaml"), f"name: e\nscript: fine_tune_t5.py\nargs: {{no_train: true}}\ngrid: {{seed: [1]}}\n"
                                                  f"output_root: {tmp}\n")
        (run,) = groups.expand(groups.read_group(path))
        self.assertEqual(run.results_file, "eval_results.json")
        self.assertFalse(run.finished)
        write(os.path.join(run.output_dir, "eval_results.json"), "{}")
        self.assertTrue(run.finished)
        self.assertEqual(groups.resumed(run), run)  # evaluation only: nothing to resume

    def test_a_mount_script_gets_a_run_name(self) -> None:
        tmp = tempfile.mkdtemp()
        path = write(os.path.join(tmp, "g.yaml"), "name: s2s\nscript: seq2seq.py\nargs: {mount_dir: /m, data_name: d}\ngrid: {learning_rate: [0.001]}\n")
        (run,) = groups.expand(groups.read_group(path))
        self.assertEqual(run.output_dir, "/m/models/s2s--learning_rate=0.001")
        self.assertEqual(run.argv[-2:], ["--training_run_name", "s2s--learning_rate=0.001"])
        write(path, "name: s2s\nscript: seq2seq.py\nargs: {mount_dir: mnt, data_name: d}\ngrid: {learning_rate: [0.001]}\n")
        (run,) = groups.expand(groups.read_group(path))  # a relative mount: the repository root's, where runs start
        self.assertEqual(run.output_dir, os.path.join(ROOT, "mnt", "models", "s2s--learning_rate=0.001"))

    @parameterized.named_parameters(
        ("unknown_key", "name: g\nscript: clf.py\ngird: {a: [1]}\n", "unknown key 'gird'; valid keys: name, script, args, grid, runs, slurm, output_root"),
        ("bad_script", "name: g\nscript: train.py\n", "script: 'train.py'; valid: pre_train_t5.py, fine_tune_t5.py"),
        ("grid_not_a_list", "name: g\nscript: clf.py\ngrid: {learning_rate: 0.1}\n", "grid: learning_rate: must be a non-empty list of values"),
        ("output_dir_given", "name: g\nscript: clf.py\nargs: {output_dir: x}\n", "output_dir: set by the group for each run"),
        ("unknown_slurm_key", "name: g\nscript: clf.py\nslurm: {gpu: 2}\n", "slurm: unknown key 'gpu'; valid: account, constraint"),
        ("bad_name", "name: a/b\nscript: clf.py\n", "name: 'a/b' must be a plain folder name"),
    )
    def test_one_line_error_naming_the_file_and_key(self, text: str, message: str) -> None:
        path = write(os.path.join(tempfile.mkdtemp(), "g.yaml"), text)
        with self.assertRaises(UserError) as caught:
            groups.read_group(path)
        self.assertIn(f"{path}: {message}", str(caught.exception))


class SlurmArrayTest(absltest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        self.bin, self.fake = os.path.join(self.tmp, "bin"), os.path.join(self.tmp, "fake")
        os.makedirs(self.fake)
        for name, text in STAND_INS.items():
            os.chmod(write(os.path.join(self.bin, name), text.replace("{python}", sys.executable)), stat.S_IRWXU)
        self.env = {**os.environ, "PATH": self.bin + os.pathsep + os.environ["PATH"], "FAKE_DIR": self.fake}
        self.group_file = write(os.path.join(self.tmp, "g.yaml"), GROUP.format(root=os.path.join(self.tmp, "runs")))

    def groups_cli(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), *args, self.group_file], capture_output=True, text=True,
                              env=self.env, cwd=ROOT, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc

    def calls(self) -> list[str]:
        with open(os.path.join(self.fake, "calls.log")) as f:
            return f.read().splitlines()

    def test_launch_renders_one_array_and_a_task_runs_its_line(self) -> None:
        self.groups_cli("launch")
        directory = os.path.join(self.tmp, "runs", "rte-lr")
        job = os.path.join(directory, "group.sbatch")
        self.assertEqual(self.calls(), [f"sbatch --parsable {job}"])
        with open(os.path.join(directory, "group.json")) as f:
            self.assertEqual(json.load(f)["jobs"], [{"job_id": "777", "runs": [r.key for r in groups.expand(groups.read_group(self.group_file))]}])
        with open(job) as f:
            text = f.read()
        self.assertEqual(subprocess.run(["bash", "-n", job]).returncode, 0)
        lines = text.splitlines()
        for line in ("#SBATCH --array=0-3%8", "#SBATCH --partition=gpu", "#SBATCH --account=nlp", "#SBATCH --gres=gpu:2",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --time=01:00:00", "#SBATCH --signal=B:USR1@300", "#SBATCH --requeue"):
            self.assertIn(line, lines)
        self.assertIn("--kill-on-bad-exit=1 '--container-image=nvcr.io#nvidia/pytorch:24.01-py3' --container-mounts=/data:/data bash "
                      "slurm/launch_on_node.sh", text)
        runs = groups.expand(groups.read_group(self.group_file))
        with open(os.path.join(directory, "runs.tsv")) as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
        self.assertEqual([r[0] for r in rows], [r.output_dir for r in runs])

        # Array task 1, as Slurm starts it on a node (the stand-in python records the command it got).
        text = text.replace("source .venv/bin/activate", "true").replace('run_step srun', 'PATH="$FAKE_BIN:$PATH" run_step srun')
        task = write(os.path.join(self.tmp, "task.sbatch"), text)
        env = {**self.env, "FAKE_BIN": self.bin, "SLURM_ARRAY_JOB_ID": "777", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "779",
               "SLURM_CPUS_PER_TASK": "4"}
        env.pop("SLURM_RESTART_COUNT", None)
        env.pop("WANDB_RUN_ID", None)
        proc = subprocess.run(["bash", task], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        with open(os.path.join(self.fake, "run.json")) as f:
            ran = json.load(f)
        self.assertEqual(ran["argv"], ["launch", "--num_processes", "2", "fine_tune_t5.py", *runs[1].argv])
        self.assertEqual(ran["WANDB_RUN_ID"], "slurm-cluster-777_1")

    def test_a_relaunch_waits_for_the_array_then_submits_the_unfinished_runs_only(self) -> None:
        self.groups_cli("launch")
        runs = groups.expand(groups.read_group(self.group_file))
        directory = os.path.join(self.tmp, "runs", "rte-lr")
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "launch", self.group_file], capture_output=True,
                              text=True, env=self.env, cwd=ROOT, timeout=120)
        self.assertEqual((proc.returncode, proc.stderr), (2, f"error: {self.group_file}: launched before, and task 777_2 (2 in all) is "
                                                             f"still queued or running; `python groups.py monitor {self.group_file}` "
                                                             f"to follow it, or `stop` it first\n"))
        self.assertLen([line for line in self.calls() if line.startswith("sbatch")], 1)
        # The array ends: run 0 finished, the others failed, were cancelled or ran out of time (run 1 after a checkpoint).
        write(os.path.join(runs[0].output_dir, "all_results.json"), json.dumps({"eval_accuracy": 70.0}))
        write(os.path.join(runs[1].output_dir, "checkpoint-200", "trainer_state.json"), json.dumps({"log_history": []}))
        write(os.path.join(self.fake, "sacct.txt"), "777_0|COMPLETED\n777_1|FAILED\n777_2|CANCELLED by 5\n777_3|TIMEOUT\n")
        write(os.path.join(self.fake, "squeue.txt"), "")
        with open(os.path.join(directory, "runs.tsv")) as f:
            first_runs_file = f.read()
        self.assertIn("submitted job array 778: 3 runs of fine_tune_t5.py (the unfinished ones; earlier arrays: 777)",
                      self.groups_cli("launch").stdout)
        with open(os.path.join(directory, "runs-1.tsv")) as f:
            lines = [line.rstrip("\n").split("\t") for line in f]
        self.assertEqual([line[0] for line in lines], [r.output_dir for r in runs[1:]])
        # The run an earlier task left a dir for continues from its checkpoint; the others start as before.
        self.assertEqual(lines[0][1], " ".join(["accelerate", "launch", "--num_processes", "2", "fine_tune_t5.py", *runs[1].argv,
                                                "--resume_from_checkpoint", "auto"]))
        self.assertFalse(lines[1][1].endswith("--resume_from_checkpoint auto"))
        with open(os.path.join(directory, "runs.tsv")) as f:
            self.assertEqual(f.read(), first_runs_file)  # the first array's file is left as it was
        with open(os.path.join(directory, "group-1.sbatch")) as f:
            self.assertIn("#SBATCH --array=0-2%8", f.read().splitlines())
        # States: each run's task in the latest array that ran it.
        write(os.path.join(self.fake, "sacct.txt"), "777_0|COMPLETED\n777_1|FAILED\n777_2|CANCELLED by 5\n777_3|TIMEOUT\n"
                                                    "778_0|COMPLETED\n778_1|RUNNING\n")
        write(os.path.join(self.fake, "squeue.txt"), "778_1 RUNNING\n778_2 PENDING\n")
        out = self.groups_cli("monitor").stdout.splitlines()
        self.assertEqual([line.split()[:2] for line in out[1:]], [[runs[0].key, "COMPLETED"], [runs[1].key, "COMPLETED"],
                                                                   [runs[2].key, "RUNNING"], [runs[3].key, "PENDING"]])
        self.groups_cli("stop")
        self.assertEqual(self.calls()[-1], "scancel 777 778")
        # Everything finished: nothing to submit.
        for run in runs[1:]:
            write(os.path.join(run.output_dir, "all_results.json"), "{}")
        write(os.path.join(self.fake, "sacct.txt"), "777_0|COMPLETED\n778_0|COMPLETED\n778_1|COMPLETED\n778_2|COMPLETED\n")
        write(os.path.join(self.fake, "squeue.txt"), "")
        self.assertIn("has finished; nothing to launch", self.groups_cli("launch").stdout)
        self.assertLen([line for line in self.calls() if line.startswith("sbatch")], 2)
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "launch", self.group_file, "--executor", "local"],
                              capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=120)
        self.assertEqual((proc.returncode, proc.stderr), (2, f"error: {self.group_file}: launched with --executor slurm before; "
                                                             f"relaunch it with --executor slurm (its group.json records that "
                                                             f"executor's runs)\n"))

    def test_a_failing_squeue_stops_a_relaunch(self) -> None:
        self.groups_cli("launch")
        write(os.path.join(self.bin, "squeue"), "#!/bin/bash\necho 'squeue: error: Socket timed out on send/recv operation' >&2\nexit 1\n")
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "launch", self.group_file], capture_output=True,
                              text=True, env=self.env, cwd=ROOT, timeout=120)
        self.assertEqual((proc.returncode, proc.stderr), (2, "error: squeue -j 777: squeue: error: Socket timed out on send/recv "
                                                             "operation; cannot tell which tasks are queued or running (try again)\n"))
        self.assertLen([line for line in self.calls() if line.startswith("sbatch")], 1)

    def test_a_damaged_state_file_is_one_line(self) -> None:
        self.groups_cli("launch")
        state = os.path.join(self.tmp, "runs", "rte-lr", "group.json")
        write(state, '{"executor": "slurm", "jobs": [')  # cut off mid-write by a full disk, say
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "monitor", self.group_file], capture_output=True,
                              text=True, env=self.env, cwd=ROOT, timeout=120)
        self.assertEqual(proc.returncode, 2)
        self.assertRegex(proc.stderr, rf"^error: {state}: cannot read the group's state \(.*\); it is written by `launch` only\n$")

    def test_without_slurm_commands_one_line(self) -> None:
        self.groups_cli("launch")
        no_slurm = {**self.env, "PATH": os.path.dirname(sys.executable)}
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "monitor", self.group_file], capture_output=True,
                              text=True, env=no_slurm, cwd=ROOT, timeout=120)
        self.assertEqual((proc.returncode, proc.stderr.strip()),
                         (2, "error: sacct: not found; this needs a Slurm login node (or use --executor local)"))

    def test_arguments_the_script_refuses_fail_the_launch_before_anything_is_written(self) -> None:
        for grid, message in (("{learnig_rate: [1.0e-4], seed: [1, 2]}", "run learnig_rate=0.0001,seed=1: fine_tune_t5.py refuses its "
                                                                         "arguments: unknown flag --learnig_rate (did you mean --learning_rate?)"),
                              ("{learning_rate: [1.0e-4], max_source_length: [64, many]}",
                               "run learning_rate=0.0001,max_source_length=many: fine_tune_t5.py refuses its arguments: "
                               "argument --max_source_length/--max-source-length: invalid int value: 'many'")):
            write(self.group_file, GROUP.format(root=os.path.join(self.tmp, "runs")).replace(
                "{learning_rate: [1.0e-4, 1.0e-3], seed: [1, 2]}", grid))
            for executor in ("slurm", "local"):
                proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "launch", self.group_file, "--executor", executor],
                                      capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=120)
                self.assertEqual((proc.returncode, proc.stderr), (2, f"error: {self.group_file}: {message}\n"))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "runs")))  # no group dir, no job script
        self.assertFalse(os.path.exists(os.path.join(self.fake, "calls.log")))  # no sbatch

    def test_monitor_collect_and_stop(self) -> None:
        self.groups_cli("launch")
        runs = groups.expand(groups.read_group(self.group_file))
        write(os.path.join(runs[0].output_dir, "all_results.json"), json.dumps({"eval_accuracy": 71.5, "train_loss": 0.25}))
        out = self.groups_cli("monitor").stdout.splitlines()
        self.assertEqual(out[0].split(), ["run", "state", "step", "metric", "output_dir"])
        self.assertEqual([line.split()[:2] for line in out[1:]], [[runs[0].key, "COMPLETED"], [runs[1].key, "FAILED"],
                                                                   [runs[2].key, "RUNNING"], [runs[3].key, "PENDING"]])
        self.assertIn("eval_accuracy=71.5", out[1])
        self.groups_cli("collect")
        with open(os.path.join(self.tmp, "runs", "rte-lr", "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), ["run", "state", "output_dir", "learning_rate", "seed", "eval_accuracy", "train_loss"])
        self.assertEqual((rows[0]["state"], rows[0]["learning_rate"], rows[0]["seed"], rows[0]["eval_accuracy"]), ("COMPLETED", "0.0001", "1", "71.5"))
        self.assertEqual((rows[1]["state"], rows[1]["eval_accuracy"]), ("FAILED", ""))
        self.groups_cli("stop")
        self.assertIn("scancel 777", self.calls())
        self.assertIn("squeue -j 777 -r -h -o %i %T", self.calls())
        self.assertIn("sacct -j 777 --noheader --parsable2 --format=JobID,State", self.calls())


class LocalExecutorTest(absltest.TestCase):
    def test_runs_a_grid_two_at_a_time_and_collects_the_results(self) -> None:
        from examples import write_toy_benchmark

        tmp = tempfile.mkdtemp()
        model = save_tiny_t5(os.path.join(tmp, "tiny"))
        data = os.path.join(tmp, "toy")
        write_toy_benchmark(data, n_train=32, n_validation=8, n_test=2)
        path = write(os.path.join(tmp, "g.yaml"), f"""name: toy-lr
script: fine_tune_t5.py
args: {{benchmark: toy, dataset_name: sentiment, dataset_dir: {data}, model_name_or_path: {model}, max_steps: 2,
        per_device_train_batch_size: 8, save_strategy: "no", report_to: none, disable_tqdm: true}}
grid: {{learning_rate: [0.001, 0.003]}}
output_root: {tmp}/groups
""")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "launch", path, "--executor", "local", "--parallel", "2"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(sorted(line for line in proc.stdout.splitlines() if line.startswith("finished")),
                         ["finished learning_rate=0.001", "finished learning_rate=0.003"])
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "groups.py"), "collect", path], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(tmp, "groups", "toy-lr", "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["run"] for r in rows], ["learning_rate=0.001", "learning_rate=0.003"])
        for row in rows:
            self.assertEqual(row["state"], "COMPLETED")
            with open(os.path.join(row["output_dir"], "all_results.json")) as f:
                results = json.load(f)
            self.assertEqual(float(row["eval_accuracy"]), results["eval_accuracy"])
            self.assertEqual(float(row["learning_rate"]), json.load(open(os.path.join(row["output_dir"], "provenance.json")))["arguments"]["learning_rate"])


if __name__ == "__main__":
    absltest.main()


class SweepRunTest(absltest.TestCase):
    """W&B sweeps: each agent run its own output dir ({run_id} / {sweep_id}); a preempted run marked for requeue."""

    def test_placeholders_take_the_agents_ids_in_both_parses(self) -> None:
        import fine_tune_t5
        from arguments import light_parse, parse_args
        from records import run_path

        argv = ["--dataset_name", "sst2", "--model_name_or_path", "google-t5/t5-small", "--output_dir", "runs/{sweep_id}/{run_id}"]
        with mock.patch.dict(os.environ, {"WANDB_RUN_ID": "r8x2", "WANDB_SWEEP_ID": "sw41"}):
            early = light_parse(fine_tune_t5.ARGUMENTS, argv)
            *_, training_args = parse_args(fine_tune_t5.ARGUMENTS, argv, None, early)
            self.assertEqual(early[-1].output_dir, "runs/sw41/r8x2")
            self.assertEqual(training_args.output_dir, "runs/sw41/r8x2")
            self.assertEqual(run_path("mount", "s2s-{run_id}"), os.path.join("mount", "models", "s2s-r8x2"))

    def test_outside_a_sweep_the_placeholder_is_an_error(self) -> None:
        from arguments import sweep_run_dir

        with mock.patch.dict(os.environ, {"WANDB_RUN_ID": ""}):
            with self.assertRaisesRegex(UserError, r"^--output_dir runs/\{run_id\}: \{run_id\} is the W&B run id, which `wandb agent` "
                                                   r"sets \(WANDB_RUN_ID\); outside a sweep, name the run dir yourself$"):
                sweep_run_dir("runs/{run_id}", "--output_dir")

    def test_a_preempted_run_is_marked_for_the_sweep(self) -> None:
        import types

        from runner import mark_wandb_preempting

        run = mock.MagicMock(id="r8x2")
        with mock.patch.dict(sys.modules, {"wandb": types.SimpleNamespace(run=run)}):
            self.assertTrue(mark_wandb_preempting())
        run.mark_preempting.assert_called_once_with()
        with mock.patch.dict(sys.modules, {"wandb": types.SimpleNamespace(run=None)}):
            self.assertFalse(mark_wandb_preempting())
