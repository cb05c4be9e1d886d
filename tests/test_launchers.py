"""The launch files stay runnable: W&B sweeps against the scripts' own parsers and logged metrics, the
DeepSpeed JSONs against transformers' "auto" filling, the accelerate configs against accelerate's own
launcher, the Slurm templates rendered, checked by bash and run against stand-in Slurm commands, and
the Dockerfile. Nothing trains."""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import glob
import importlib
import importlib.util
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
import types
import typing
from typing import Any
from unittest import mock

import yaml
from absl.testing import absltest, parameterized

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")  # --report_to wandb is checked for a key otherwise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = sorted(glob.glob(os.path.join(ROOT, "sweeps", "*.yaml")))
DEEPSPEED_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "zero_stage*_config.json")))
ACCELERATE_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
TEMPLATES = sorted(glob.glob(os.path.join(ROOT, "slurm", "*.sbatch")))
SWEEP_COMMAND = ["accelerate", "launch", "${program}", "${args}"]  # a list: one string fails (wandb #4135)
LOWER_IS_BETTER = {"loss", "mse", "mae", "ece"}
TRAINER_DECIDES = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def named(paths: list[str]) -> list[tuple[str, str]]:
    return [(os.path.splitext(os.path.basename(p))[0], p) for p in paths]


def read_yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- sweeps ---------------------------------------------------------------------------------------


AGENT_ENV = {"WANDB_RUN_ID": "run0", "WANDB_SWEEP_ID": "sweep0"}


class _Parsed(Exception):
    """Raised in place of the rest of a script's main() once its arguments are parsed."""


def parse_as_script(program: str, argv: list[str]) -> tuple[tuple[type, ...], tuple]:
    """The program's own argument parsing on `argv`: (its dataclass types, the parsed objects).

    Runs the script's `main(argv)` with its `parse_args` wrapped, and stops right after parsing.
    """
    module = importlib.import_module(os.path.splitext(program)[0])
    seen: dict[str, Any] = {}
    real_parse_args = module.parse_args

    def parse_then_stop(arguments: Any, args: Any, description: str | None = None, early: Any = None) -> Any:
        from arguments import resolve_arguments

        seen["types"] = tuple(resolve_arguments(arguments))
        seen["objects"] = real_parse_args(arguments, args, description, early)
        raise _Parsed

    # As `wandb agent` runs it: the run's process has the run and sweep ids (its output dir may name them).
    with mock.patch.object(module, "parse_args", parse_then_stop), mock.patch.dict(os.environ, AGENT_ENV):
        try:
            module.main(argv)
        except _Parsed:
            pass
    if "objects" not in seen:
        raise AssertionError(f"{program}: main() returned without calling parse_args")
    return seen["types"], seen["objects"]


def agent_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command `wandb agent` runs for these parameter values, built with W&B's own code."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros.update(program=[sweep["program"]], interpreter=["python"], env=["/usr/bin/env"])
    command: list[str] = []
    for word in create_sweep_command(list(sweep["command"])):  # it edits the list in place
        word = str(word)
        command += macros.get(word[2:-1]) or [] if word.startswith("${") and word.endswith("}") else [word]
    return command


def first_values(parameters: dict[str, Any]) -> dict[str, Any]:
    """One value per parameter: `value`, the first of `values`, or a distribution's `min`."""
    return {name: spec["value"] if "value" in spec else spec["values"][0] if "values" in spec else spec["min"]
            for name, spec in parameters.items()}


def variants(parameters: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) for every other value the sweep may pick: the rest of `values`, a distribution's max."""
    out = []
    for name, spec in parameters.items():
        out += [(name, v) for v in spec.get("values", [])[1:]]
        if "max" in spec:
            out.append((name, spec["max"]))
    return out


