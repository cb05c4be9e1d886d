"""The two-command set-up stays consistent: pins, conda environment, Makefile, CI entry, configs."""

from __future__ import annotations

import json
import os
import re

import yaml
from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)\s*(#.*)?", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


class SetupTest(absltest.TestCase):
    def test_every_requirement_is_pinned_exactly(self) -> None:
        lines = [l for l in read("requirements.txt").splitlines() if l.strip() and not l.lstrip().startswith("#")]
        self.assertEqual(len(pins(lines)), len(lines), "every requirement must be pinned with ==")
        self.assertEqual(pins(lines)["torch"], "2.13.0")  # a bare or ranged torch pulls a multi-GB CUDA build

    def test_conda_environment_matches_the_pins(self) -> None:
        env = yaml.safe_load(read("conda_environment_slurm.yml"))
        self.assertIn("python=3.11", env["dependencies"])
        pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        pinned = pins(read("requirements.txt").splitlines() + read("requirements-deepspeed.txt").splitlines())
        self.assertEqual(pins(pip_section), pinned)

    def test_the_hashed_locks_cover_the_pins_and_leave_torch_out(self) -> None:
        lock, deepspeed_lock = read("requirements.lock"), read("requirements-deepspeed.lock")
        locked: dict[str, str] = {}
        for name, text in (("requirements.lock", lock), ("requirements-deepspeed.lock", deepspeed_lock)):
            in_file: dict[str, str] = {}
            entries = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.MULTILINE)
            names = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)
            self.assertEqual(len(entries), len(names), f"{name}: every package has sha256 hashes")
            self.assertGreater(len(entries), 5, name)
            for package, version, _ in entries:  # a package may appear twice in one lock, per Python version (markers)
                self.assertNotIn(package.lower(), locked, f"{package} is in both locks")
                in_file.setdefault(package.lower(), version)
            locked.update(in_file)
        required = pins(read("requirements.txt").splitlines() + read("requirements-deepspeed.txt").splitlines())
        for package, version in required.items():
            if package == "torch":  # per-platform wheels: installed by its pin, kept out of the lock
                self.assertNotIn("torch", locked)
                continue
            self.assertEqual(locked.get(package), version, f"{package}=={version} of requirements*.txt is not in the lock")
        self.assertFalse([p for p in locked if p.startswith(("nvidia-", "cuda-")) or p == "triton"], "torch's CUDA packages stay out")
        makefile = read("Makefile")
        self.assertIn("install -q --require-hashes --no-deps -r requirements.lock", makefile)
        self.assertIn('install -q "$(TORCH_PIN)"', makefile)

    def test_container_files_install_from_the_locks_and_pass_secrets_through(self) -> None:
        dockerfile = read("Dockerfile")
        self.assertTrue(dockerfile.startswith("# syntax=docker/dockerfile:1\n"), "the cache mount needs BuildKit's syntax line first")
        self.assertIn("--require-hashes --no-deps -r requirements.lock", dockerfile)
        self.assertIn("--require-hashes --no-deps -r requirements-deepspeed.lock", dockerfile)
        self.assertNotRegex(dockerfile, r"(?i)(WANDB_API_KEY|HF_TOKEN)\s*=")  # no secret baked in
        dev = json.loads(read(".devcontainer/devcontainer.json"))
        self.assertEqual(dev["build"], {"dockerfile": "../Dockerfile", "context": ".."})
        self.assertIn("--gpus", dev["runArgs"])
        self.assertEqual(dev["containerEnv"]["WANDB_API_KEY"], "${localEnv:WANDB_API_KEY}")
        self.assertEqual(dev["containerEnv"]["HF_TOKEN"], "${localEnv:HF_TOKEN}")
        self.assertTrue(any("target=/app/mount/.cache/huggingface,type=volume" in m for m in dev["mounts"]))

    def test_ci_runs_the_readme_test_command(self) -> None:
        ci = read(".ci/run")
        self.assertIn("make test", ci)
        readme = read("README.md")
        self.assertIn("make demo", readme)
        self.assertIn("make test", readme)
        makefile = read("Makefile")
        for target in ("install:", "demo: install", "test: install"):
            self.assertIn(target, makefile)

    def test_gpu_smoke_script_parses(self) -> None:
        import subprocess

        proc = subprocess.run(["bash", "-n", os.path.join(ROOT, "bench", "gpu_smoke.sh")], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_gpu_smoke_on_a_bare_python_skips_each_step_with_the_reason(self) -> None:
        """The offline GPU machines' case: their Python lacks our packages and the wheel folder lacks them too."""
        import subprocess
        import sys
        import tempfile

        tmp = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", os.path.join(tmp, "bare")], check=True)
        out = os.path.join(tmp, "out")
        env = {**os.environ, "PY": os.path.join(tmp, "bare", "bin", "python"), "SMOKE_OUT": out, "CPU": "1",
               "WHEELS": os.path.join(tmp, "no-wheels")}
        proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_smoke.sh")], capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        with open(os.path.join(out, "gpu_figures.json")) as f:
            figures = {s["step"]: s["result"] for s in json.load(f)}
        self.assertEqual(figures["setup"]["torch"], "missing (ModuleNotFoundError)")
        self.assertEqual(figures["pretrain_throughput"], {"skipped": "datasets is not installed"})
        self.assertEqual(figures["kl_overhead"], {"skipped": "datasets is not installed"})
        with open(os.path.join(out, "gpu_smoke.log")) as f:
            log = f.read()
        self.assertIn(f"skipped installing transformers: no wheel folder {env['WHEELS']}", log)

    def test_deepspeed_config_leaves_trainer_settings_to_the_trainer(self) -> None:
        config = json.loads(read("zero_stage2_config.json"))
        self.assertEqual(config["zero_optimization"]["stage"], 2)
        self.assertEqual(config["bf16"]["enabled"], "auto")  # a hard-coded true fails on fp32 CPU runs
        self.assertFalse(config["fp16"]["enabled"])  # T5 overflows in fp16
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            self.assertEqual(config[key], "auto", key)



class ModuleMapTest(absltest.TestCase):
    def test_readme_module_map_lists_every_module_of_the_tree(self) -> None:
        """The README's Layout table names each root module (and nothing that is gone)."""
        readme = read("README.md")
        table = readme[readme.index("## Layout"):]
        table = table[: table.index("\n## ")] if "\n## " in table else table
        first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
        listed = {name for cell in first_cells for name in re.findall(r"`([A-Za-z0-9_]+\.(?:py|json))`", cell)}
        on_disk = {name for name in os.listdir(ROOT) if name.endswith(".py") or name == "trainer_flags.json"}
        self.assertEqual(sorted(on_disk - listed), [], "modules missing from the README's Layout table")
        self.assertEqual(sorted(listed - on_disk), [], "the README's Layout table names modules that are gone")


if __name__ == "__main__":
    absltest.main()
