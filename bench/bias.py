"""CrowS-Pairs pseudo-log-likelihood speed: bias.py's batched scoring against the reference algorithm's loop.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bias.py            # a BERT-base-sized random model (110M parameters)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bias.py --small    # a tiny model: the CI smoke

Both score the same pairs (the generated CrowS-Pairs fixture's, `bias_data.write_bias_fixtures`) with the
same randomly initialised BertForMaskedLM (BertConfig defaults: 12 layers, 768 wide, 12 heads, vocab 30522)
and a WordPiece tokenizer trained here on the pairs' words:
  ours       bias_scoring.pair_scorings + score_sentences: every masked copy of every pair's shared tokens
             as one row, rows sorted by length and batched (--batch_size), the output layer run at the
             masked position only;
  reference  Nangia et al.'s metric.py (`mask_unigram`): per pair, per shared token, one forward pass of
             the one masked sentence, every position projected to the vocabulary, log-softmax at the mask;
  batched_all_positions  ours' rows and batches with the model's plain forward (every position projected):
             the difference to ours is what projecting the masked positions alone saves.
Runs alternate (reference, batched_all_positions, ours, ...) `--repeats` times after an untimed warm-up of each; the median times,
their ratio and the largest absolute score difference are printed with the CPU. Target: >= 3x, max |diff| <= 1e-4.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from machine import cpu_description, machine  # noqa: E402  (bench/machine.py: the script's folder is on sys.path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=64, help="ours: model rows (masked copies) per forward pass")
    parser.add_argument("--pairs", type=int, default=0, help="score only the first N pairs (default: all of the fixture's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="a tiny model (the smoke test)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def setup(args: argparse.Namespace, tmp: str) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The tokenizer, the random model and the pairs."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    import bias_data

    bias_data.write_bias_fixtures(tmp)
    pairs = bias_data.read_crows_pairs(os.path.join(tmp, bias_data.CROWS_PAIRS_FILE))
    pairs = pairs[: args.pairs] if args.pairs else pairs
    backend = BertWordPieceTokenizer(lowercase=True)
    backend.train_from_iterator([p[k] for p in pairs for k in ("sent_more", "sent_less")], vocab_size=2000, min_frequency=1,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizerFast(tokenizer_object=backend._tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]")
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=len(tokenizer)) if args.small else {}
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(pad_token_id=tokenizer.pad_token_id, **sizes)).eval()
    return tokenizer, model, pairs


def ours(tokenizer: Any, model: Any, pairs: list[dict[str, Any]], batch_size: int) -> list[float]:
    from bias_scoring import score_sentences

    return score_sentences(model, "mlm", _scorings(tokenizer, pairs), batch_size, tokenizer.pad_token_id)


@torch.no_grad()
def batched_all_positions(tokenizer: Any, model: Any, pairs: list[dict[str, Any]], batch_size: int) -> list[float]:
    """Ours' rows and batches, but every position projected to the vocabulary (the model's plain forward): what
    the output layer at the masked positions alone saves."""
    from surprisal import batches_by_length, pad_rows

    scorings = _scorings(tokenizer, pairs)
    rows = [(k, row) for k, scoring in enumerate(scorings) for row in scoring.rows]
    totals = [0.0] * len(scorings)
    for batch in batches_by_length([len(row["input_ids"]) for _, row in rows], batch_size):
        ids = pad_rows([rows[i][1]["input_ids"] for i in batch], tokenizer.pad_token_id)
        mask = pad_rows([[1] * len(rows[i][1]["input_ids"]) for i in batch], 0)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for j, i in enumerate(batch):
            owner, row = rows[i]
            position = row["scored"][0]
            totals[owner] += float(logprobs[j, position, row["labels"][position]])
    return totals


@torch.no_grad()
def reference(tokenizer: Any, model: Any, pairs: list[dict[str, Any]]) -> list[float]:
    """metric.py's algorithm: the template of shared tokens without its first and last ([CLS], [SEP]), one
    forward per masked token."""
    scores = []
    for pair in pairs:
        a, b = (tokenizer(pair[k], return_tensors="pt")["input_ids"][0] for k in ("sent_more", "sent_less"))
        template_a, template_b = [], []
        for op in difflib.SequenceMatcher(None, a.tolist(), b.tolist()).get_opcodes():
            if op[0] == "equal":
                template_a += range(op[1], op[2])
                template_b += range(op[3], op[4])
        for ids, template in ((a, template_a), (b, template_b)):
            total = 0.0
            for position in template[1:-1]:
                masked = ids.clone()
                masked[position] = tokenizer.mask_token_id
                logits = model(masked[None]).logits[0]
                total += float(torch.log_softmax(logits[position], dim=-1)[ids[position]])
            scores.append(total)
    return scores


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, model, pairs = setup(args, tmp)
    masked = sum(len(s.rows) for s in _scorings(tokenizer, pairs))
    runs = {"reference": lambda: reference(tokenizer, model, pairs),
            "batched_all_positions": lambda: batched_all_positions(tokenizer, model, pairs, args.batch_size),
            "ours": lambda: ours(tokenizer, model, pairs, args.batch_size)}
    results = {name: run() for name, run in runs.items()}  # warm-up, and the scores compared
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    diff = max(abs(x - y) for x, y in zip(results["ours"], results["reference"]))
    diff_all = max(abs(x - y) for x, y in zip(results["batched_all_positions"], results["reference"]))
    report = {
        "pairs": len(pairs), "masked_copies": masked, "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": args.batch_size, "seconds": times, "median_seconds": median,
        "speedup": median["reference"] / median["ours"], "max_abs_score_difference": diff,
        "speedup_batched_all_positions": median["reference"] / median["batched_all_positions"],
        "max_abs_score_difference_batched_all_positions": diff_all,
        "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"),
    }
    print(f"CrowS-Pairs PLL, {len(pairs)} pairs ({masked} masked copies), BertForMaskedLM {report['parameters'] / 1e6:.0f}M parameters")
    print(f"  {machine()}")
    for name in runs:
        print(f"  {name:<22} median {median[name]:8.2f} s  ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  speedup {report['speedup']:.2f}x  max |score difference| {diff:.2e}  "
          f"(batched with every position projected: {report['speedup_batched_all_positions']:.2f}x, {diff_all:.2e})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def _scorings(tokenizer: Any, pairs: list[dict[str, Any]]) -> list[Any]:
    """Both sentences of every pair, as bias.py builds them (tokenizing included in ours' time)."""
    from bias_scoring import Scorer, pair_scorings

    scorer = Scorer.of(tokenizer, "mlm")
    return [s for p in pairs for s in pair_scorings(scorer, p["sent_more"], p["sent_less"])]


if __name__ == "__main__":
    main()