def accepts(hint: Any, value: Any) -> bool:
    """Whether a YAML value has a type the dataclass field takes (bools as bools, numbers as numbers)."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in kinds:
        kind = typing.get_origin(kind) or kind
        if kind is bool and isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if (kind is str or (isinstance(kind, type) and issubclass(kind, enum.Enum))) and isinstance(value, str):
            return True
    return False


def field_hints(dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    hints = {}
    for cls in dataclass_types:
        resolved = typing.get_type_hints(cls)
        hints.update({f.name: resolved[f.name] for f in dataclasses.fields(cls)})
    return hints


def parsed_value(objects: tuple, name: str) -> Any:
    value = next(getattr(obj, name) for obj in objects if hasattr(obj, name))
    return value.value if isinstance(value, enum.Enum) else value


def wandb_key(trainer_key: str) -> str:
    """The key W&B receives for a key the Trainer logs (its callback turns eval_x into eval/x)."""
    from transformers.integrations.integration_utils import rewrite_logs

    return next(iter(rewrite_logs({trainer_key: 0.0})))


def optimizable_metrics(program: str, objects: tuple) -> dict[str, str]:
    """W&B key -> goal, for the eval metrics `program` logs with these arguments."""
    import metrics

    def goals(names: Any, prefix: str = "eval") -> dict[str, str]:
        return {wandb_key(f"{prefix}_{name}"): "minimize" if name in LOWER_IS_BETTER else "maximize" for name in names}

    if program == "fine_tune_t5.py":
        # fine_tune_t5.py optimizes the task's metric_to_optimize; with several validation splits the
        # Trainer prefixes each split's name, and the first split's is metric_for_best_model.
        from tasks import get_task

        task_args = next(o for o in objects if hasattr(o, "dataset_name"))
        entry = get_task(task_args.benchmark, task_args.dataset_name)
        splits = entry["splits"]["validation"]
        name = entry["metric_to_optimize"] if len(splits) == 1 else f"{splits[0]}_{entry['metric_to_optimize']}"
        return {wandb_key(f"eval_{name}"): "maximize"}
    if program == "seq2seq.py":  # sampled-completion metrics, merged into the eval metrics
        return goals(["loss", *(k for k in metrics.generation_metrics([["a b"]], ["a b"]) if k != "gen_len")])
    if program == "clf.py":  # soft-label metrics of the yes-scores
        return goals(["loss", *metrics.soft_label_metrics([0.2, 0.9], [0.1, 0.8])])
    raise AssertionError(f"{program}: add the metrics it logs to optimizable_metrics")


class SweepTest(parameterized.TestCase):
    @parameterized.named_parameters(named(SWEEPS))
    def test_sweep_is_well_formed(self, path: str) -> None:
        sweep = read_yaml(path)
        self.assertLessEqual(set(sweep), {"program", "command", "method", "metric", "parameters", "name", "description",
                                          "run_cap", "early_terminate", "project", "entity"})
        self.assertTrue(os.path.isfile(os.path.join(ROOT, sweep["program"])), sweep["program"])
        self.assertEqual(sweep["command"], SWEEP_COMMAND)
        self.assertIn(sweep["method"], ("bayes", "random", "grid"))
        self.assertIn(sweep["metric"]["goal"], ("minimize", "maximize"))
        with open(path, encoding="utf-8") as f:
            self.assertTrue(f.readline().startswith("# "), "a sweep file opens with a comment saying what it sweeps")
        swept = 0
        for name, spec in sweep["parameters"].items():
            kinds = {"value", "values", "distribution"} & set(spec)
            self.assertLen(kinds, 1, f"{name}: one of value, values, distribution")
            if "values" in spec:
                self.assertNotEmpty(spec["values"], name)
                swept += 1
            if "distribution" in spec:
                self.assertIn(spec["distribution"], ("log_uniform_values", "uniform", "int_uniform", "q_log_uniform_values"))
                for bound in ("min", "max"):  # `5e-4` in YAML is the string '5e-4': write 5.0e-4
                    self.assertIsInstance(spec[bound], (int, float), f"{name}.{bound}: {spec[bound]!r} is not a number")
                self.assertLess(spec["min"], spec["max"], name)
                if spec["distribution"] == "log_uniform_values":
                    self.assertGreater(spec["min"], 0, name)
                swept += 1
        self.assertGreater(swept, 0, "a sweep sweeps something")

    @parameterized.named_parameters(named(SWEEPS))
    def test_every_value_parses_as_the_agent_passes_it(self, path: str) -> None:
        from accelerate.commands.launch import launch_command_parser

        sweep = read_yaml(path)
        parameters = sweep["parameters"]
        base = first_values(parameters)
        for name, value in [(None, None), *variants(parameters)]:
            values = base if name is None else {**base, name: value}
            command = agent_command(sweep, values)
            launch = launch_command_parser().parse_args(command[2:])  # accelerate leaves the script's flags alone
            self.assertEqual(command[:2], ["accelerate", "launch"])
            self.assertEqual(launch.training_script, sweep["program"])
            argv = launch.training_script_args + ["--_wandb=sweep_param_path:wandb/sweep-x/config-y.yaml"]
            try:
                dataclass_types, objects = parse_as_script(sweep["program"], argv)
            except SystemExit as err:  # argparse rejects a value: usage on stderr, exit 2
                self.fail(f"{sweep['program']} rejected {argv}: exit {err.code}")
            hints = field_hints(dataclass_types)
            for key, given in values.items():
                self.assertIn(key, hints, f"{sweep['program']} has no argument {key}")
                self.assertTrue(accepts(hints[key], given), f"{key}: {given!r} ({type(given).__name__}) for a {hints[key]} field")
                got = parsed_value(objects, key)
                if isinstance(given, str):  # {run_id} / {sweep_id}: the agent's ids
                    given = given.replace("{run_id}", AGENT_ENV["WANDB_RUN_ID"]).replace("{sweep_id}", AGENT_ENV["WANDB_SWEEP_ID"])
                if isinstance(given, (bool, int, float, str)) and not isinstance(got, (list, tuple)):
                    self.assertEqual(got, given, key)

    @parameterized.named_parameters(named(SWEEPS))
    def test_metric_is_one_the_program_logs(self, path: str) -> None:
        sweep = read_yaml(path)
        command = agent_command(sweep, first_values(sweep["parameters"]))
        _, objects = parse_as_script(sweep["program"], command[3:])
        logged = optimizable_metrics(sweep["program"], objects)
        self.assertIn(sweep["metric"]["name"], logged)
        self.assertEqual(sweep["metric"]["goal"], logged[sweep["metric"]["name"]])
        report_to = parsed_value(objects, "report_to")
        self.assertIn("wandb", report_to if isinstance(report_to, list) else [report_to], "runs must report to W&B")

    def test_every_glue_task_has_a_sweep(self) -> None:
        from constants import DATASET_VALS

        tasks = {os.path.basename(p)[len("glue_"):-len(".yaml")] for p in SWEEPS if os.path.basename(p).startswith("glue_")}
        self.assertEqual(tasks, set(DATASET_VALS["glue"]))
        for task in tasks:
            parameters = read_yaml(os.path.join(ROOT, "sweeps", f"glue_{task}.yaml"))["parameters"]
            self.assertEqual(parameters["dataset_name"]["value"], task)


# --- DeepSpeed ------------------------------------------------------------------------------------


def trainer_filled(config: dict[str, Any], training_args: Any, hidden_size: int) -> Any:
    """transformers' filling of "auto" (HfTrainerDeepSpeedConfig, as Trainer does it) on a copy of the config.

    HfTrainerDeepSpeedConfig's constructor insists on DeepSpeed being installed, so its methods run on
    accelerate's config reader, which is the base it has when DeepSpeed is installed.
    """
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers import T5Config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig as Hf

    class Filled(HfDeepSpeedConfig):
        is_auto, fill_match, fill_only = Hf.is_auto, Hf.fill_match, Hf.__dict__["fill_only"]
        trainer_config_process, trainer_config_finalize = Hf.trainer_config_process, Hf.trainer_config_finalize

    filled = Filled(json.loads(json.dumps(config)))
    filled.mismatches, filled._dtype = [], None
    filled.trainer_config_process(training_args)
    filled.trainer_config_finalize(training_args, types.SimpleNamespace(config=T5Config(d_model=hidden_size)), 100)
    return filled


def all_values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for value in node.values() for v in all_values(value)]
    return [node]


class DeepSpeedConfigTest(parameterized.TestCase):
    def test_stage2_stage3_and_offload_are_shipped(self) -> None:
        names = [os.path.basename(p) for p in DEEPSPEED_CONFIGS]
        self.assertContainsSubset(["zero_stage2_config.json", "zero_stage3_config.json", "zero_stage3_offload_config.json"], names)

    @parameterized.named_parameters(named(DEEPSPEED_CONFIGS))
    def test_trainer_decides_what_it_can(self, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        self.assertEqual(config["bf16"], {"enabled": "auto"})  # the scripts' --bf16 decides
        self.assertIs(config["fp16"]["enabled"], False)  # T5 overflows in fp16
        for key in TRAINER_DECIDES:
            self.assertEqual(config[key], "auto", key)
        # The Trainer's optimizer (T5's Adafactor) and schedule stay the only ones.
        self.assertNotIn("optimizer", config)
        self.assertNotIn("scheduler", config)

    @parameterized.named_parameters(named(DEEPSPEED_CONFIGS))
    def test_transformers_fills_every_auto(self, path: str) -> None:
        from transformers import TrainingArguments

        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=True, per_device_train_batch_size=4,
                                 gradient_accumulation_steps=2, max_grad_norm=0.5, report_to="none")
        filled = trainer_filled(config, args, hidden_size=64)
        self.assertEqual(filled.mismatches, [])
        self.assertNotIn("auto", all_values(filled.config), "an \"auto\" transformers does not fill reaches DeepSpeed")
        self.assertEqual((filled.config["train_micro_batch_size_per_gpu"], filled.config["gradient_accumulation_steps"],
                          filled.config["train_batch_size"], filled.config["gradient_clipping"]), (4, 2, 8, 0.5))
        self.assertIs(filled.config["bf16"]["enabled"], True)
        zero = filled.config["zero_optimization"]
        if zero["stage"] == 3:
            self.assertEqual((zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"],
                              zero["stage3_param_persistence_threshold"]), (64 * 64, int(0.9 * 64 * 64), 10 * 64))

    @parameterized.named_parameters(named([p for p in DEEPSPEED_CONFIGS if "stage3" in p]))
    def test_zero3_saves_a_usable_checkpoint(self, path: str) -> None:
        from accelerate.utils.deepspeed import HfDeepSpeedConfig

        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        self.assertTrue(HfDeepSpeedConfig(config).is_zero3())
        zero = config["zero_optimization"]
        self.assertIs(zero["stage3_gather_16bit_weights_on_model_save"], True)  # else save_model writes no weights
        for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
            self.assertEqual(zero[key], "auto", key)  # sized from the model's hidden size
        offload = "offload" in os.path.basename(path)
        self.assertEqual(HfDeepSpeedConfig(config).is_offload(), offload)
        if offload:
            for key in ("offload_optimizer", "offload_param"):
                self.assertEqual(zero[key], {"device": "cpu", "pin_memory": True}, key)
            # DeepSpeed refuses a client optimizer (the Trainer's Adafactor) with offload unless told so.
            self.assertIs(config["zero_force_ds_cpu_optimizer"], False)


# --- accelerate configs ---------------------------------------------------------------------------


def accelerate_launch(config_file: str, *flags: str) -> tuple[Any, dict[str, str]]:
    """What `accelerate launch --config_file F FLAGS fine_tune_t5.py --x=1` would run with: (args, env)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", config_file, *flags, "fine_tune_t5.py", "--x=1"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as launch_command() does
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


