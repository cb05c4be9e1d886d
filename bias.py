"""Social-bias benchmarks for T5 and any Hugging Face language model: how a model ranks stereotyped against
anti-stereotyped sentences (CrowS-Pairs, StereoSet, WinoBias), and which attention heads carry it.

    python bias.py --dataset_name crows_pairs --dataset_dir data/crows --model_name_or_path bert-base-uncased \
        --output_dir runs/bias/bert-crows

`--dataset_dir` holds the benchmark's release files (crows_pairs_anonymized.csv, StereoSet's dev.json, the
eight WinoBias files) or the Hub's parquet copies; without it the Hub copies are loaded. The model type
(--model_task lm | mlm | seq2seq) is read from the checkpoint's config when not given. How each sentence is
scored, and each metric, is in bias_scoring.py and metrics.py (with their sources). Outputs: results.json
(every metric with its counts), scores.jsonl.gz (every input field and the sentences' scores), a bar
chart per bias type with the ideal line (bias_by_type.png), and the table printed. `--head_mask FILE`
masks attention heads (heads.py); `--head_importance` writes each head's gradient of the bias objective
(head_importance.npz, a heatmap per stack); `--mask_top_k K` re-scores with the K most bias-important heads
masked. `python bias.py --print_mask_shape --model_name_or_path M` prints the head-mask shapes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

# Only light modules here: flags, data and mask files are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from errors import UserError, run_main
from modeling import MODEL_TASKS, check_model_source, local_model_task
from outputs import RunLock, RunOutputs, check_output_dir, write_json_atomic

logger = logging.getLogger("bias")

RESULTS_FILE = "results.json"


@dataclass
class BiasArguments:
    """The benchmark, the model and what to do with its attention heads."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint: a Hub name (bert-base-uncased, gpt2, google-t5/t5-small) or a local dir."})
    dataset_name: Optional[str] = field(default=None, metadata={"help": "The benchmark: a task of the registry's 'bias' benchmark (crows_pairs, stereoset, winobias)."})
    dataset_dir: Optional[str] = field(default=None, metadata={"help": "Folder of the benchmark's release files or its Hub parquet layout; default: the Hub copy."})
    benchmark: str = field(default="bias", metadata={"help": "The registry's benchmark the task is read from (as in fine_tune_t5.py)."})
    model_task: Optional[str] = field(default=None, metadata={"help": "lm (causal), mlm (masked) or seq2seq (T5); default: read from the checkpoint's config."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache dir (default: HF's)."})
    split: str = field(default="test", metadata={"help": "WinoBias: the files' split to pair and score (dev or test; the paper reports test)."})
    max_examples: Optional[int] = field(default=None, metadata={"help": "Score only the first N examples (pairs; StereoSet examples of each kind)."})
    head_importance: bool = field(default=False, metadata={"help": "Write each head's importance: the gradient of the bias objective (mean over pairs of the stereotyped minus the other sentence's score) with respect to a mask of ones (Michel et al. 2019)."})
    mask_top_k: Optional[int] = field(default=None, metadata={"help": "Re-score with the K most bias-important heads masked (largest gradient), and report the metrics before and after."})
    print_mask_shape: bool = field(default=False, metadata={"help": "Print the model's head-mask shapes as JSON ({\"encoder\": [layers, heads], ...}) and exit."})

    def __post_init__(self) -> None:
        if self.model_task is not None and self.model_task not in MODEL_TASKS:
            raise UserError(f"--model_task {self.model_task}: must be one of {', '.join(MODEL_TASKS)} (causal, masked, encoder-decoder)")
        if self.split not in ("dev", "test"):
            raise UserError(f"--split {self.split}: must be dev or test (WinoBias' file suffixes)")
        if self.max_examples is not None and self.max_examples < 1:
            raise UserError(f"--max_examples {self.max_examples}: must be at least 1")
        if self.mask_top_k is not None and self.mask_top_k < 1:
            raise UserError(f"--mask_top_k {self.mask_top_k}: must be at least 1")


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py): --output_dir,
# --per_device_eval_batch_size (model rows per forward pass), --bf16, --head_mask, --seed.
ARGUMENTS = (BiasArguments, "BiasRunArguments")


@dataclass
class CheckedInputs:
    """What the light checks found: the registry entry, the benchmark's data (None: load the Hub copy), the
    head-mask shapes when the checkpoint's config is local, and the model type if the config says it."""

    entry: dict[str, Any]
    data: Any
    shapes: dict[str, tuple[int, int]] | None
    model_task: str | None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, data files and mask files first, before the heavy imports: a mistake is reported in about a second.
    early = light_parse(ARGUMENTS, argv)
    if early and early[0].print_mask_shape:
        return print_mask_shape(early[0])
    checked = check_inputs(*early) if early else None
    with RunLock(early[1].output_dir if early else None):  # one run per output dir
        import torch
        from tqdm.auto import tqdm
        from transformers import set_seed

        import bias_scoring
        from controls import apply_head_mask_flag
        from metrics import BIAS_IDEAL, BIAS_METRICS
        from modeling import load_config, load_language_model, load_tokenizer, model_task_of, resolve_model_task
        from runner import setup_logging

        bias_args, run = parse_args(ARGUMENTS, argv, __doc__, early)
        checked = checked or check_inputs(bias_args, run)
        if bias_args.print_mask_shape:
            return print_mask_shape(bias_args)
        setup_logging(run)
        set_seed(run.seed)
        entry, benchmark = checked.entry, checked.entry["bias_evaluation"]

        # Model and tokenizer: the task decides the head (AutoModelFor{CausalLM,MaskedLM,Seq2SeqLM}).
        hub = {"cache_dir": bias_args.cache_dir}
        tokenizer = load_tokenizer(bias_args.tokenizer_name or bias_args.model_name_or_path,
                                   "--tokenizer_name" if bias_args.tokenizer_name else "--model_name_or_path", **hub)
        config = load_config(bias_args.model_name_or_path, "--model_name_or_path", **hub)
        model_task = resolve_model_task(bias_args.model_task, checked.model_task or model_task_of(config), bias_args.model_name_or_path)
        model = load_language_model(bias_args.model_name_or_path, model_task, config=config, **hub)
        model.to(run.device)
        if bias_args.mask_top_k:  # a Hub model's head count is known only now: before any scoring, not after
            check_top_k(mask_shapes_of(model.config), bias_args.mask_top_k)
        base_masks = apply_head_mask_flag(run.head_mask, model)  # --head_mask: None, or the mask per stack

        # Data: the benchmark's items (each with its sentences' model rows).
        data = checked.data if checked.data is not None else load_hub_data(benchmark, bias_args)
        scorer = bias_scoring.Scorer.of(tokenizer, model_task)
        items = bias_scoring.ITEMS[benchmark](data, scorer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        metric_fn, headline = BIAS_METRICS[benchmark]

        def score(description: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            rows = sum(len(s.rows) for item in items for s in item.scorings.values())
            with tqdm(total=rows, desc=description, unit="row", disable=run.disable_tqdm) as progress, \
                    torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=bool(run.bf16)):
                scores = bias_scoring.score_items(model, items, run.per_device_eval_batch_size, pad, model_task, progress)
            rows_out = bias_scoring.metric_rows(benchmark, items, scores)
            return rows_out, metric_fn(rows_out)

        # Score: every sentence of every item, batched.
        rows, metrics = score(f"scoring {entry['name']}")
        results: dict[str, Any] = {
            "benchmark": entry["name"], "model": bias_args.model_name_or_path, "model_task": model_task,
            "scoring_method": bias_scoring.METHODS[(bias_scoring.FAMILY[benchmark], model_task)],
            "headline_metric": "/".join(headline), "ideal": BIAS_IDEAL, "examples": len(rows),
            "head_mask": run.head_mask, "precision": "bf16" if run.bf16 else "fp32", "metrics": metrics,
        }

        # Heads: importance (the gradient of the bias objective w.r.t. a mask of ones), then re-score without the top K.
        outputs = RunOutputs(run.output_dir, evaluation_only=True)
        if bias_args.head_importance or bias_args.mask_top_k:
            from heads import masks_without, top_heads

            shapes = checked.shapes or mask_shapes_of(model.config)

            importance, objective = head_importance(model, model_task, benchmark, items, shapes, base_masks, run, pad)
            results["bias_objective"] = objective
            if run.should_save:
                results["head_importance_file"] = save_importance(outputs, importance)
            if bias_args.mask_top_k:
                heads = top_heads(importance, bias_args.mask_top_k)
                masks = masks_without(shapes, heads)
                if base_masks is not None:
                    masks = {stack: masks[stack] * base_masks[stack] for stack in masks}
                apply_head_mask_flag(masks, model)
                masked_rows, masked_metrics = score(f"scoring without the top {bias_args.mask_top_k} heads")
                for row, masked in zip(rows, masked_rows):
                    row.update({f"{k}_masked": v for k, v in masked.items() if k.endswith("_score")})
                results["mask_top_k"] = {"k": bias_args.mask_top_k, "heads": [list(h) for h in heads],
                                         "before": dig(metrics, headline), "after": dig(masked_metrics, headline),
                                         "metrics": masked_metrics}
                if benchmark == "stereoset":
                    results["mask_top_k"]["lm_score_before"] = metrics["overall"]["lm_score"]
                    results["mask_top_k"]["lm_score_after"] = masked_metrics["overall"]["lm_score"]

        # Outputs (main process): scores, the chart, provenance, then results.json; the table printed.
        if run.should_save:
            from plots import plot_bias_bars
            from provenance import write_provenance

            results["scores_file"] = os.path.basename(outputs.write_records("scores.jsonl.gz", rows))
            bars = [(label, dig(values, headline[-1:])) for label, values in table_rows(metrics) if headline[-1] in values]
            chart = outputs.path("bias_by_type.png")
            plot_bias_bars([label for label, _ in bars], [value for _, value in bars], BIAS_IDEAL, f"{entry['name']}: {'/'.join(headline)}", chart)
            results["chart_file"] = os.path.basename(chart)
            provenance = outputs.path("provenance.json")  # a new name beside an earlier run's: never replaced
            write_provenance(run.output_dir, (bias_args, run), argv, name=os.path.basename(provenance))
            results["provenance_file"] = os.path.basename(provenance)
            write_json_atomic(outputs.path(RESULTS_FILE), results)
            print(format_table(f"{entry['name']} · {bias_args.model_name_or_path} ({model_task}) · ideal 50", metrics))
            if "mask_top_k" in results:
                top = results["mask_top_k"]
                print(f"{'/'.join(headline)}: {top['before']:.2f} -> {top['after']:.2f} with the top {top['k']} heads masked: "
                      + ", ".join(f"{s}[{layer},{head}]" for s, layer, head in top["heads"]))
            print(f"outputs in {run.output_dir}")
        return results


def check_inputs(bias_args: BiasArguments, run: Any) -> CheckedInputs:
    """The checks that need no heavy import: the task, the model source, the benchmark's files, the head-mask
    file (its shape too when the checkpoint's config is local), --mask_top_k, and the output dir."""
    import bias_data
    from controls import check_head_mask, local_mask_shapes
    from tasks import get_task

    if bias_args.dataset_name is None:
        raise UserError("--dataset_name is required (crows_pairs, stereoset or winobias); or pass --print_mask_shape")
    entry = get_task(bias_args.benchmark, bias_args.dataset_name)
    if entry["bias_evaluation"] is None:
        bias_tasks = [name for name, e in _registry(bias_args.benchmark).items() if e["bias_evaluation"]]
        raise UserError(f"--dataset_name {bias_args.dataset_name}: task {entry['name']} is not a bias benchmark; "
                        f"valid: {', '.join(bias_tasks) or 'none in benchmark ' + bias_args.benchmark}")
    if not run.output_dir:
        raise UserError("--output_dir is required: results.json, scores.jsonl.gz and the chart go there")
    check_no_training_controls(run)
    check_model_source(bias_args.model_name_or_path, "--model_name_or_path", needs_tokenizer=bias_args.tokenizer_name is None)
    data = None
    if bias_args.dataset_dir is not None:
        data = bias_data.read_benchmark(entry["bias_evaluation"], bias_args.dataset_dir, bias_args.split)
        data = bias_data.head(data, bias_args.max_examples)
    heads_used = run.head_mask or bias_args.head_importance or bias_args.mask_top_k
    shapes = local_mask_shapes(bias_args.model_name_or_path) if heads_used else None
    check_head_mask(run.head_mask, shapes)
    if bias_args.mask_top_k is not None and shapes is not None:
        check_top_k(shapes, bias_args.mask_top_k)
    check_output_dir(run.output_dir, overwrite=True)  # evaluation files take new names beside earlier ones
    return CheckedInputs(entry, data, shapes, bias_args.model_task or local_model_task(bias_args.model_name_or_path))


def check_top_k(shapes: dict[str, tuple[int, int]], k: int) -> None:
    """--mask_top_k K against the model's heads (heads.top_heads' one-line error when there are fewer)."""
    from heads import top_heads

    top_heads({stack: _zeros(shape) for stack, shape in shapes.items()}, k)


def check_no_training_controls(run: Any) -> None:
    """bias.py scores and never trains: a training control (controls.py) other than --head_mask is a mistake, not a
    flag to ignore."""
    import dataclasses

    from controls import TrainingControls

    for f in dataclasses.fields(TrainingControls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name != "head_mask" and getattr(run, f.name) != default:
            raise UserError(f"--{f.name}: a training flag, and bias.py only scores; give an adapter directory as "
                            "--model_name_or_path to score a LoRA-trained model, or train with finetune_lm.py first")


def _registry(benchmark: str) -> dict[str, Any]:
    from constants import DATASET_VALS

    return DATASET_VALS.get(benchmark, {})


def _zeros(shape: tuple[int, int]) -> Any:
    import numpy as np

    return np.zeros(shape, dtype=np.float32)


def mask_shapes_of(config: Any) -> dict[str, tuple[int, int]]:
    from heads import mask_shape

    return mask_shape(config)


def print_mask_shape(bias_args: BiasArguments) -> dict[str, Any]:
    """--print_mask_shape: the shapes as JSON, from the local config.json or the loaded config."""
    from controls import local_mask_shapes
    from heads import shape_json

    check_model_source(bias_args.model_name_or_path, "--model_name_or_path")
    shapes = local_mask_shapes(bias_args.model_name_or_path)
    if shapes is None:
        from modeling import load_config

        shapes = mask_shapes_of(load_config(bias_args.model_name_or_path, "--model_name_or_path", cache_dir=bias_args.cache_dir))
    print(shape_json(shapes))
    return {"mask_shape": {k: list(v) for k, v in shapes.items()}}


def load_hub_data(benchmark: str, bias_args: BiasArguments) -> Any:
    import bias_data

    return bias_data.head(bias_data.load_hub(benchmark, bias_args.split), bias_args.max_examples)


def head_importance(model: Any, model_task: str, benchmark: str, items: list, shapes: dict[str, tuple[int, int]],
                    base_masks: dict[str, Any] | None, run: Any, pad: int) -> tuple[dict[str, Any], float]:
    """Each head's gradient of the bias objective (bias_scoring.backward_preference) at the mask of ones (or
    at --head_mask's values), and the objective's value."""
    import torch
    from tqdm.auto import tqdm

    import bias_scoring
    from controls import apply_head_mask_flag
    from heads import ones_masks

    masks = ones_masks(shapes, requires_grad=True)
    if base_masks is not None:
        masks = {stack: torch.tensor(base_masks[stack], dtype=torch.float32, requires_grad=True) for stack in shapes}
    apply_head_mask_flag(masks, model)
    pairs = bias_scoring.preference_pairs(benchmark, items)
    rows = sum(len(s.rows) for pair in pairs for s in pair)
    with tqdm(total=rows, desc="head importance", unit="row", disable=run.disable_tqdm) as progress:
        objective = bias_scoring.backward_preference(model, model_task, pairs, run.per_device_eval_batch_size, pad, progress)
    apply_head_mask_flag(base_masks, model)  # back to the run's own mask (or none)
    return {stack: mask.grad.detach().cpu().numpy() for stack, mask in masks.items()}, objective


def save_importance(outputs: RunOutputs, importance: dict[str, Any]) -> str:
    """head_importance.npz (one (layers, heads) array per stack) and a heatmap per stack."""
    import io

    import numpy as np

    from outputs import write_bytes_atomic
    from plots import plot_head_heatmap

    path = outputs.path("head_importance.npz")
    buffer = io.BytesIO()
    np.savez(buffer, **importance)
    write_bytes_atomic(path, buffer.getvalue())
    for stack, values in importance.items():
        plot_head_heatmap(values, outputs.path(f"head_importance_{stack}.png"), f"{stack}: d(bias objective)/d(head mask)")
    return os.path.basename(path)


def dig(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def table_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The metrics as labelled rows: every mapping of numbers in the nested results is one row, labelled by its
    path ("overall", "by_bias_type/gender", "intrasentence/race", "type1")."""
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    summary = isinstance(metrics.get("overall"), dict)  # WinoBias: type1_minus_type2 beside "overall", shown last
    rows = [(prefix or "overall", scalars)] if scalars and not summary else []
    for key, value in metrics.items():
        if isinstance(value, dict):
            label = f"{prefix}/{key}" if prefix else key
            rows += table_rows(value, label.removeprefix("by_bias_type/"))
    return rows + ([(prefix or "summary", scalars)] if scalars and summary else [])


def format_table(title: str, metrics: dict[str, Any]) -> str:
    """The printed table: one line per row of `table_rows`, one column per metric."""
    rows = table_rows(metrics)
    columns = list(dict.fromkeys(k for _, values in rows for k in values))
    width = max(len(label) for label, _ in rows) + 2

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [title, "".ljust(width) + "".join(c.rjust(max(len(c), 8) + 2) for c in columns)]
    for label, values in rows:
        lines.append(label.ljust(width) + "".join(cell(values.get(c)).rjust(max(len(c), 8) + 2) for c in columns))
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
