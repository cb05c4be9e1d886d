"""Label scoring vs. greedy generation, and dynamic padding vs. padding to max length, side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_modes.py            # trains a tiny toy model first (~20 s)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_modes.py --model_name_or_path runs/demo/finetune

1. On one trained toy-task model, the same validation examples and batch size: time label scoring
   (`scoring.score_labels`, one batched decoder pass over every label) against greedy `generate`
   (`max_length` = longest label + 1, as fine_tune_t5.py sets it), interleaved, warm-up excluded;
   print the time ratio and how often the two pick the same label.
2. On the training split: the padded-token fraction (inputs and labels) of the batches that dynamic
   padding with length-grouped sampling builds, against padding every batch to the max lengths.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", help="a model fine-tuned on the toy task (default: train one)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--eval_examples", type=int, default=1000, help="toy validation examples to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max_source_length", type=int, default=512, help="the max length of the padded-to-max side")
    return parser.parse_args(argv)


def train_toy_model(directory: str) -> str:
    """A d_model-64 T5 fine-tuned from scratch on the toy task for 200 steps (its own tokenizer), by running
    fine_tune_t5.py as a user would."""
    import subprocess

    from constants import DATASET_VALS
    from modeling import new_t5, save_tokenizer, t5_v1_1_config, train_tokenizer
    from examples import generate_toy_splits

    entry = DATASET_VALS["toy"]["sentiment"]
    sentences = [s for split in generate_toy_splits(entry["generator"]).values() for s, _ in split]
    tokenizer = train_tokenizer(sentences + ["negative positive sentiment sentence"] * 50, vocab_size=400)
    start = os.path.join(directory, "init")
    torch.manual_seed(0)
    new_t5(t5_v1_1_config(len(tokenizer), tokenizer, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4)).save_pretrained(start)
    save_tokenizer(tokenizer, start)
    trained = os.path.join(directory, "trained")
    subprocess.run([sys.executable, os.path.join(ROOT, "fine_tune_t5.py"), "--benchmark", "toy", "--dataset_name", "sentiment",
                    "--model_name_or_path", start, "--output_dir", trained, "--max_steps", "200", "--per_device_train_batch_size", "32",
                    "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"], check=True, stdout=subprocess.DEVNULL)
    return trained


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, T5ForConditionalGeneration
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from data_collators import PaddingCounter
    from scoring import label_token_ids, score_labels
    from examples import generate_toy_splits
    from tasks import get_task, tokenize_task_split

    entry = get_task("toy", "sentiment")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_name_or_path or train_toy_model(tmp)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = T5ForConditionalGeneration.from_pretrained(path).eval()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    # Data: a larger validation set than the registry's, drawn by the same generator.
    import datasets

    sizes = {"train": entry["generator"]["sizes"]["train"], "validation": args.eval_examples}
    splits = generate_toy_splits(entry["generator"], sizes=sizes)
    raw = {name: datasets.Dataset.from_dict({"sentence": [s for s, _ in rows], "label": [y for _, y in rows]})
           for name, rows in splits.items()}
    tokenized = {name: tokenize_task_split(entry, name, ds, tokenizer, args.max_source_length, 128) for name, ds in raw.items()}
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    evaluation = tokenized["validation"]
    batches = [collate([evaluation[j] for j in range(i, min(i + args.batch_size, len(evaluation)))])
               for i in range(0, len(evaluation), args.batch_size)]

    # 1. Label scoring vs greedy generation.
    candidates = label_token_ids(tokenizer, entry["labels"])
    max_length = max(len(tokenizer(label)["input_ids"]) for label in entry["labels"]) + 1

    def by_scoring() -> list[str]:
        out = []
        for batch in batches:
            scores = score_labels(model, batch["input_ids"], batch["attention_mask"], candidates)
            out += [entry["labels"][i] for i in scores.argmax(-1).tolist()]
        return out

    @torch.no_grad()
    def by_generation() -> list[str]:
        out = []
        for batch in batches:
            ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 max_length=max_length, num_beams=1, do_sample=False)
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    sides = {"label scoring": by_scoring, "greedy generate": by_generation}
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, list[str]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in (list(sides) if repeat % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            outputs[name] = sides[name]()
            if repeat:
                times[name].append(time.perf_counter() - start)
    references = [entry["labels"][y] for y in raw["validation"]["label"]]
    print(f"evaluation: {len(evaluation)} toy validation examples, batch {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, model {model.num_parameters() / 1e6:.2f}M parameters")
    print(f"{'mode':<18}{'median s':>10}{'examples/s':>12}{'accuracy':>10}")
    for name in sides:
        median = statistics.median(times[name])
        accuracy = 100 * sum(p == r for p, r in zip(outputs[name], references)) / len(references)
        print(f"{name:<18}{median:>10.3f}{len(evaluation) / median:>12.0f}{accuracy:>9.1f}%")
    ratio = statistics.median(times["greedy generate"]) / statistics.median(times["label scoring"])
    agreement = 100 * sum(a == b for a, b in zip(outputs["label scoring"], outputs["greedy generate"])) / len(references)
    print(f"label scoring is {ratio:.2f}x faster than greedy generation; the two agree on {agreement:.1f}% of examples")

    # 2. Padded-token fraction of the training batches.
    train = tokenized["train"]
    lengths = [len(ids) for ids in train["input_ids"]]
    grouped = PaddingCounter(collate, tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(0)
    order = list(LengthGroupedSampler(args.batch_size, lengths=lengths, generator=generator))
    for i in range(0, len(order), args.batch_size):
        grouped([train[j] for j in order[i : i + args.batch_size]])
    to_max = PaddingCounter(DataCollatorForSeq2Seq(tokenizer, model=model, padding="max_length",
                                                   max_length=args.max_source_length), tokenizer.pad_token_id)
    for i in range(0, len(train), args.batch_size):
        to_max([train[j] for j in range(i, min(i + args.batch_size, len(train)))])
    print(f"padded-token fraction, {len(train)} training examples, batch {args.batch_size}: dynamic padding + length "
          f"grouping {100 * grouped.padded_fraction:.1f}%, padding to max length ({args.max_source_length}) "
          f"{100 * to_max.padded_fraction:.1f}%")


if __name__ == "__main__":
    main()
