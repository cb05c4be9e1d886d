"""Surprisal scoring speed: finetune_lm.py's scorer against minicons and a one-sentence-at-a-time loop.

    pip install --no-deps --target /tmp/minicons minicons==0.3.39 wonderwords   # minicons: for this benchmark only
    HF_HUB_OFFLINE=1 .venv/bin/python bench/surprisal_throughput.py --minicons_dir /tmp/minicons
    HF_HUB_OFFLINE=1 .venv/bin/python bench/surprisal_throughput.py --small                # tiny model, CI smoke

Three ways to get, for every sentence, each token's (token string, surprisal in bits) pairs with the
first token conditioned on BOS, all on the same model and sentences, in one process:
  ours      what finetune_lm.py runs: `lm_data.encode_dataset` (tokenizer call, BOS, word offsets), then
            `surprisal.score_rows(model, "lm", rows, batch_size, pad_id)`: rows sorted by length and batched,
            a row's last token not fed, the output layer streamed over slices of the vocabulary at the
            scored positions only (log-sum-exp, argmax and the token's logit in float32), GELU by torch's
            fused kernel; bits by `surprisal.to_bits`;
  minicons `IncrementalLMScorer(model_dir, "cpu").token_score(batch, surprisal=True, base_two=True,
            bos_token=True)` over consecutive batches of the same size (its BOS pair, scored 0.0, dropped);
  loop      each sentence alone: [BOS] + ids through the model, log_softmax, gather.
ours and minicons run at each of `--batch_sizes`; the loop once.
The model is a randomly initialised GPT-2-small-sized model (GPT2Config defaults: 12 layers, 768 wide,
12 heads, vocab 50257; 124M parameters) with a byte-level BPE tokenizer trained here on generated text,
saved to a temp dir so that minicons loads it by path. The sentences are generated pseudo-English,
5-40 words each. After one untimed warm-up batch each, every method scores all sentences `--repeats`
times; within a repeat the methods advance round-robin, one `--slices`-th of their work at a time (ours@8,
minicons@8, ours@16, ..., loop, ours@8, ...), so that the load of a shared machine, which changes from
minute to minute, hits all alike. A run's time covers tokenization, scoring and building the pairs.
Reported: median tokens scored per second, ours' ratio to minicons at the same batch size and to the loop
(from the medians, and per repeat), the positions each runs through the model (padding included: the
work), and the largest absolute difference in bits from ours over every token (the token strings must agree).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any, Generator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from machine import cpu_description  # noqa: E402  (bench/machine.py: the script's folder is on sys.path)

BOS = "<|endoftext|>"  # GPT-2's BOS = EOS = (here) pad
MINICONS_INSTALL = "pip install --no-deps --target /tmp/minicons minicons==0.3.39 wonderwords"
Pairs = list[list[tuple[str, float]]]  # per sentence, (token string, surprisal in bits) per scored token


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sentences", type=int, default=300, help="generated sentences to score (5-40 words each)")
    parser.add_argument("--batch_sizes", default="8,16,32",
                        help="comma-separated sentences per forward pass, ours and minicons timed at each (32: finetune_lm.py's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of all sentences per method; the median run is reported")
    parser.add_argument("--small", action="store_true", help="a tiny GPT-2 and tokenizer (CI smoke), not GPT-2-small-sized")
    parser.add_argument("--minicons_dir", default=None, help=f"where minicons was installed (`{MINICONS_INSTALL}`)")
    parser.add_argument("--slices", type=int, default=10, help="each run is timed in this many slices per method, round-robin")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(size) for size in args.batch_sizes.split(",")})
    except ValueError:
        parser.error(f"--batch_sizes {args.batch_sizes!r}: give whole numbers separated by commas, e.g. 8,16,32")
    if min(args.num_sentences, *args.batch_sizes, args.repeats, args.slices) < 1:
        parser.error("--num_sentences, --batch_sizes, --repeats and --slices must be at least 1")
    return args


# --- Data, tokenizer, model ------------------------------------------------------------------------------


def lexicon(size: int, rng: random.Random) -> list[str]:
    """`size` distinct pseudo-words of 1-4 syllables (BPE then has whole words and pieces to learn)."""
    onsets = "b c d f g h k l m n p r s t v w br st tr pl ch sh th".split()
    vowels = "a e i o u ai ea ou".split()
    codas = ["", "", "n", "r", "s", "t", "ck", "nd"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 4)))))
    return sorted(words)


def generate_sentences(count: int, words: list[str], rng: random.Random) -> list[str]:
    """Sentences of 5-40 words drawn with Zipfian frequencies, capitalised, with the odd comma and a full stop."""
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    out = []
    for _ in range(count):
        drawn = rng.choices(words, weights, k=rng.randint(5, 40))
        drawn = [w + "," if rng.random() < 0.06 else w for w in drawn[:-1]] + drawn[-1:]
        out.append(" ".join(drawn).capitalize() + ".")
    return out


def train_tokenizer(corpus: list[str], vocab_size: int) -> Any:
    """A GPT-2 tokenizer (byte-level BPE, <|endoftext|> as BOS, EOS and pad) trained on `corpus` (as tests/fixtures.py)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS], show_progress=False)
    return GPT2TokenizerFast(tokenizer_object=backend._tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS)


