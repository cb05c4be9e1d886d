"""Pre-training throughput: our pipeline (defaults, recommended recipe) against a hand-written PyTorch loop.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretrain_throughput.py                  # CPU: T5-small-sized, batch 4
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretrain_throughput.py --size base --batch_size 64   # GPU
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretrain_throughput.py --variants a,b,c,compile,adamw_fused,workers

Variants, run one after another in this process on the same initial weights, rows, batches and noise:
  (a) `pre_train_t5.main` with its default settings,
  (b) `pre_train_t5.main` with the recommended recipe for the device (RECIPES),
  (c) a minimal hand-written training loop: fp32, eager, the same T5 Adafactor, schedule and clipping,
  plus optional extras (EXTRAS: one option each on top of the defaults).
Every variant trains `--warmup_steps + --steps` steps; only the steps after warm-up are timed (the wall
time between step ends, data loading and logging included). The list runs `--repeats` times over
(c, a, b, c, a, b, ...) and each variant's timed steps pool, so that drift on a shared machine hits
all variants alike; the median step time is reported. The data is the embedded default corpus
(Python standard library docstrings) packed into 568-token rows, rows in order (the pipeline gets
`--train_sampling_strategy sequential`, which changes which rows come first, not the speed), so the
loss curves compare batch for batch: (a) should equal (c) to the logged 4 decimals, (b) should follow it.

Reported per variant: seconds per step, input (encoder) tokens/s, samples/s, and model FLOP utilisation:
model FLOPs per step (matmuls counted from the model's dimensions, 3x the forward pass; `step_flops`)
over the peak of a large matmul measured on the same device in this run, in fp32 and in bf16.

On a CPU without bf16 instructions (AVX2 only, or AVX-512 without BF16), bf16 is emulated, ~50x slower than
fp32: the bf16 variants and the bf16 peak are skipped with a line saying why, and (b) is the fastest fp32
recipe (CPU_FP32_RECIPE); `--cpu_bf16 yes` measures them anyway.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

# Model sizes (T5 v1.1 style: gated-GELU, untied output layer, vocab 32128 as T5's checkpoints).
SIZES = {
    "tiny": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4),  # CI smoke
    "small": dict(d_model=512, d_ff=1024, d_kv=64, num_layers=6, num_heads=8),  # the T5-small-sized config
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_layers=12, num_heads=12),  # google/t5-v1_1-base
}
VOCAB_SIZE = 32128
SEED = 42

# The recommended recipe per device (README: "Fastest pre-training"). On the CPU, compiling is what makes
# bf16 pay: eager autocast re-casts every weight at every matmul, compiled graphs fuse the casts.
RECIPES = {
    "cpu": ["--bf16", "--torch_compile"],
    "cuda": ["--bf16", "--tf32", "True", "--torch_compile", "--dataloader_num_workers", "2"],
}
# A CPU without bf16 instructions (AVX2 only, or AVX-512 without BF16) emulates bf16 matmuls, ~50x slower
# than fp32: its recipe is the fastest fp32 one, and the bf16 variants (and the bf16 peak) are skipped.
CPU_FP32_RECIPE = ["--torch_compile"]
# One option on top of the defaults, for the README's table of options ("plain_bf16": loop (c) in bf16 autocast).
EXTRAS = {
    "plain_bf16": [],
    "bf16": ["--bf16"],
    "compile": ["--torch_compile"],
    "adamw_fused": ["--optim", "adamw_torch_fused", "--learning_rate", "1e-3"],
    "transformers_adafactor": ["--no_adafactor_scale_parameter"],
    "workers": ["--dataloader_num_workers", "1"],
    "tf32": ["--tf32", "True"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_seq_length", type=int, default=512, help="encoder length after corruption (rows of 568 -> 512/114)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (compilation, allocator warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="run the variant list this many times over, interleaved; step times pool")
    parser.add_argument("--variants", default="c,a,b", help=f"comma-separated, run in this order: a, b, c, {', '.join(EXTRAS)}")
    parser.add_argument("--matmul_size", type=int, default=None, help="side of the peak-FLOP/s matmul (default: 4096 CPU, 8192 GPU)")
    parser.add_argument("--workdir", default=None, help="where the initial model and runs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--cpu_bf16", choices=("auto", "yes", "no"), default="auto",
                        help="on a CPU: measure the bf16 variants (yes), skip them (no), or decide from the CPU's bf16 "
                        "instructions (auto; without them bf16 is ~50x slower than fp32 and the bf16 peak alone takes minutes)")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in ("a", "b", "c", *EXTRAS)]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from a, b, c, {', '.join(EXTRAS)}")
    return args


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_measured(kind: str, cpu_bf16: str) -> bool:
    """Whether this run measures bf16: always on a GPU; on a CPU per --cpu_bf16 (auto: the CPU's bf16 instructions)."""
    if kind != "cpu" or cpu_bf16 == "yes":
        return True
    if cpu_bf16 == "no":
        return False
    from trainer_arguments import cpu_has_native_bf16

    return cpu_has_native_bf16()


def plan(kind: str, variants: list[str], bf16: bool) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(the flags of each variant that runs, {skipped variant: why}). Without bf16, (b) is the fastest fp32
    recipe and every bf16 variant is skipped."""
    recipe = RECIPES[kind] if bf16 or kind != "cpu" else CPU_FP32_RECIPE
    flags, skipped = {}, {}
    for name in variants:
        extra = [] if name in ("a", "c", "plain_bf16") else recipe if name == "b" else EXTRAS[name]
        if not bf16 and (name == "plain_bf16" or "--bf16" in extra):
            skipped[name] = ("this CPU has no bf16 instructions (AVX-512 BF16 or AMX): bf16 matmuls are emulated, "
                             "~50x slower than fp32 (--cpu_bf16 yes measures it anyway)")
            continue
        flags[name] = extra
    return flags, skipped


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- FLOPs -------------------------------------------------------------------------------------------


def step_flops(config: Any, batch_size: int, input_length: int, target_length: int) -> float:
    """Model FLOPs of one training step: 3x the forward pass's matmul FLOPs (backward = 2x forward).

    Counted per layer from the config: attention projections (q, k, v, o), attention scores and
    weighted sums, the gated feed-forward (wi_0, wi_1, wo) and the output layer; element-wise work
    (norms, softmax, position bias) is left out, as in the usual MFU accounting (PaLM, nanoT5).
    """
    d, inner, ff, vocab = config.d_model, config.num_heads * config.d_kv, config.d_ff, config.vocab_size
    ff_matrices = 3 if config.is_gated_act else 2
    enc, dec = input_length, target_length
    encoder_layer = enc * (4 * d * inner + 2 * enc * inner + ff_matrices * d * ff)
    decoder_layer = (
        dec * (4 * d * inner + 2 * dec * inner)  # self-attention
        + dec * 2 * d * inner + enc * 2 * d * inner + dec * 2 * enc * inner  # cross-attention: q, o; k, v; scores
        + dec * ff_matrices * d * ff
    )
    multiply_adds = config.num_layers * encoder_layer + config.num_decoder_layers * decoder_layer + dec * d * vocab
    return 3 * 2 * multiply_adds * batch_size


def matmul_peak(dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a `size` x `size` matmul in `dtype` on this run's device."""
    device = device_kind()
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    torch.matmul(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# --- Set-up: one corpus file, one initial model --------------------------------------------------------


def prepare(workdir: str, size: str) -> tuple[str, str, str]:
    """(train file, validation file, initial model dir): the default corpus as text files and a fresh T5."""
    from corpus import stdlib_documents
    from modeling import new_t5, save_tokenizer, t5_v1_1_config, train_tokenizer

    documents = [" ".join(doc.split()) for doc in stdlib_documents()]
    train_file, validation_file = os.path.join(workdir, "train.txt"), os.path.join(workdir, "validation.txt")
    with open(train_file, "w", encoding="utf-8") as f:
        f.write("\n".join(documents[:-200]) + "\n")
    with open(validation_file, "w", encoding="utf-8") as f:
        f.write("\n".join(documents[-200:]) + "\n")
    model_dir = os.path.join(workdir, "init")
    tokenizer = train_tokenizer(iter(documents), 32000, seed=SEED)  # the corpus supports ~13.5k pieces
    torch.manual_seed(SEED)
    model = new_t5(t5_v1_1_config(VOCAB_SIZE, tokenizer, **SIZES[size]))
    model.save_pretrained(model_dir)
    save_tokenizer(tokenizer, model_dir)
    return train_file, validation_file, model_dir


# --- The variants --------------------------------------------------------------------------------------


class Record:
    """Step-end times and per-step losses of one variant."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []

    def durations(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])][warmup:]


def pipeline_argv(args: argparse.Namespace, files: tuple[str, str, str], output_dir: str, extra: list[str]) -> list[str]:
    train_file, validation_file, model_dir = files
    return [
        "--model_name_or_path", model_dir, "--train_file", train_file, "--validation_file", validation_file,
        "--output_dir", output_dir, "--overwrite_output_dir",
        "--max_seq_length", str(args.max_seq_length), "--per_device_train_batch_size", str(args.batch_size),
        "--max_steps", str(args.warmup_steps + args.steps), "--train_sampling_strategy", "sequential",
        "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--max_eval_samples", str(args.batch_size), "--per_device_eval_batch_size", str(args.batch_size),
        "--disable_tqdm", "True", "--seed", str(SEED),
        *extra,
    ]


def run_pipeline(args: argparse.Namespace, files: tuple[str, str, str], output_dir: str, extra: list[str]) -> Record:
    """pre_train_t5.main with a callback that notes each step's end and logged loss."""
    from transformers import TrainerCallback

    import pre_train_t5

    record = Record()

    class StepClock(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            sync()
            record.times.append(time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            sync()
            record.times.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **k: Any) -> None:
            if logs and "loss" in logs:
                record.losses.append(float(logs["loss"]))

    pre_train_t5.main(pipeline_argv(args, files, output_dir, extra), callbacks=[StepClock()])
    return record


def run_plain_loop(args: argparse.Namespace, files: tuple[str, str, str], bf16: bool = False) -> Record:
    """A minimal PyTorch loop: fp32 (or bf16 autocast), eager, the pipeline's rows, collator, Adafactor,
    schedule and clipping."""
    import contextlib

    from torch.utils.data import DataLoader
    from transformers import get_scheduler
    from transformers.optimization import Adafactor

    from corpus import find_corpus_files, load_raw_corpus, tokenize_and_pack
    from data_collators import T5DataCollator, compute_input_and_target_lengths
    from modeling import load_model, load_tokenizer

    train_file, validation_file, model_dir = files
    tokenizer = load_tokenizer(model_dir)
    expanded, _ = compute_input_and_target_lengths(args.max_seq_length, 0.15, 3.0)
    raw = load_raw_corpus(find_corpus_files(train_file, validation_file, None), None, None, "text", False)
    one_process = lambda desc="": contextlib.nullcontext()  # noqa: E731  (main_process_first stand-in)
    rows = tokenize_and_pack(raw, tokenizer, expanded, "text", None, one_process)["train"]
    rows = rows.map(lambda _, i: {"row_id": i}, with_indices=True)
    collator = T5DataCollator(tokenizer, 0.15, 3.0, args.max_seq_length, seed=SEED)
    loader = DataLoader(rows, batch_size=args.batch_size, shuffle=False, collate_fn=collator)

    torch.manual_seed(SEED)
    model = load_model(model_dir, dropout_rate=0.0).to(device_kind())
    model.train()
    total = args.warmup_steps + args.steps
    optimizer = Adafactor(model.parameters(), lr=1e-2, scale_parameter=True, relative_step=False, warmup_init=False)
    schedule = get_scheduler("inverse_sqrt", optimizer, num_warmup_steps=math.ceil(0.01 * total),
                             scheduler_specific_kwargs={"timescale": 10000})
    record = Record()
    sync()
    record.times.append(time.perf_counter())
    for step, batch in enumerate(loader):
        if step == total:
            break
        batch = {key: value.to(model.device) for key, value in batch.items() if key != "row_id"}
        with torch.autocast(device_kind(), dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        record.losses.append(loss.item())
        sync()
        record.times.append(time.perf_counter())
    return record


# --- Report --------------------------------------------------------------------------------------------


def summarise(name: str, records: list[Record], args: argparse.Namespace, flops: float, peaks: dict[str, float],
              precision: str) -> dict[str, Any]:
    durations = [d for record in records for d in record.durations(args.warmup_steps)]
    seconds = statistics.median(durations)
    flops_per_s = flops / seconds
    return {
        "variant": name,
        "precision": precision,
        "seconds_per_step": seconds,
        "seconds_per_step_min_max": [min(durations), max(durations)],
        "input_tokens_per_s": args.batch_size * args.max_seq_length / seconds,
        "samples_per_s": args.batch_size / seconds,
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu_vs_fp32_peak": flops_per_s / peaks["fp32"],
        "mfu_vs_bf16_peak": flops_per_s / peaks["bf16"] if "bf16" in peaks else None,
        "losses": records[0].losses,
    }


def describe(name: str, extra: list[str]) -> str:
    return {"a": "(a) pipeline, defaults", "b": "(b) pipeline, recipe: " + " ".join(extra),
            "c": "(c) plain PyTorch loop, fp32 eager", "plain_bf16": "plain PyTorch loop, bf16 autocast"}.get(name, f"pipeline + {' '.join(extra)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    kind = device_kind()
    variants = args.variants.split(",")
    bf16 = bf16_measured(kind, args.cpu_bf16)
    flags, skipped = plan(kind, variants, bf16)
    for name, why in skipped.items():
        print(f"--- skipping {name}: {why}", flush=True)
    variants = list(flags)
    if not variants:
        raise SystemExit("bench/pretrain_throughput.py: every variant asked for runs in bf16, which this CPU lacks; "
                         "add c, a or b to --variants, or pass --cpu_bf16 yes")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_pretrain_")
    os.makedirs(workdir, exist_ok=True)
    files = prepare(workdir, args.size)

    from modeling import load_config
    from data_collators import compute_input_and_target_lengths

    config = load_config(files[2])
    _, target_length = compute_input_and_target_lengths(args.max_seq_length, 0.15, 3.0)
    flops = step_flops(config, args.batch_size, args.max_seq_length, target_length)
    size = args.matmul_size or (8192 if kind == "cuda" else 4096)
    peaks = {"fp32": matmul_peak(torch.float32, size)}
    if bf16:
        peaks["bf16"] = matmul_peak(torch.bfloat16, size)

    records: dict[str, list[Record]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in variants:
            print(f"--- {describe(name, flags[name])} (repeat {repeat + 1} of {args.repeats})", flush=True)
            if name in ("c", "plain_bf16"):
                records[name].append(run_plain_loop(args, files, bf16=name == "plain_bf16"))
            else:
                records[name].append(run_pipeline(args, files, os.path.join(workdir, f"run_{name}"), flags[name]))
    results = []
    for name in variants:
        # The pipeline's default is bf16 on GPUs.
        in_bf16 = name == "plain_bf16" or (name != "c" and ("--bf16" in flags[name] or kind == "cuda"))
        summary = summarise(name, records[name], args, flops, peaks, "bf16" if in_bf16 else "fp32")
        results.append(dict(summary, flags=flags[name]))

    report = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if kind == "cuda" else f"CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "size": args.size, "model": {k: getattr(config, k) for k in ("d_model", "d_ff", "d_kv", "num_heads", "num_layers", "num_decoder_layers", "vocab_size")},
        "batch": f"{args.batch_size} x {args.max_seq_length}/{target_length}",
        "steps": args.steps, "warmup_steps": args.warmup_steps, "repeats": args.repeats,
        "step_tflops": flops / 1e12,
        "peak_tflops_per_s": {k: v / 1e12 for k, v in peaks.items()},
        "bf16_measured": bf16,
        "skipped": skipped,
        "variants": results,
    }
    # Ratios against (c), or against the first variant when (c) did not run.
    base = next((r for r in results if r["variant"] == "c"), results[0])
    report["baseline"] = base["variant"]
    for r in results:
        r["speedup_vs_baseline"] = base["seconds_per_step"] / r["seconds_per_step"]
        steps = min(len(r["losses"]), len(base["losses"]))
        r["max_abs_loss_diff_vs_baseline"] = max((abs(x - y) for x, y in zip(r["losses"][:steps], base["losses"][:steps])), default=None)
    print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['device']}, torch {report['torch']}, {report['size']} {report['model']}, batch {report['batch']}, "
          f"{report['repeats']} x {report['steps']} timed steps after {report['warmup_steps']} warm-up, {report['date']}")
    print(f"model FLOPs per step: {report['step_tflops']:.3f} TFLOP; matmul peak: "
          + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in report["peak_tflops_per_s"].items()))
    base = report["baseline"]
    header = f"{'variant':<44} {'s/step':>8} {'tokens/s':>9} {'samples/s':>9} {'MFU':>6} {'vs ' + base:>7} {'max |dloss|':>11}"
    print(header)
    for r in report["variants"]:
        mfu = r["mfu_vs_bf16_peak"] if r["precision"] == "bf16" else r["mfu_vs_fp32_peak"]
        speedup = f"{r['speedup_vs_baseline']:.2f}x"
        diff = f"{r['max_abs_loss_diff_vs_baseline']:.4f}" if r["max_abs_loss_diff_vs_baseline"] is not None else "-"
        print(f"{describe(r['variant'], r['flags']):<44.44} {r['seconds_per_step']:>8.3f} {r['input_tokens_per_s']:>9.1f} "
              f"{r['samples_per_s']:>9.2f} {mfu:>6.1%} {speedup:>7} {diff:>11}")
    for name, why in report["skipped"].items():
        print(f"{name}: skipped: {why}")
    print(f"MFU: against the matmul peak of the variant's precision; speed and loss compared with {base}. Losses per step:")
    for r in report["variants"]:
        print(f"  {r['variant']:<12} " + " ".join(f"{x:.4f}" for x in r["losses"]))


if __name__ == "__main__":
    main()
