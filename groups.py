"""Experiment groups: one YAML file names a script, the arguments its runs share and a grid (and/or a list) of the
arguments that vary; this launches every run, on Slurm as one job array or on this machine, and gathers them.

    python groups.py launch GROUP.yaml                       # sbatch one job array (slurm/group_array.sbatch);
                                                             # again: a new array of the unfinished runs only
    python groups.py launch GROUP.yaml --executor local --parallel 2   # here, 2 runs at a time (laptops, CI)
    python groups.py monitor GROUP.yaml                      # run, state, last step / metric, output dir
    python groups.py stop GROUP.yaml                         # scancel the group's arrays
    python groups.py collect GROUP.yaml                      # every run's all_results.json -> one CSV

A group file:

    name: rte-lr                      # the group's folder: <output_root>/<name>
    script: fine_tune_t5.py
    args: {benchmark: glue, dataset_name: rte, model_name_or_path: google-t5/t5-base, max_steps: 4000}
    grid: {learning_rate: [1.0e-4, 1.0e-3], seed: [1, 2]}   # runs: the cross product (4 here)
    runs: [{dropout_rate: 0.0}, {dropout_rate: 0.1}]         # optional: each combined with every grid point
    slurm: {partition: gpu, account: nlp, gpus: 1, cpus: 8, time: "04:00:00", container_image: nvcr.io/...}
    output_root: runs/groups          # default

Each run's output dir is `<output_root>/<name>/<arg=value,...>` from the values that vary (for seq2seq.py and
clf.py, whose results go to `<mount_dir>/models/<training_run_name>`, the run name is `<name>--<arg=value,...>`).
The Slurm executor is ours, not submitit's: the array renders the same sbatch template machinery as a single
run (signal forwarding, checkpoint and requeue, pyxis containers, W&B run ids that survive a requeue) and
runs each script as a plain command line, where submitit pickles a Python function, which breaks when the
compute nodes' container or environment differs from the login node's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from bias import RESULTS_FILE as BIAS_RESULTS_FILE
from errors import UserError
from outputs import FINISHED_MARKER

ROOT = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("pre_train_t5.py", "fine_tune_t5.py", "seq2seq.py", "clf.py", "finetune_lm.py", "bias.py")
MOUNT_SCRIPTS = ("seq2seq.py", "clf.py")  # results under <mount_dir>/models/<training_run_name>
GROUP_KEYS = ("name", "script", "args", "grid", "runs", "slurm", "output_root")
SLURM_KEYS = {"gpus": "GPUS", "cpus": "CPUS", "time": "TIME", "max_parallel": "MAX_PARALLEL", "setup": "SETUP",
              "warn_seconds": "WARN_SECONDS", "max_requeues": "MAX_REQUEUES"}
SBATCH_LINES = ("partition", "account", "qos", "constraint", "mem", "reservation")  # each an #SBATCH --key=value line
CONTAINER_KEYS = ("container_image", "container_mounts", "container_workdir")
FINISHED = FINISHED_MARKER  # a training run's results, written last
EVALUATION_RESULTS = {"bias.py": BIAS_RESULTS_FILE}  # scripts that only evaluate: their results file; --no_train runs: eval_results.json
STATE_FILE = "group.json"  # in the group dir: the executor, the Slurm job id, the runs


@dataclasses.dataclass
class Run:
    index: int
    key: str  # "learning_rate=0.001,seed=1": the values that vary
    varying: dict[str, Any]
    argv: list[str]  # the script's arguments, output dir included
    output_dir: str
    results_file: str  # its presence marks the run finished

    @property
    def finished(self) -> bool:
        return os.path.isfile(os.path.join(self.output_dir, self.results_file))


@dataclasses.dataclass
class Group:
    path: str
    name: str
    script: str
    args: dict[str, Any]
    grid: dict[str, list[Any]]
    runs: list[dict[str, Any]]
    slurm: dict[str, Any]
    output_root: str

    @property
    def directory(self) -> str:
        return os.path.join(self.output_root, self.name)


# --- the group file ---------------------------------------------------------------------------------------------


def read_group(path: str) -> Group:
    """The group file, checked: one line naming the file and the key for each mistake."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise UserError(f"{path}: cannot read the group file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a group file is a mapping with keys {', '.join(GROUP_KEYS)}")
    unknown = sorted(set(data) - set(GROUP_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(GROUP_KEYS)}")
    name, script = data.get("name"), data.get("script")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UserError(f"{path}: name: {name!r} must be a plain folder name (letters, digits, . _ -)")
    if script not in SCRIPTS:
        raise UserError(f"{path}: script: {script!r}; valid: {', '.join(SCRIPTS)}")
    args, grid, runs, slurm = (data.get(k) or default for k, default in (("args", {}), ("grid", {}), ("runs", []), ("slurm", {})))
    for key, value, kind in (("args", args, dict), ("grid", grid, dict), ("runs", runs, list), ("slurm", slurm, dict)):
        if not isinstance(value, kind):
            raise UserError(f"{path}: {key}: must be a {'mapping' if kind is dict else 'list'}, not {type(value).__name__}")
    for arg, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid: {arg}: must be a non-empty list of values")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise UserError(f"{path}: runs[{i}]: must be a mapping of arguments")
    for arg in [*args, *grid, *(k for run in runs for k in run)]:
        if arg in ("output_dir", "training_run_name"):
            raise UserError(f"{path}: {arg}: set by the group for each run (<output_root>/<name>/<arg=value,...>); leave it out")
    known = set(SLURM_KEYS) | set(SBATCH_LINES) | set(CONTAINER_KEYS)
    bad = sorted(set(slurm) - known)
    if bad:
        raise UserError(f"{path}: slurm: unknown key {bad[0]!r}; valid: {', '.join(sorted(known))}")
    for where, mapping in [("args", args), ("grid", grid), *((f"runs[{i}]", run) for i, run in enumerate(runs))]:
        for arg, value in mapping.items():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and ("\n" in v or "\t" in v):
                    raise UserError(f"{path}: {where}: {arg}: a value holds a newline or tab; give it on one line")
    # Runs start in the repository root, on Slurm (--chdir) and here alike: relative paths are relative to it.
    output_root = os.path.join(ROOT, str(data.get("output_root") or "runs/groups"))
    return Group(path, name, script, args, grid, runs, slurm, os.path.normpath(output_root))


def value_word(value: Any) -> str:
    """A YAML value as the scripts' parsers read it (true -> True, 1.0e-4 -> 0.0001)."""
    return str(value)


def flag_words(arguments: Mapping[str, Any]) -> list[str]:
    """`{"learning_rate": 0.001, "tags": [a, b], "bf16": true}` -> `--learning_rate 0.001 --tags a b --bf16 True`."""
    words: list[str] = []
    for name, value in arguments.items():
        if value is None:
            continue
        words.append(f"--{name}")
        words += [value_word(v) for v in value] if isinstance(value, list) else [value_word(value)]
    return words


def run_key(varying: Mapping[str, Any]) -> str:
    """`arg=value,...` of the values that vary, made a safe folder name ("/" -> "-")."""
    text = ",".join(f"{k}={value_word(v) if not isinstance(v, list) else '+'.join(map(value_word, v))}" for k, v in varying.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "-", text) or "run"


def expand(group: Group) -> list[Run]:
    """The group's runs: every `runs` entry (or none) combined with every grid point, in file order."""
    points = [dict(zip(group.grid, values)) for values in itertools.product(*group.grid.values())]
    combos = [{**run, **point} for run in (group.runs or [{}]) for point in points]
    runs, seen = [], set()
    for index, varying in enumerate(combos):
        key = run_key(varying)
        if key in seen:
            raise UserError(f"{group.path}: two runs have the same arguments {key}; each run must differ")
        seen.add(key)
        arguments = {**group.args, **varying}
        if group.script in MOUNT_SCRIPTS:
            name = f"{group.name}--{key}"
            mount = os.path.join(ROOT, str(arguments.get("mount_dir", "mount")))  # runs start in the repository root
            output_dir, extra = os.path.normpath(os.path.join(mount, "models", name)), ["--training_run_name", name]
        else:
            output_dir = os.path.join(group.directory, key)
            extra = ["--output_dir", output_dir]
        evaluation_only = group.script in EVALUATION_RESULTS or arguments.get("no_train") in (True, "true", "True")
        results_file = EVALUATION_RESULTS.get(group.script, "eval_results.json") if evaluation_only else FINISHED
        runs.append(Run(index, key, varying, flag_words(arguments) + extra, output_dir, results_file))
    return runs


def check_arguments(group: Group, runs: list[Run]) -> None:
    """Every run's command line through its script's own light parser (flags and values; no torch, nothing
    read or written): a misspelt flag or a bad value fails the launch at once, not every task of the array
    after its wait in the queue."""
    import importlib

    from arguments import light_parse

    module = importlib.import_module(group.script[: -len(".py")])
    for run in runs:
        try:
            with contextlib.chdir(ROOT):  # where the runs start: a relative --config file is read from there
                light_parse(module.ARGUMENTS, run.argv)
        except UserError as err:
            where = f"run {run.key}" if run.key else "args"
            raise UserError(f"{group.path}: {where}: {group.script} refuses its arguments: {err}") from None


def command(group: Group, run: Run) -> list[str]:
    """The run's command line on the compute node: python, or accelerate launch over the job's GPUs."""
    gpus = int(group.slurm.get("gpus", 1))
    launcher = ["python"] if gpus <= 1 else ["accelerate", "launch", "--num_processes", str(gpus)]
    return launcher + [group.script] + run.argv


# --- executors ---------------------------------------------------------------------------------------------------


ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED",
         "SIGNALING", "STAGE_OUT")  # Slurm states of a task that may still run


