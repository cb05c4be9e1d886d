"""Peak memory of fine-tuning: the whole model against LoRA adapters (`--lora_r`), same model, data and steps.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/lora_memory.py            # a T5-v1.1-base-sized random model (248M parameters)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/lora_memory.py --small    # a tiny model: the CI smoke

Each variant is `fine_tune_t5.main` on the offline toy task in a process of its own (so that one run's
allocations cannot hide another's), `--max_steps` steps of batch `--batch_size`, no checkpoints, then the
evaluation of `--eval_samples` examples; the process reports its peak resident memory (ru_maxrss) and,
on a GPU, torch's CUDA peak. Variants: {full, LoRA} x the optimizers in `--optims` (T5's Adafactor, the
scripts' default, keeps factored second moments: little state to save; AdamW keeps two fp32 moments per
trained parameter, which is where LoRA saves most). The model is saved once, with a tokenizer trained on the task's text
(`modeling.train_tokenizer`) and T5's 32128 embedding rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import machine  # noqa: E402  (bench/machine.py: the script's folder is on sys.path)

SIZES = {
    "small": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4),
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_layers=12, num_heads=12),  # google/t5-v1_1-base
}
VOCAB_ROWS = 32128  # T5's checkpoints

# Run in a child process: fine_tune_t5.main(ARGV), then the peaks as one JSON line.
CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import torch, fine_tune_t5
fine_tune_t5.main({argv!r})
peak = {{"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
if torch.cuda.is_available():
    peak["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
print("PEAK " + json.dumps(peak))
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_steps", type=int, default=3)
    parser.add_argument("--eval_samples", type=int, default=16)
    parser.add_argument("--optims", default="adafactor,adamw_torch", help="comma-separated: adafactor (T5's), adamw_torch")
    parser.add_argument("--small", action="store_true", help="a tiny model (the smoke test)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def prepare(tmp: str, size: str) -> tuple[str, str, int]:
    """(model dir, toy data dir, parameter count): a fresh T5 v1.1 of `size` with T5's vocabulary size."""
    import torch

    from examples import write_toy_benchmark
    from modeling import new_t5, save_tokenizer, t5_v1_1_config, train_tokenizer

    data = os.path.join(tmp, "toy")
    folder = write_toy_benchmark(data, **({"n_train": 64, "n_validation": 8, "n_test": 4} if size == "small" else {}))
    with open(folder / "train.tsv", encoding="utf-8") as f:
        texts = [line.split("\t")[0] for line in f][1:]
    tokenizer = train_tokenizer(texts, vocab_size=500)
    torch.manual_seed(0)
    model = new_t5(t5_v1_1_config(VOCAB_ROWS if size == "base" else len(tokenizer), tokenizer, **SIZES[size]))
    model_dir = os.path.join(tmp, "model")
    model.save_pretrained(model_dir)
    save_tokenizer(tokenizer, model_dir)
    return model_dir, data, sum(p.numel() for p in model.parameters())


def run_variant(tmp: str, model_dir: str, data: str, args: argparse.Namespace, optim: str, lora: bool) -> dict[str, Any]:
    name = f"{'lora' if lora else 'full'}_{optim}"
    argv = ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", data, "--model_name_or_path", model_dir,
            "--output_dir", os.path.join(tmp, name), "--max_steps", str(args.max_steps), "--per_device_train_batch_size",
            str(args.batch_size), "--per_device_eval_batch_size", str(args.batch_size), "--max_eval_samples", str(args.eval_samples),
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", "--logging_steps", "1"]
    if optim != "adafactor":
        argv += ["--optim", optim, "--learning_rate", "1e-4"]
    if lora:
        argv += ["--lora_r", str(args.lora_r)]
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, argv=argv)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    peak = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PEAK "))[5:])
    with open(os.path.join(tmp, name, "all_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    trainable = next((line.split("trainable parameters ")[1].split(" of ")[0] for line in proc.stdout.splitlines()
                      if "LoRA: trainable parameters" in line), None)
    return {"variant": name, "optim": optim, "lora": lora, **peak, "train_loss": results["train_loss"],
            "trainable_parameters": int(trainable.replace(",", "")) if trainable else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = "small" if args.small else "base"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data, parameters = prepare(tmp, size)
        rows = []
        for optim in args.optims.split(","):
            for lora in (False, True):
                rows.append(run_variant(tmp, model_dir, data, args, optim, lora))
                print(f"--- {rows[-1]['variant']}: peak RSS {rows[-1]['max_rss_mib']:.0f} MiB", flush=True)
    for row in rows:
        if row["trainable_parameters"] is None:
            row["trainable_parameters"] = parameters
    report = {"machine": machine(), "size": size, "model": SIZES[size], "parameters": parameters, "lora_r": args.lora_r,
              "batch_size": args.batch_size, "max_steps": args.max_steps, "variants": rows}
    key = "cuda_peak_mib" if "cuda_peak_mib" in rows[0] else "max_rss_mib"
    print(f"\n{report['machine']}; T5 v1.1 {size} ({parameters / 1e6:.1f}M parameters), LoRA r={args.lora_r}, "
          f"{args.max_steps} steps of batch {args.batch_size}")
    print(f"{'variant':<24} {'trainable':>12} {key:>14} {'full / LoRA':>12}")
    for optim in args.optims.split(","):
        full, lora = (r for r in rows if r["optim"] == optim)
        report[f"ratio_{optim}"] = full[key] / lora[key]
        for r in (full, lora):
            ratio = f"{report[f'ratio_{optim}']:.2f}x" if r is lora else ""
            print(f"{r['variant']:<24} {r['trainable_parameters']:>12,} {r[key]:>14.0f} {ratio:>12}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