class AccelerateConfigTest(parameterized.TestCase):
    @parameterized.named_parameters(named(ACCELERATE_CONFIGS))
    def test_loads_with_accelerate_and_documents_its_launch(self, path: str) -> None:
        from accelerate.commands.config.config_args import ClusterConfig

        config = ClusterConfig.from_yaml_file(path)  # unknown keys raise
        with open(path, encoding="utf-8") as f:
            header = f.read().split("\ncompute_environment")[0]
        self.assertIn(f"accelerate launch --config_file configs/{os.path.basename(path)}", header)
        # 'bf16' here would override --bf16 False (transformers starts from ACCELERATE_MIXED_PRECISION).
        self.assertEqual(read_yaml(path).get("mixed_precision", "no"), "no", "mixed_precision must be the string 'no'")
        if config.deepspeed_config:
            ds = config.deepspeed_config
            self.assertTrue(os.path.isfile(os.path.join(ROOT, ds["deepspeed_config_file"])), "relative to the repository root")
            from accelerate.commands.launch import launch_command_parser

            known = {a.dest for a in launch_command_parser()._actions}
            self.assertLessEqual(set(ds), known, "accelerate ignores deepspeed_config keys it does not know")

    @parameterized.named_parameters(named(ACCELERATE_CONFIGS))
    def test_launch_as_accelerate_would(self, path: str) -> None:
        from accelerate.utils import DeepSpeedPlugin

        flags = ("--num_machines", "2", "--num_processes", "16", "--machine_rank", "1", "--main_process_ip", "node-a",
                 "--main_process_port", "29511")
        args, env = accelerate_launch(path, *(flags if "multi_node" in path else ()))
        self.assertEqual(env["ACCELERATE_MIXED_PRECISION"], "no")
        self.assertEqual(args.training_script, "fine_tune_t5.py")
        if "multi_node" in path:
            self.assertEqual((args.num_machines, args.num_processes, args.machine_rank, args.main_process_ip),
                             (2, 16, 1, "node-a"))
        if not args.use_deepspeed:
            return
        cwd = os.getcwd()
        os.chdir(ROOT)  # the JSON path is relative to where you launch: the repository root
        try:
            with mock.patch.dict(os.environ, env):
                plugin = DeepSpeedPlugin()  # what TrainingArguments builds under accelerate launch
        finally:
            os.chdir(cwd)
        with open(os.path.join(ROOT, read_yaml(path)["deepspeed_config"]["deepspeed_config_file"]), encoding="utf-8") as f:
            stage = json.load(f)["zero_optimization"]["stage"]
        self.assertEqual(plugin.zero_stage, stage)
        self.assertEqual(plugin.zero3_init_flag, stage == 3)  # ZeRO-3 builds the model already sharded