def save_model(directory: str, tokenizer: Any, small: bool, seed: int) -> Any:
    """A random GPT-2 (GPT2Config defaults unless `small`) and the tokenizer saved to `directory`; returns the config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    # GPT2Config's defaults (GPT-2 small): vocab 50257, 1024 positions, 768 wide, 12 layers, 12 heads.
    size = dict(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=4) if small else {}
    config = GPT2Config(**size, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return config


# --- The three scorers ------------------------------------------------------------------------------------
# Each is a generator that pauses (yields) after every slice of its work and returns the pairs, so that the
# slices of the three can be timed round-robin (`run_interleaved`): load on a shared machine, which changes from
# one minute to the next, then hits every method alike.

Scorer = Generator[None, None, Pairs]
FED: dict[str, int] = {}  # positions each method fed its model (input ids, padding included), counted by `feeding`


@contextlib.contextmanager
def feeding(model: Any, method: str) -> Any:
    """Count the input positions `model` is fed while the block runs, under `method` in FED."""
    def count(module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        FED[method] = FED.get(method, 0) + ids.numel()

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def slices(count: int, parts: int) -> list[range]:
    """`range(count)` cut into `parts` contiguous pieces of near-equal size (fewer when `count` is smaller)."""
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def score_ours(model: Any, tokenizer: Any, sentences: list[str], batch_size: int, parts: int) -> Scorer:
    """finetune_lm.py's path: encode_dataset -> rows -> surprisal.score_rows -> bits (to_bits per token, as result_rows).

    The rows' length-sorted batches go to score_rows in `parts` groups (finetune_lm.py hands it chunks of 1024
    rows); each group is already sorted, so score_rows batches it exactly as one call over all rows would.
    """
    from finetune_lm import pad_id
    from lm_data import TextDataset, encode_dataset
    from surprisal import batches_by_length, score_rows, to_bits

    dataset = TextDataset("bench.txt", sentences, [None] * len(sentences), [{}] * len(sentences))
    examples = encode_dataset(dataset, tokenizer, "lm", model.config.n_positions, "--test_file")
    rows = [{"input_ids": e["input_ids"], "labels": e["input_ids"]} for e in examples]
    batches = list(batches_by_length([len(row["input_ids"]) for row in rows], batch_size))
    scored: list[Any] = [None] * len(rows)
    for part in slices(len(batches), parts):
        group = [i for b in part for i in batches[b]]
        with feeding(model, f"ours@{batch_size}"):
            scored_group = score_rows(model, "lm", [rows[i] for i in group], batch_size, pad_id(tokenizer))
        for i, sequence in zip(group, scored_group):
            scored[i] = sequence
        yield
    return [list(zip(tokenizer.convert_ids_to_tokens(s.token_ids.tolist()), [to_bits(float(lp)) for lp in s.logprobs])) for s in scored]


def score_minicons(scorer: Any, sentences: list[str], batch_size: int, parts: int) -> Scorer:
    """minicons' token_score, batch by batch in the given order; its first pair (BOS, 0.0) is not a scored token."""
    out: Pairs = []
    for part in slices(math.ceil(len(sentences) / batch_size), parts):
        for b in part:
            batch = sentences[b * batch_size : (b + 1) * batch_size]
            with feeding(scorer.model, f"minicons@{batch_size}"):
                scores = scorer.token_score(batch, surprisal=True, base_two=True, bos_token=True)
            for pairs in scores:
                assert pairs[0][0] == BOS, pairs[0]
                out.append(pairs[1:])
        yield
    return out


