"""Shared test fixtures: a generated corpus, a tiny tokenizer and a tiny T5, built once per process."""

from __future__ import annotations

import functools
import os
import random
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_WORDS = (
    "the a model learns tokens from text and predicts missing spans of words in every sentence while "
    "training on small batches with noise density mean length sentinel encoder decoder attention layer "
    "weights loss goes down quickly when data repeats often enough for tests to check it"
).split()


def generated_corpus(num_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic English-like lines (8-20 words each) drawn from a fixed word list."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))) + "." for _ in range(num_lines)]


def write_corpus(path: str, num_lines: int = 300, seed: int = 0) -> str:
    """The generated corpus as a one-document-per-line text file; returns `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(generated_corpus(num_lines, seed)) + "\n")
    return path


@functools.lru_cache(maxsize=None)
def tiny_tokenizer() -> Any:
    """A T5 tokenizer (SentencePiece unigram, ~130 pieces + 100 sentinels) trained on the generated corpus."""
    from modeling import train_tokenizer

    tokenizer = train_tokenizer(generated_corpus(), vocab_size=130)
    tokenizer.model_max_length = 512
    return tokenizer


def tiny_t5_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import T5Config

    tokenizer = tiny_tokenizer()
    fields = dict(
        vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    fields.update(overrides)
    return T5Config(**fields)


def tiny_t5(seed: int = 0, **overrides: Any) -> Any:
    """A freshly initialised tiny T5 (about 30k parameters) over the tiny tokenizer's vocabulary."""
    import torch

    from modeling import new_t5

    torch.manual_seed(seed)
    return new_t5(tiny_t5_config(len(tiny_tokenizer()), **overrides))


@functools.lru_cache(maxsize=None)
def task_tokenizer() -> Any:
    """A T5 tokenizer trained on the toy task's sentences and the registry's label words."""
    from constants import DATASET_VALS
    from modeling import train_tokenizer
    from examples import generate_toy_splits

    entry = DATASET_VALS["toy"]["sentiment"]
    sentences = [s for split in generate_toy_splits(entry["generator"]).values() for s, _ in split]
    labels = [f"{word} sentiment sentence premise hypothesis question sentence1 sentence2" for tasks in DATASET_VALS.values()
              for e in tasks.values() for word in e["labels"]]
    tokenizer = train_tokenizer(sentences + labels * 20 + ["0.0 1.2 2.4 3.6 4.8 5.0"] * 50, vocab_size=300)
    tokenizer.model_max_length = 512
    return tokenizer


def save_tiny_t5(directory: str, seed: int = 0, d_model: int = 32) -> str:
    """A fresh tiny T5 and the task tokenizer saved as a checkpoint directory."""
    import torch

    from modeling import new_t5, save_tokenizer

    tokenizer = task_tokenizer()
    torch.manual_seed(seed)
    config = tiny_t5_config(len(tokenizer), d_model=d_model, d_ff=2 * d_model, d_kv=d_model // 4)
    new_t5(config).save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    return directory


def pairs_mount(count: int = 8) -> str:
    """A fresh mount/ dir: the tiny T5 as models/tiny and data/pairs.json with `count` prompt/completion
    records (the first two are also the eval split)."""
    import json
    import tempfile

    mount = tempfile.mkdtemp()
    save_tiny_t5(os.path.join(mount, "models", "tiny"))
    os.makedirs(os.path.join(mount, "data"))
    pairs = [{"prompt": f"sentence {i}", "completion": "positive"} for i in range(count)]
    with open(os.path.join(mount, "data", "pairs.json"), "w") as f:
        json.dump({"train": pairs, "eval": pairs[:2]}, f)
    return mount


@functools.lru_cache(maxsize=None)
def tiny_lm_tokenizer(kind: str) -> Any:
    """A tokenizer trained on the generated corpus: byte-level BPE wrapped as GPT-2's ("gpt2"), WordPiece as
    BERT's ("bert"), or the tiny T5 one ("t5"). (GPT2TokenizerFast(vocab_file=...) in transformers 5.x encodes
    everything to nothing: build from the tokenizers object.)"""
    if kind == "t5":
        return tiny_tokenizer()
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer

    corpus = generated_corpus()
    if kind == "gpt2":
        from transformers import GPT2TokenizerFast

        backend = ByteLevelBPETokenizer()
        backend.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
        return GPT2TokenizerFast(tokenizer_object=backend._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                 unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    from transformers import BertTokenizerFast

    backend = BertWordPieceTokenizer(lowercase=True)
    backend.train_from_iterator(corpus, vocab_size=200, min_frequency=1,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return BertTokenizerFast(tokenizer_object=backend._tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]")


def tiny_lm(kind: str, seed: int = 0) -> Any:
    """A freshly initialised tiny model over `tiny_lm_tokenizer(kind)`: GPT-2 ("gpt2"), BERT ("bert") or T5 ("t5")."""
    import torch

    tokenizer = tiny_lm_tokenizer(kind)
    torch.manual_seed(seed)
    if kind == "t5":
        return tiny_t5(seed)
    if kind == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(config)
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config)


def save_tiny_lm(directory: str, kind: str, seed: int = 0) -> str:
    """`tiny_lm(kind)` and its tokenizer saved as a checkpoint directory; returns `directory`."""
    model = tiny_lm(kind, seed)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(directory)
    tiny_lm_tokenizer(kind).save_pretrained(directory)
    return directory


def write_tsv(path: str, header: list[str] | None, rows: list[list]) -> None:
    """A TSV file (GLUE's original layout), header first when given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in ([header] if header else []) + rows:
            f.write("\t".join(str(v) for v in row) + "\n")