# --- Slurm ----------------------------------------------------------------------------------------


def render_module() -> Any:
    spec = importlib.util.spec_from_file_location("slurm_render", os.path.join(ROOT, "slurm", "render.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REQUIRED = {"single_node": dict(SCRIPT="fine_tune_t5.py", OUTPUT_DIR="runs/sst2-$SLURM_JOB_ID",
                                ARGS="--dataset_name sst2 --output_dir runs/sst2-$SLURM_JOB_ID"),
            "multi_node": dict(SCRIPT="seq2seq.py", OUTPUT_DIR="mount/models/xxl-$SLURM_JOB_ID",
                               ARGS="--data_name d --training_run_name xxl-$SLURM_JOB_ID"),
            "sweep_agent": dict(SWEEP_ID="entity/project/abc123"),
            "group_array": dict(LAST_INDEX="3", RUNS_FILE="/runs/g/runs.tsv", LOG_DIR="/runs/g/logs")}  # groups.py renders it

STAND_INS = {
    # srun: run the task right here (dropping srun's options), remembering its pid for scancel.
    "srun": '#!/bin/bash\nwhile [ "${1#-}" != "$1" ]; do shift; done\necho $$ > "$FAKE_DIR/task.pid"\nexec "$@"\n',
    # scancel --signal: Slurm signals every process of the job's steps (FAKE_DELIVERY=tree: the task and
    # all below it), or, were it to reach the task alone, FAKE_DELIVERY=task.
    "scancel": '#!/bin/bash\necho "scancel $*" >> "$FAKE_DIR/calls.log"\n'
               'tree() { echo "$1"; [ "$FAKE_DELIVERY" = task ] || for c in $(pgrep -P "$1"); do tree "$c"; done; }\n'
               '[ -f "$FAKE_DIR/task.pid" ] && kill -USR1 $(tree "$(cat "$FAKE_DIR/task.pid")") 2>/dev/null\nexit 0\n',
    "scontrol": '#!/bin/bash\necho "scontrol $*" >> "$FAKE_DIR/calls.log"\n'
                'if [ "$1" = show ]; then printf "node-a\\nnode-b\\n"; fi\n',
    # The sweep's state: running for the first FAKE_SWEEP_RUNS checks.
    "python": '#!/bin/bash\ncat > /dev/null\nn=$(cat "$FAKE_DIR/state_checks" 2>/dev/null || echo 0)\n'
              'echo $((n + 1)) > "$FAKE_DIR/state_checks"\n[ "$n" -lt "${FAKE_SWEEP_RUNS:-99}" ]\n',
    # accelerate launch, like torchrun: starts the training process (the script's arguments, after the
    # .py) with LOCAL_RANK set and installs no signal handler (SIGTERM ends it at once).
    "accelerate": "#!{python}\nimport json, os, subprocess, sys\n"
                  "args = sys.argv[2:]\nscript = next(i for i, a in enumerate(args) if a.endswith('.py'))\n"
                  "json.dump(args, open(os.path.join(os.environ['FAKE_DIR'], 'launcher.json'), 'w'))\n"
                  "open(os.path.join(os.environ['FAKE_DIR'], 'launcher.pid'), 'w').write(str(os.getpid()))\n"
                  "rc = subprocess.call([sys.executable, os.path.join(os.environ['FAKE_DIR'], 'train.py'), *args[script + 1:]],\n"
                  "                     env={**os.environ, 'LOCAL_RANK': '0'})\n"
                  "open(os.path.join(os.environ['FAKE_DIR'], 'launcher_exit'), 'w').write(str(rc))\nsys.exit(rc)\n",
    # wandb agent --count 1: one run of the sweep's command, whatever its exit status.
    "wandb": "#!{python}\nimport os, subprocess, sys\n"
             "open(os.path.join(os.environ['FAKE_DIR'], 'calls.log'), 'a').write('wandb ' + ' '.join(sys.argv[1:]) + '\\n')\n"
             "subprocess.call(['accelerate', 'launch', 'fine_tune_t5.py', '--learning_rate=0.001'])\n",
}