def score_loop(model: Any, tokenizer: Any, sentences: list[str], parts: int) -> Scorer:
    """The plain way: one sentence per forward pass, BOS prepended, log_softmax over the vocabulary, gather."""
    out: Pairs = []
    for part in slices(len(sentences), parts):
        for i in part:
            ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(sentences[i])["input_ids"]])
            with torch.no_grad(), feeding(model, "loop"):
                logits = model(ids, attention_mask=torch.ones_like(ids)).logits[0, :-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            bits = (-logprobs / math.log(2.0)).tolist()
            out.append(list(zip(tokenizer.convert_ids_to_tokens(ids[0, 1:].tolist()), bits)))
        yield
    return out


def run_interleaved(scorers: dict[str, Scorer]) -> tuple[dict[str, float], dict[str, Pairs]]:
    """Advance the scorers one slice each in turn until all are done: (seconds each took, pairs each returned)."""
    seconds = dict.fromkeys(scorers, 0.0)
    outputs: dict[str, Pairs] = {}
    running = dict(scorers)
    while running:
        for name in list(running):
            start = time.perf_counter()
            try:
                next(running[name])
            except StopIteration as done:
                outputs[name] = done.value
                del running[name]
            seconds[name] += time.perf_counter() - start
    return seconds, outputs


def load_minicons(directory: str | None) -> Any:
    """minicons' scorer module, or None (with a note on how to install it) when it cannot be imported."""
    if directory:
        sys.path.insert(0, directory)
    try:
        from minicons import scorer
    except ImportError as error:
        print(f"minicons cannot be imported ({error}); skipping it. Install it for this benchmark only:\n"
              f"  {MINICONS_INSTALL}\n  then pass --minicons_dir /tmp/minicons", flush=True)
        return None
    return scorer


# --- Comparison and report ---------------------------------------------------------------------------------


def max_difference(ours: Pairs, other: Pairs) -> tuple[float, int]:
    """(largest |ours - other| in bits over every token, sentences whose token strings differ)."""
    worst, mismatched = 0.0, 0
    for a, b in zip(ours, other, strict=True):
        if [t for t, _ in a] != [t for t, _ in b]:
            mismatched += 1
            continue
        worst = max([worst] + [abs(x - y) for (_, x), (_, y) in zip(a, b)])
    return worst, mismatched


def model_positions(lengths: list[int], batch_size: int, ours: bool) -> int:
    """Positions the batched forward passes should run (padding included) over rows of `lengths` tokens (BOS included),
    to set beside those counted (`feeding`):
    minicons batches `batch_size` rows in the given order and feeds them whole; ours sorts them longest first and
    does not feed a row's last token (the logits there would predict the token after the text)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if ours else list(range(len(lengths)))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * (max(lengths[j] for j in batch) - ours) for batch in batches)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)

    # Data and tokenizer: generated pseudo-English; the tokenizer learns from other sentences than the scored ones.
    rng = random.Random(args.seed)
    words = lexicon(300 if args.small else 6000, rng)
    tokenizer = train_tokenizer(generate_sentences(2000 if args.small else 20000, words, rng), 500 if args.small else 8192)
    sentences = generate_sentences(args.num_sentences, words, rng)

    with tempfile.TemporaryDirectory(prefix="bench_surprisal_") as model_dir:
        # Model: saved once; ours and the loop share one copy, minicons loads its own from the same files.
        config = save_model(model_dir, tokenizer, args.small, args.seed)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        minicons = load_minicons(args.minicons_dir)
        lm_scorer = minicons.IncrementalLMScorer(model_dir, "cpu") if minicons is not None else None

        def scorers(batch: list[str], parts: int) -> dict[str, Scorer]:
            out: dict[str, Scorer] = {}
            for size in args.batch_sizes:
                out[f"ours@{size}"] = score_ours(model, tokenizer, batch, size, parts)
                if lm_scorer is not None:
                    out[f"minicons@{size}"] = score_minicons(lm_scorer, batch, size, parts)
            out["loop"] = score_loop(model, tokenizer, batch, parts)
            return out

        # Timed runs: one untimed warm-up batch, then each repeat advances the methods slice by slice, round-robin.
        run_interleaved(scorers(sentences[: max(args.batch_sizes)], 1))
        seconds: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            FED.clear()  # the positions of this repeat (each repeat feeds the same)
            took, outputs = run_interleaved(scorers(sentences, args.slices))
            for name, value in took.items():
                seconds.setdefault(name, []).append(value)
            print(f"--- repeat {repeat + 1} of {args.repeats}: " + ", ".join(f"{n} {t:.1f} s" for n, t in took.items()), flush=True)

    # Figures: tokens/s (median run), the speed-up of ours at the same batch size (the loop: at the smallest), from the
    # medians and per repeat; work; agreement with ours at the smallest batch size.
    first = f"ours@{args.batch_sizes[0]}"
    tokens = sum(len(pairs) for pairs in outputs[first])
    lengths = [len(pairs) + 1 for pairs in outputs[first]]  # + BOS
    results: dict[str, dict[str, Any]] = {}
    for name, times in seconds.items():
        method, _, size = name.partition("@")
        assert sum(len(pairs) for pairs in outputs[name]) == tokens, f"{name} scored another number of tokens"
        diff, mismatched = max_difference(outputs[first], outputs[name])
        ours = f"ours@{size}" if size else first
        expected = model_positions(lengths, int(size), method == "ours") if size else sum(lengths)
        results[name] = {"seconds": times, "tokens_per_s": tokens / statistics.median(times), "model_positions": FED[name],
                         "expected_positions": expected,
                         "ours_speedup_per_repeat": [t / o for t, o in zip(times, seconds[ours])],
                         "ours_speedup": statistics.median(times) / statistics.median(seconds[ours]),
                         "compared_with": ours, "max_abs_diff_bits_vs_ours": diff, "sentences_with_other_tokens": mismatched}
    report = {
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "torch": torch.__version__, "transformers": transformers.__version__,
        "minicons": minicons and importlib.metadata.version("minicons"),
        "model": {"layers": config.n_layer, "width": config.n_embd, "heads": config.n_head, "vocab": config.vocab_size,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "tokenizer_vocab": len(tokenizer), "sentences": len(sentences), "words": sum(len(s.split()) for s in sentences),
        "tokens": tokens, "batch_sizes": args.batch_sizes, "repeats": args.repeats, "slices": args.slices,
        "example": outputs[first][0][:4], "methods": results,
    }
    print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def print_report(report: dict[str, Any]) -> None:
    cpu, model = report["cpu"], report["model"]
    print(f"\nCPU: {cpu['model_name']} ({cpu['capability']}), {cpu['cpu_count']} cores, {cpu['torch_threads']} torch threads, "
          f"load average {cpu['load_average'][0]}; torch {report['torch']}, transformers {report['transformers']}, "
          f"minicons {report['minicons'] or '-'}; {report['date']}")
    print(f"model: GPT-2, {model['layers']} layers x {model['width']} ({model['heads']} heads), vocab {model['vocab']}, "
          f"{model['parameters'] / 1e6:.1f}M parameters, random init; tokenizer vocab {report['tokenizer_vocab']}")
    print(f"{report['sentences']} sentences, {report['words']} words, {report['tokens']} scored tokens; batch sizes "
          f"{', '.join(map(str, report['batch_sizes']))}; median of {report['repeats']} runs, each interleaved in {report['slices']} slices")
    print(f"{'method':<13} {'s/run':>7} {'tokens/s':>9} {'positions run':>13} {'ours faster by':>20} {'(per repeat)':>18} {'max |ours - it| bits':>21}")
    for name, r in report["methods"].items():
        own = name == r["compared_with"]
        per_repeat = "-" if own else " ".join(f"{x:.2f}" for x in r["ours_speedup_per_repeat"])
        speedup = "-" if own else f"{r['ours_speedup']:.2f}x vs {r['compared_with']}"
        diff = "-" if name == f"ours@{report['batch_sizes'][0]}" else f"{r['max_abs_diff_bits_vs_ours']:.2e}"
        print(f"{name:<13} {statistics.median(r['seconds']):>7.2f} {r['tokens_per_s']:>9.1f} {r['model_positions']:>13} "
              f"{speedup:>20} {per_repeat:>18.18} {diff:>21}")
    first = f"ours@{report['batch_sizes'][0]}"
    for name, r in report["methods"].items():
        if name != first:
            print(f"max |{first} - {name}|: {r['max_abs_diff_bits_vs_ours']:.3e} bits over {report['tokens']} tokens; "
                  f"sentences with other token strings: {r['sentences_with_other_tokens']}")
    print(f"positions run: tokens through the model, padding included (batches in order for minicons, longest first for ours); "
          f"first pairs (ours): {report['example']}")


if __name__ == "__main__":
    main()