def launch_slurm(group: Group, runs: list[Run], dry_run: bool = False) -> str:
    """Render slurm/group_array.sbatch for the runs and submit it; returns the job id (the script's path with
    --dry_run). A group launched before gets a new array of its unfinished runs only (no all_results.json), once
    none of its earlier tasks is queued or running; each array reads its own runs file."""
    jobs = slurm_jobs(read_state(group)) if os.path.isfile(os.path.join(group.directory, STATE_FILE)) else []
    if jobs:
        alive = [] if dry_run else [f"{job['job_id']}_{index}" for job in jobs
                                    for index, state in slurm_states(job["job_id"], len(job["runs"])).items() if state in ALIVE]
        if alive:
            raise UserError(f"{group.path}: launched before, and task {alive[0]} ({len(alive)} in all) is still queued or running; "
                            f"`python groups.py monitor {group.path}` to follow it, or `stop` it first")
        runs = [resumed(run) for run in runs if not run.finished]
        if not runs:
            print(f"every run of {group.path} has finished; nothing to launch (`python groups.py collect {group.path}`)")
            return jobs[-1]["job_id"]
    sys.path.insert(0, os.path.join(ROOT, "slurm"))
    from render import render

    suffix = f"-{len(jobs)}" if jobs else ""  # runs.tsv / group.sbatch, then runs-1.tsv / group-1.sbatch, ...
    os.makedirs(os.path.join(group.directory, "logs"), exist_ok=True)
    runs_file = os.path.abspath(os.path.join(group.directory, f"runs{suffix}.tsv"))
    with open(runs_file, "w", encoding="utf-8") as f:
        for run in runs:
            f.write(f"{run.output_dir}\t{shlex.join(command(group, run))}\n")
    values = {placeholder: str(group.slurm[key]) for key, placeholder in SLURM_KEYS.items() if key in group.slurm}
    container = [f"--{key.replace('_', '-')}={group.slurm[key]}" for key in CONTAINER_KEYS if group.slurm.get(key)]
    with open(os.path.join(ROOT, "slurm", "group_array.sbatch"), encoding="utf-8") as f:
        text = render(f.read(), **values, JOB_NAME=group.name, LAST_INDEX=str(len(runs) - 1), RUNS_FILE=runs_file,
                      LOG_DIR=os.path.abspath(os.path.join(group.directory, "logs")), CONTAINER=shlex.join(container))
    extra = "".join(f"#SBATCH --{key}={group.slurm[key]}\n" for key in SBATCH_LINES if group.slurm.get(key))
    text = re.sub(r"(#SBATCH --job-name=.*\n)", lambda m: m.group(1) + extra, text, count=1)
    job_file = os.path.join(group.directory, f"group{suffix}.sbatch")
    with open(job_file, "w", encoding="utf-8") as f:
        f.write(text)
    if dry_run:
        return job_file
    proc = slurm_command(["sbatch", "--parsable", job_file])
    if proc.returncode != 0:
        raise UserError(f"sbatch {job_file}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    job_id = proc.stdout.strip().split(";")[0]
    write_state(group, {"executor": "slurm", "jobs": [*jobs, {"job_id": job_id, "runs": [r.key for r in runs]}]})
    again = f" (the unfinished ones; earlier arrays: {', '.join(j['job_id'] for j in jobs)})" if jobs else ""
    print(f"submitted job array {job_id}: {len(runs)} runs of {group.script}{again}; `python groups.py monitor {group.path}` to follow")
    return job_id


def slurm_jobs(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The group's arrays, oldest first: {"job_id", "runs": the run keys, in array index order}."""
    if state.get("executor") != "slurm":
        return []
    return list(state["jobs"]) if "jobs" in state else [{"job_id": state["job_id"], "runs": state["runs"]}]


def resumed(run: Run) -> Run:
    """The run to launch again: a training run whose output dir an earlier attempt left (a failure, a time limit, a
    cancelled task) continues from its newest complete checkpoint (`--resume_from_checkpoint auto`, which starts
    fresh when there is none), rather than starting over and overwriting the attempt's checkpoints."""
    if (run.results_file != FINISHED or not os.path.isdir(run.output_dir)
            or any(word.split("=", 1)[0] == "--resume_from_checkpoint" for word in run.argv)):
        return run
    return dataclasses.replace(run, argv=[*run.argv, "--resume_from_checkpoint", "auto"])


def launch_local(group: Group, runs: list[Run], parallel: int) -> dict[str, int]:
    """Run the group here, `parallel` runs at a time; a run that already finished is skipped (so a relaunch
    completes a group). Returns each run's exit status; a log per run in <group dir>/logs/."""
    logs = os.path.join(group.directory, "logs")
    os.makedirs(logs, exist_ok=True)
    status: dict[str, int] = {}
    pending = [resumed(run) for run in runs if not run.finished]
    for run in runs:
        if run.finished:
            status[run.key] = 0
    active: list[tuple[Run, subprocess.Popen, Any]] = []
    while pending or active:
        while pending and len(active) < parallel:
            run = pending.pop(0)
            log = open(os.path.join(logs, f"{run.key}.log"), "w", encoding="utf-8")
            proc = subprocess.Popen([sys.executable, os.path.join(ROOT, group.script), *run.argv], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
            active.append((run, proc, log))
            print(f"started {run.key}", flush=True)
        time.sleep(0.2)
        for item in [a for a in active if a[1].poll() is not None]:
            run, proc, log = item
            log.close()
            status[run.key] = proc.returncode
            active.remove(item)
            print(f"{'finished' if proc.returncode == 0 else f'failed ({proc.returncode})'} {run.key}", flush=True)
        write_state(group, {"executor": "local", "runs": [r.key for r in runs], "returncodes": status})
    return status


def slurm_command(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"{argv[0]}: not found; this needs a Slurm login node (or use --executor local)") from None


def write_state(group: Group, state: Mapping[str, Any]) -> None:
    from outputs import write_json_atomic

    os.makedirs(group.directory, exist_ok=True)
    write_json_atomic(os.path.join(group.directory, STATE_FILE), dict(state))


def read_state(group: Group) -> dict[str, Any]:
    path = os.path.join(group.directory, STATE_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{group.path}: not launched yet (no {path}); run `python groups.py launch {group.path}`")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the group's state ({err}); it is written by `launch` only") from None
    if not isinstance(state, dict) or "executor" not in state:
        raise UserError(f"{path}: not a group state file (no \"executor\"); it is written by `launch` only")
    return state


# --- monitor, stop, collect -------------------------------------------------------------------------------------


def slurm_states(job_id: str, count: int) -> dict[int, str]:
    """Array index -> Slurm state: squeue for the tasks still queued or running (one line per task with -r),
    sacct for the rest."""
    states: dict[int, str] = {}
    sacct = slurm_command(["sacct", "-j", job_id, "--noheader", "--parsable2", "--format=JobID,State"])
    for line in sacct.stdout.splitlines():
        job, _, state = line.partition("|")
        match = re.fullmatch(rf"{re.escape(job_id)}_(\d+)", job.strip())
        if match:
            states[int(match.group(1))] = state.split()[0] if state.strip() else "UNKNOWN"
    squeue = slurm_command(["squeue", "-j", job_id, "-r", "-h", "-o", "%i %T"])
    if squeue.returncode != 0 and "invalid job id" not in squeue.stderr.lower():  # an array long gone: none of it queued
        raise UserError(f"squeue -j {job_id}: {squeue.stderr.strip() or f'exit status {squeue.returncode}'}; cannot tell which "
                        f"tasks are queued or running (try again)")
    for line in squeue.stdout.splitlines():
        job, _, state = line.strip().partition(" ")
        match = re.fullmatch(rf"{re.escape(job_id)}_(\d+)", job)
        if match:
            states[int(match.group(1))] = state.strip()
    return {i: states.get(i, "UNKNOWN") for i in range(count)}


def run_states(group: Group, runs: list[Run]) -> dict[str, str]:
    """Each run's state: on Slurm, its task's in the latest array that ran it; here, from its output dir and exit status."""
    state = read_state(group)
    jobs = slurm_jobs(state)
    if jobs:
        out: dict[str, str] = {}
        for job in jobs:  # a later array's task replaces an earlier one's
            states = slurm_states(job["job_id"], len(job["runs"]))
            out.update({key: states[index] for index, key in enumerate(job["runs"])})
        return {run.key: out.get(run.key, "UNKNOWN") for run in runs}
    return {run.key: local_state(run, state) for run in runs}


def local_state(run: Run, state: Mapping[str, Any]) -> str:
    if run.finished:
        return "COMPLETED"
    if os.path.exists(os.path.join(run.output_dir, "PREEMPTED")):
        return "PREEMPTED"
    code = state.get("returncodes", {}).get(run.key)
    return "PENDING" if code is None else "COMPLETED" if code == 0 else f"FAILED ({code})"


def last_progress(output_dir: str, results_file: str = FINISHED) -> tuple[str, str]:
    """(the last logged step, the last logged metric "name=value") from the run's results or its newest checkpoint."""
    finished = os.path.join(output_dir, results_file)
    history: list[dict[str, Any]] = []
    if os.path.isdir(output_dir):
        checkpoints = sorted((int(m.group(1)), n) for n in os.listdir(output_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", n)))
        states = [os.path.join(output_dir, "trainer_state.json")] + [os.path.join(output_dir, n, "trainer_state.json") for _, n in reversed(checkpoints)]
        for path in states:
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    history = json.load(f).get("log_history", [])
                break
    step = str(history[-1].get("step", "-")) if history else "-"
    metric = "-"
    for entry in reversed(history):
        keys = [k for k in entry if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))] or \
               [k for k in entry if k in ("loss", "train_loss")]
        if keys:
            metric = f"{keys[0]}={entry[keys[0]]:.4g}"
            break
    if os.path.isfile(finished) and metric == "-":
        with open(finished, encoding="utf-8") as f:
            results = json.load(f)
        key = next((k for k in results if k.startswith("eval_") and isinstance(results[k], (int, float))), None)
        metric = f"{key}={results[key]:.4g}" if key else "-"
    return step, metric


def monitor(group: Group, runs: list[Run]) -> list[dict[str, str]]:
    states = run_states(group, runs)
    rows = []
    for run in runs:
        step, metric = last_progress(run.output_dir, run.results_file)
        rows.append({"run": run.key, "state": states[run.key], "step": step, "metric": metric, "output_dir": run.output_dir})
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    print("  ".join(k.ljust(widths[k]) for k in widths))
    for row in rows:
        print("  ".join(row[k].ljust(widths[k]) for k in widths))
    return rows


def stop(group: Group) -> None:
    jobs = slurm_jobs(read_state(group))
    if not jobs:
        raise UserError(f"{group.path}: ran with the local executor; stop it with Ctrl-C (a relaunch skips the finished runs)")
    ids = [job["job_id"] for job in jobs]
    proc = slurm_command(["scancel", *ids])
    if proc.returncode != 0:
        raise UserError(f"scancel {' '.join(ids)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    print(f"scancel {' '.join(ids)}")


def collect(group: Group, runs: list[Run]) -> str:
    """<group dir>/results.csv: run, state, output_dir, one column per varying argument, one per results key."""
    states = run_states(group, runs)
    arg_columns = list(dict.fromkeys(k for run in runs for k in run.varying))
    rows, result_columns = [], []
    for run in runs:
        results: dict[str, Any] = {}
        path = os.path.join(run.output_dir, run.results_file)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        for key in results:
            if key not in result_columns:
                result_columns.append(key)
        rows.append({"run": run.key, "state": states[run.key], "output_dir": run.output_dir,
                     **{k: value_word(v) for k, v in run.varying.items()},
                     **{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in results.items()}})
    out = os.path.join(group.directory, "results.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "state", "output_dir", *arg_columns, *result_columns], restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} runs -> {out}")
    return out


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("launch", "monitor", "stop", "collect"))
    parser.add_argument("group_file")
    parser.add_argument("--executor", choices=("slurm", "local"), default="slurm", help="launch: Slurm job array, or here")
    parser.add_argument("--parallel", type=int, default=1, help="--executor local: runs at a time")
    parser.add_argument("--dry_run", action="store_true", help="launch on Slurm: write the job script, do not submit it")
    args = parser.parse_args(argv)
    group = read_group(args.group_file)
    runs = expand(group)
    if args.action == "launch":
        if args.parallel < 1:
            raise UserError(f"--parallel {args.parallel}: must be at least 1")
        check_arguments(group, runs)
        earlier = read_state(group).get("executor") if os.path.isfile(os.path.join(group.directory, STATE_FILE)) else None
        if earlier not in (None, args.executor):
            raise UserError(f"{group.path}: launched with --executor {earlier} before; relaunch it with --executor {earlier} "
                            f"(its {STATE_FILE} records that executor's runs)")
        if args.executor == "local":
            status = launch_local(group, runs, args.parallel)
            failed = sorted(k for k, code in status.items() if code != 0)
            if failed:
                raise UserError(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}; logs in {group.directory}/logs")
            return status
        return launch_slurm(group, runs, args.dry_run)
    if args.action == "monitor":
        return monitor(group, runs)
    if args.action == "stop":
        return stop(group)
    return collect(group, runs)


if __name__ == "__main__":
    try:  # not errors.run_main: this process only starts runs, and SIGTERM should end it
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