# The training process: the scripts' own signal handling (errors.run_main: a flag on SIGTERM / SIGUSR1, and
# SIGUSR1 from the kernel when the launcher dies); once the flag is set, a checkpoint save of
# FAKE_SAVE_SECONDS, then the PREEMPTED marker and exit 75, as the scripts do.
TRAIN = """import json, os, sys, time
sys.path.insert(0, os.environ["FAKE_REPO"])
from errors import preemption_requested, run_main

fake, out = os.environ["FAKE_DIR"], os.environ["FAKE_OUTPUT_DIR"]


def main(argv):
    runs = sorted(f for f in os.listdir(fake) if f.startswith("run-"))
    json.dump({"argv": sys.argv[1:], "WANDB_RUN_ID": os.environ.get("WANDB_RUN_ID"),
               "WANDB_RESUME": os.environ.get("WANDB_RESUME")}, open(os.path.join(fake, f"run-{len(runs)}.json"), "w"))
    if os.environ.get("FAKE_MODE") == "finish":
        return
    open(os.path.join(fake, "started"), "w").close()
    deadline = time.monotonic() + 30
    while not preemption_requested():
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.02)
    time.sleep(float(os.environ.get("FAKE_SAVE_SECONDS", "0.2")))  # a save outlasts the signal's second copy
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "PREEMPTED"), "w").close()
    sys.exit(75)


run_main(main)
"""


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in children for p in process_tree(int(child))]


class SlurmTemplateTest(parameterized.TestCase):
    def render(self, name: str, **values: str) -> str:
        with open(os.path.join(ROOT, "slurm", f"{name}.sbatch"), encoding="utf-8") as f:
            return render_module().render(f.read(), **{**REQUIRED[name], "SETUP": "true", **values})

    def test_every_template_has_its_required_values_listed(self) -> None:
        self.assertEqual({os.path.basename(p)[: -len(".sbatch")] for p in TEMPLATES}, set(REQUIRED))

    @parameterized.named_parameters(named(TEMPLATES))
    def test_renders_to_valid_bash_with_signal_requeue_and_resume(self, path: str) -> None:
        name = os.path.basename(path)[: -len(".sbatch")]
        text = self.render(name)
        self.assertNotIn("{{", text)
        check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        self.assertIn("#SBATCH --signal=B:USR1@300", directives)  # the warning, to the batch shell
        self.assertIn("#SBATCH --requeue", directives)
        self.assertTrue(all(" #" not in line for line in directives), "no comments after #SBATCH directives")
        self.assertIn("source slurm/preempt.sh", text)
        self.assertRegex(text, r"run_step srun .*bash slurm/launch_on_node\.sh")
        if name == "sweep_agent":
            self.assertIn('wandb agent --count 1 "$SWEEP"', text)
            self.assertIn("unset WANDB_RUN_ID WANDB_RESUME", text)  # the sweep names its runs
            return
        self.assertIn('"${RESUME_ARGS[@]}"', text)
        if name == "group_array":  # one W&B run per array task, the same after a requeue (tests/test_groups.py runs a task)
            self.assertIn('export WANDB_RUN_ID="${WANDB_RUN_ID:-slurm-${SLURM_CLUSTER_NAME:-cluster}-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"', text)
            self.assertIn("#SBATCH --array=0-3%8", text)
            self.assertIn('finish_or_requeue "$OUTPUT_DIR" $?', text)
            return
        self.assertIn('export WANDB_RUN_ID="${WANDB_RUN_ID:-slurm-${SLURM_CLUSTER_NAME:-cluster}-$SLURM_JOB_ID}"', text)
        self.assertIn("export WANDB_RESUME=allow", text)
        self.assertIn('finish_or_requeue "$OUTPUT_DIR" $?', text)
        if name == "multi_node":
            self.assertIn('MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)', text)
            self.assertIn('--machine_rank "$SLURM_NODEID"', text)
            self.assertIn('--num_machines "$SLURM_NNODES"', text)

    def test_shared_scripts_are_valid_bash_and_requeue(self) -> None:
        for name in ("preempt.sh", "launch_on_node.sh"):
            check = subprocess.run(["bash", "-n", os.path.join(ROOT, "slurm", name)], capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stderr)
        with open(os.path.join(ROOT, "slurm", "preempt.sh"), encoding="utf-8") as f:
            text = f.read()
        for line in ("trap 'on_warning_signal USR1' USR1", 'scancel --signal=USR1 "$SLURM_JOB_ID"',
                     'scontrol requeue "$SLURM_JOB_ID"', '"$1/PREEMPTED"', "RESUME_ARGS=(--resume_from_checkpoint auto)"):
            self.assertIn(line, text)

    def test_render_refuses_unknown_and_missing_values(self) -> None:
        render = render_module().render
        with self.assertRaisesRegex(ValueError, "no placeholder GPU"):
            render("#SBATCH --gres=gpu:{{GPUS}}\n# defaults: GPUS=8\n", GPU="4")
        with self.assertRaisesRegex(ValueError, "no value for SCRIPT"):
            render("{{SCRIPT}}\n")
        self.assertEqual(render("{{GPUS}} {{X}}\n# defaults: GPUS=8 X='a b'\n"), "8 a b\n# defaults: GPUS=8 X='a b'\n")

    def test_render_command_line_quotes_script_args_but_keeps_variables(self) -> None:
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "slurm", "render.py"), os.path.join(ROOT, "slurm", "single_node.sbatch"),
             "SCRIPT=fine_tune_t5.py", "OUTPUT_DIR=runs/x-$SLURM_JOB_ID", "--", "--output_dir", "runs/x-$SLURM_JOB_ID",
             "--template", 'say "{input}"'], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('fine_tune_t5.py "--output_dir" "runs/x-$SLURM_JOB_ID" "--template" "say \\"{input}\\""', out.stdout)

    # Running the rendered jobs against stand-ins for srun, scancel, scontrol, accelerate and wandb.

    def start_job(self, name: str, env: dict[str, str], **values: str) -> tuple[subprocess.Popen, str, str]:
        tmp = tempfile.mkdtemp()
        bin_dir, fake = os.path.join(tmp, "bin"), os.path.join(tmp, "fake")
        os.makedirs(bin_dir)
        os.makedirs(fake)
        for command, text in STAND_INS.items():
            with open(os.path.join(bin_dir, command), "w") as f:
                f.write(text.replace("{python}", sys.executable))
            os.chmod(os.path.join(bin_dir, command), stat.S_IRWXU)
        with open(os.path.join(fake, "train.py"), "w") as f:
            f.write(TRAIN)
        out_dir = os.path.join(tmp, "out-4242")  # where the stand-in training process writes
        if name != "sweep_agent":  # the sweep's runs choose their own output directories
            values = {"OUTPUT_DIR": os.path.join(tmp, "out-$SLURM_JOB_ID"), **values}
        job = os.path.join(tmp, "job.sbatch")
        with open(job, "w") as f:
            f.write(self.render(name, **values))
        full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "FAKE_DIR": fake,
                    "FAKE_OUTPUT_DIR": out_dir, "FAKE_REPO": ROOT, "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
                    "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_CPUS_PER_TASK": "2", **env}
        for key in ("SLURM_RESTART_COUNT", "WANDB_RUN_ID", "WANDB_RESUME", "SLURM_CLUSTER_NAME"):
            if key not in env:
                full_env.pop(key, None)
        log = open(os.path.join(tmp, "job.log"), "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen(["bash", job], env=full_env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc, fake, out_dir

    def wait_for_training(self, proc: subprocess.Popen, fake: str) -> None:
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(fake, "started")):
            self.assertIsNone(proc.poll(), "the job ended before training started")
            self.assertLess(time.monotonic(), deadline, "training never started")
            time.sleep(0.05)

    def signal_once_started(self, proc: subprocess.Popen, fake: str) -> None:
        self.wait_for_training(proc, fake)
        os.kill(proc.pid, signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@300` sends

    def calls(self, fake: str) -> str:
        path = os.path.join(fake, "calls.log")
        return open(path).read() if os.path.exists(path) else ""

    def log(self, proc: subprocess.Popen) -> str:
        return open(os.path.join(os.path.dirname(proc.args[1]), "job.log")).read()

    @parameterized.product(name=["single_node", "multi_node"], delivery=["tree", "task"])
    def test_warning_signal_checkpoints_and_requeues(self, name: str, delivery: str) -> None:
        proc, fake, out_dir = self.start_job(name, {"FAKE_DELIVERY": delivery})
        self.signal_once_started(proc, fake)
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        self.assertTrue(os.path.exists(os.path.join(out_dir, "PREEMPTED")), "the training process got SIGUSR1")
        with open(os.path.join(fake, "launcher_exit")) as f:
            self.assertEqual(f.read(), "75", "the launcher outlives SIGUSR1 and reports the training process's exit")
        self.assertIn("scancel --signal=USR1 4242", self.calls(fake))
        self.assertIn("scontrol requeue 4242", self.calls(fake))

    @parameterized.named_parameters(("launcher_killed", "single_node", "launcher"), ("step_terminated", "single_node", "step"),
                                    ("launcher_killed_multi_node", "multi_node", "launcher"))
    def test_training_outlives_its_launcher_until_saved_and_requeues(self, name: str, kill: str) -> None:
        """SIGTERM to the launcher alone (it dies at once), or to every process of the job step (as Slurm
        sends at a cancel or a preemption): the training process gets the signal (from the kernel when
        its launcher dies), and the step lasts until its save is done: Slurm kills what is left of a step
        whose task has exited. Then the job requeues."""
        proc, fake, out_dir = self.start_job(name, {"FAKE_SAVE_SECONDS": "1"})
        self.wait_for_training(proc, fake)
        with open(os.path.join(fake, "launcher.pid" if kill == "launcher" else "task.pid")) as f:
            target = int(f.read())
        for pid in [target] if kill == "launcher" else process_tree(target):
            os.kill(pid, signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        self.assertTrue(os.path.exists(os.path.join(out_dir, "PREEMPTED")), "the step ended before the save was done")
        self.assertIn("scontrol requeue 4242", self.calls(fake))

    def test_requeued_job_resumes_under_the_same_wandb_run(self) -> None:
        proc, fake, out_dir = self.start_job("single_node", {"SLURM_RESTART_COUNT": "1", "FAKE_MODE": "finish"})
        os.makedirs(out_dir)
        open(os.path.join(out_dir, "PREEMPTED"), "w").close()  # left by the run before the requeue
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        with open(os.path.join(fake, "run-0.json")) as f:
            run = json.load(f)
        self.assertEqual(run["argv"][-2:], ["--resume_from_checkpoint", "auto"])
        self.assertEqual((run["WANDB_RUN_ID"], run["WANDB_RESUME"]), ("slurm-cluster-4242", "allow"))
        self.assertFalse(os.path.exists(os.path.join(out_dir, "PREEMPTED")))
        self.assertNotIn("requeue", self.calls(fake))

    def test_first_start_does_not_resume(self) -> None:
        proc, fake, _ = self.start_job("single_node", {"FAKE_MODE": "finish"}, GPUS="4")
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        with open(os.path.join(fake, "run-0.json")) as f:
            self.assertEqual(json.load(f)["argv"], ["--dataset_name", "sst2", "--output_dir", "runs/sst2-4242"])
        with open(os.path.join(fake, "launcher.json")) as f:
            self.assertEqual(json.load(f)[:4], ["--config_file", "configs/multi_gpu.yaml", "--num_processes", "4"])

    def test_multi_node_launch_gets_rank_and_rendezvous_on_each_node(self) -> None:
        proc, fake, _ = self.start_job("multi_node", {"FAKE_MODE": "finish", "SLURM_NNODES": "2", "SLURM_NODEID": "1"})
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        with open(os.path.join(fake, "launcher.json")) as f:
            launcher = json.load(f)
        flags = dict(zip(launcher[: launcher.index("seq2seq.py")][::2], launcher[: launcher.index("seq2seq.py")][1::2]))
        self.assertEqual(flags, {"--machine_rank": "1", "--config_file": "configs/multi_node.yaml", "--num_machines": "2",
                                 "--num_processes": "16", "--main_process_ip": "node-a", "--main_process_port": "24242"})

    def test_sweep_agent_runs_until_the_sweep_ends(self) -> None:
        proc, fake, _ = self.start_job("sweep_agent", {"FAKE_MODE": "finish", "FAKE_SWEEP_RUNS": "2", "WANDB_RUN_ID": "leaked"})
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        self.assertEqual(self.calls(fake).count("wandb agent --count 1 entity/project/abc123"), 2)
        self.assertTrue(all(json.load(open(os.path.join(fake, f"run-{i}.json")))["WANDB_RUN_ID"] is None for i in (0, 1)))

    def test_sweep_agent_stops_its_run_and_requeues(self) -> None:
        proc, fake, out_dir = self.start_job("sweep_agent", {"FAKE_DELIVERY": "task"})  # the run is a grandchild
        self.signal_once_started(proc, fake)
        self.assertEqual(proc.wait(timeout=30), 0, self.log(proc))
        self.assertTrue(os.path.exists(os.path.join(out_dir, "PREEMPTED")), "the sweep's run got SIGUSR1")
        self.assertEqual(self.calls(fake).count("wandb agent"), 1, "no new run after the warning")
        self.assertIn("scontrol requeue 4242", self.calls(fake))


# --- Docker ---------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def dockerignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*") for p in patterns)


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_KEY|CREDENTIAL|_KEY\b", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40}|wandb_v1_[A-Za-z0-9_]{20,})\b")


class DockerfileTest(absltest.TestCase):
    def test_base_image_and_pins(self) -> None:
        instructions = dockerfile_instructions()
        self.assertEqual(instructions[0], ("FROM", "python:3.11-slim"))
        runs = " ".join(args for op, args in instructions if op == "RUN")
        # The same environment as `make install`: torch by its pin, the rest from the hashed locks.
        self.assertIn("pip install \"$(grep -E '^torch==' requirements.txt)\"", runs)
        self.assertIn("pip install --require-hashes --no-deps -r requirements.lock", runs)
        self.assertIn(("CMD", '["python", "seq2seq.py", "--help"]'), instructions)
        self.assertNotIn("ENTRYPOINT", [op for op, _ in instructions], "`docker run IMAGE python any_script.py ...`")

    def test_every_copied_file_exists_and_is_not_dockerignored(self) -> None:
        with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
            ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        copied = set()
        for op, args in dockerfile_instructions():
            if op not in ("COPY", "ADD"):
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            for source in words[:-1]:
                matches = glob.glob(os.path.join(ROOT, source))
                self.assertNotEmpty(matches, f"COPY {source}: nothing in the repository")
                for match in matches:
                    rel = os.path.relpath(match, ROOT)
                    self.assertFalse(dockerignored(rel, ignored), f"COPY {rel}, but .dockerignore excludes it")
                    copied.add(rel)
        for script in ("pre_train_t5.py", "fine_tune_t5.py", "seq2seq.py", "clf.py", "arguments.py", "trainers.py"):
            self.assertIn(script, copied)
        for local_state in (".venv", ".git", "runs", "wandb", "mount/models", "__pycache__"):
            self.assertTrue(any(local_state in p for p in ignored), f".dockerignore must exclude {local_state}")

    def test_no_secret_is_baked_in(self) -> None:
        for op, args in dockerfile_instructions():
            if op in ("ENV", "ARG", "LABEL"):
                for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", args) or args.split()[:1]:
                    self.assertIsNone(SECRET_NAME.search(name), f"{op} {name}: pass secrets with `docker run -e`")
            self.assertIsNone(SECRET_VALUE.search(args), f"{op} {args}: looks like a token")


if __name__ == "__main__":
    absltest.main()
