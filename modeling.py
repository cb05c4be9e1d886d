"""Tokenizer and model set-up shared by the scripts: training a SentencePiece tokenizer, loading
tokenizers and checkpoints (with one-line errors offline), from-scratch T5 v1.1 configs, precision."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from typing import Any, Iterable, Iterator

from corpus import split_at_spaces
from errors import UserError

logger = logging.getLogger(__name__)

NUM_SENTINELS = 100  # T5's <extra_id_0> ... <extra_id_99>
SENTENCEPIECE_MAX_BYTES = 4192  # SentencePiece's trainer skips longer input lines (its max_sentence_length)


def train_tokenizer(texts: Iterable[str], vocab_size: int, seed: int = 0, max_sentences: int = 2_000_000) -> Any:
    """Train a SentencePiece unigram model on `texts` and wrap it as a T5 tokenizer.

    `vocab_size` pieces (pad=0, eos=1, unk=2, no bos, as T5's spiece.model) plus the 100 sentinels,
    which `T5Tokenizer` appends in descending order (<extra_id_0> = len(tokenizer) - 1) as in T5.
    The tokenizer is built from a `spiece.model` file: `T5Tokenizer(vocab_file=...)` ignores the
    file in transformers 5 (see ../shared/ENVIRONMENT.md).
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    spm.set_random_generator_seed(seed)  # input shuffling and sampling
    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_nonempty_lines(texts),
            model_prefix=os.path.join(tmp, "spiece"),
            vocab_size=vocab_size,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            input_sentence_size=max_sentences,
            max_sentence_length=SENTENCEPIECE_MAX_BYTES,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=1_000_000,
            hard_vocab_limit=False,  # small corpora may not support the full vocabulary
            minloglevel=2,
        )
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=NUM_SENTINELS)
        with open(os.path.join(tmp, "spiece.model"), "rb") as f:
            tokenizer.spiece_model_bytes = f.read()  # kept so save_tokenizer can write it beside the model
    logger.info("trained a SentencePiece unigram tokenizer: %d pieces + %d sentinels", len(tokenizer) - NUM_SENTINELS, NUM_SENTINELS)
    return tokenizer


def _nonempty_lines(texts: Iterable[str]) -> Iterator[str]:
    """The non-blank lines of `texts`; a line too long for SentencePiece (which would skip it: a single-line
    corpus left it nothing to train on) in pieces cut before spaces, each short enough in any script."""
    for text in texts:
        for line in text.splitlines():
            if not line.strip():
                continue
            if len(line) > SENTENCEPIECE_MAX_BYTES // 4 and len(line.encode("utf-8")) > SENTENCEPIECE_MAX_BYTES:
                yield from (piece for piece in split_at_spaces(line, SENTENCEPIECE_MAX_BYTES // 4) if piece.strip())
            else:
                yield line


def encode_truncated(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of `texts` (with `</s>`), cut to `max_length` keeping `</s>` last; and which were cut."""
    eos = tokenizer.eos_token_id
    ids, truncated = [], []
    for row in tokenizer(texts, verbose=False)["input_ids"]:
        cut = len(row) > max_length
        ids.append(row[: max_length - 1] + [eos] if cut else row)
        truncated.append(cut)
    return ids, truncated


def save_tokenizer(tokenizer: Any, output_dir: str) -> None:
    """`save_pretrained`, plus the raw `spiece.model` of a tokenizer trained here (other tools read it)."""
    tokenizer.save_pretrained(output_dir)
    model_bytes = getattr(tokenizer, "spiece_model_bytes", None)
    if model_bytes is not None:
        with open(os.path.join(output_dir, "spiece.model"), "wb") as f:
            f.write(model_bytes)


_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # name or org/name


# Files a tokenizer loads from: fast (tokenizer.json), SentencePiece (T5's spiece.model, XLM-R's),
# byte-level BPE (GPT-2's vocab.json + merges.txt), WordPiece (BERT's vocab.txt).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt")


def check_model_source(name: str, flag: str, needs_config: bool = True, needs_tokenizer: bool = False) -> None:
    """Checks that need no download and no heavy import, run before transformers is imported.

    A local directory must hold a saved model (config.json) when `needs_config`, and a tokenizer when
    `needs_tokenizer` (without one transformers 5.x builds a tokenizer that maps every word to <unk>,
    silently); a path that does not exist must at least look like a Hub name (`name` or `org/name`),
    whose loading is tried, and its failure reported, when the model is loaded.
    """
    if os.path.isdir(name):
        from adapters import adapter_base

        base = adapter_base(name)
        if base is not None:  # a LoRA adapter: its base model must be loadable, the tokenizer is saved beside the adapter
            check_model_source(base, f"{flag} {name!r}: its adapter_config.json's base_model_name_or_path")
            needs_config = False
        config = os.path.join(name, "config.json")
        if needs_config and not os.path.isfile(config):
            raise UserError(f"{flag} {name!r}: the directory holds no config.json; give a saved model's directory or a Hub name")
        if needs_config:
            from records import read_records

            read_records(config)  # a broken config.json: one line with the position, not a tokenizer error later
        if needs_tokenizer and not any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES):
            raise UserError(f"{flag} {name!r}: the directory holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                            "save the tokenizer beside the model, or pass --tokenizer_name")
        return
    if os.path.exists(name):
        raise UserError(f"{flag} {name!r}: is a file; give a saved model's directory or a Hub name")
    if not _HUB_NAME.fullmatch(name):
        raise UserError(f"{flag} {name!r}: no such local directory, and not a Hub name (org/name)")


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_error(kind: str, flag: str, name: str, err: Exception) -> UserError:
    if os.path.isdir(name):
        where = f"the directory holds no loadable {kind} ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
    elif offline():
        return UserError(f"{flag} {name!r}: not a local directory, and not in the Hub cache with the Hub off (HF_HUB_OFFLINE=1); "
                         "download it where there is internet (e.g. `huggingface-cli download NAME`) or give a local directory")
    else:
        where = f"no such local directory, and the Hub said: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
    return UserError(f"{flag} {name!r}: cannot load the {kind}: {where}; give a local directory or a Hub name")


def single_token_id(tokenizer: Any, word: str, flag: str) -> int:
    """The id of `word` as the model would write it; a user error unless it is one known token."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise UserError(f"{flag} {word!r}: must be a single known token of the model's tokenizer, but it encodes as {pieces}; "
                        "choose a word the tokenizer keeps whole (T5's yes and no are)")
    return ids[0]


def load_tokenizer(name_or_path: str, flag: str = "--tokenizer_name", **kwargs: Any) -> Any:
    """A pretrained tokenizer by Hub name or local directory (`kwargs`: revision, token, cache_dir); a user
    error if it cannot be had."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", flag, name_or_path, err) from None


def load_config(name_or_path: str, flag: str = "--config_name", **overrides: Any) -> Any:
    from transformers import AutoConfig

    from adapters import model_source

    try:
        return AutoConfig.from_pretrained(model_source(name_or_path), **overrides)
    except (OSError, ValueError) as err:
        raise _load_error("model config", flag, name_or_path, err) from None


def load_model(name_or_path: str, flag: str = "--model_name_or_path", **overrides: Any) -> Any:
    """A T5 checkpoint (Hub name or local directory); config fields such as dropout_rate may be overridden."""
    from transformers import T5ForConditionalGeneration

    model = _from_pretrained(T5ForConditionalGeneration, name_or_path, flag, **overrides)
    from transformers.integrations import is_deepspeed_zero3_enabled

    from adapters import is_peft_model, model_source

    base = model.get_base_model() if is_peft_model(model) else model  # an adapter directory: its base model's weights
    if is_deepspeed_zero3_enabled() and not getattr(base.config, "scale_decoder_outputs", True) and output_layer_is_tied(base):
        # Seen with transformers 5.23 + DeepSpeed 0.19.8: under ZeRO-3 loading, a T5 v1.1 / flan-t5
        # checkpoint's own lm_head is replaced by the input embeddings (eval loss 22 instead of 6).
        weight = _checkpoint_tensor(model_source(name_or_path), "lm_head.weight")
        if weight is None:
            raise UserError(
                f"{flag} {name_or_path}: under DeepSpeed ZeRO-3, transformers 5.23 ties this T5 v1.1 checkpoint's "
                "output layer to its embeddings, and it has no safetensors lm_head to restore; use zero_stage2_config.json"
            )
        _restore_output_layer_zero3(base, weight)
    return model


# --- Any language model (finetune_lm.py) -------------------------------------------------------------

MODEL_TASKS = ("lm", "mlm", "seq2seq")  # causal LM, masked LM, encoder-decoder
_AUTO_CLASSES = {"lm": "AutoModelForCausalLM", "mlm": "AutoModelForMaskedLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def model_task_of(config: Any) -> str | None:
    """The model type a checkpoint's config says (a config object or config.json's mapping): an encoder-decoder
    is seq2seq, a `*ForMaskedLM` architecture mlm, a `*ForCausalLM` / `*LMHeadModel` one lm; None when it says none."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    if get("is_encoder_decoder", False):
        return "seq2seq"
    names = list(get("architectures", None) or [])
    if any(name.endswith("ForMaskedLM") for name in names):
        return "mlm"
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names):
        return "lm"
    return None


def local_model_task(name: str) -> str | None:
    """`model_task_of` a local model directory's config.json (stdlib only; an adapter directory's base model's);
    None for a Hub name or no answer."""
    from adapters import model_source

    config = os.path.join(model_source(name), "config.json")
    if not os.path.isfile(config):
        return None
    from records import read_records

    data = read_records(config)
    return model_task_of(data[0]) if data and isinstance(data[0], dict) else None


def resolve_model_task(given: str | None, inferred: str | None, name: str) -> str:
    """`--model_task` if given, else what the checkpoint says; a one-line error when neither says."""
    if given:
        return given
    if inferred is None:
        raise UserError(f"--model_name_or_path {name}: cannot tell whether it is a causal LM, a masked LM or an encoder-decoder "
                        "from its config (architectures / is_encoder_decoder); pass --model_task lm, mlm or seq2seq")
    return inferred


def load_language_model(name_or_path: str, model_task: str, flag: str = "--model_name_or_path", **kwargs: Any) -> Any:
    """Any HF language model with the head its task needs (`AutoModelFor{CausalLM,MaskedLM,Seq2SeqLM}`);
    `kwargs` go to `from_pretrained` (config, revision, token, cache_dir)."""
    import transformers

    return _from_pretrained(getattr(transformers, _AUTO_CLASSES[model_task]), name_or_path, flag, **kwargs)


def _from_pretrained(model_class: Any, name_or_path: str, flag: str, **kwargs: Any) -> Any:
    """`model_class.from_pretrained` with one-line errors for a missing model and a damaged weights file; a LoRA
    adapter directory gives its base model with the adapter on it (adapters.py), trainable."""
    from adapters import adapter_base, load_adapter

    base = adapter_base(name_or_path) if os.path.isdir(name_or_path) else None
    if base is not None:
        return load_adapter(_from_pretrained(model_class, base, f"{flag} {name_or_path!r}: its base model", **kwargs), name_or_path)
    try:
        return model_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error("model", flag, name_or_path, err) from None
    except Exception as err:  # a truncated or corrupt weights file (safetensors raises its own error type)
        if not os.path.isdir(name_or_path) or "safetensor" not in type(err).__module__ + str(err).lower():
            raise
        raise UserError(f"{flag} {name_or_path!r}: the weights file is damaged ({str(err).strip().splitlines()[0]}); "
                        "a save that was cut short? Use another checkpoint") from None


def _checkpoint_tensor(name_or_path: str, key: str) -> Any:
    """One tensor of a safetensors checkpoint (sharded or not, local or Hub cache); None if absent."""
    import json

    from safetensors import safe_open
    from transformers.utils import cached_file

    index = cached_file(name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    if index:
        with open(index, encoding="utf-8") as f:
            shard = json.load(f)["weight_map"].get(key)
    else:
        shard = "model.safetensors"
    path = cached_file(name_or_path, shard, _raise_exceptions_for_missing_entries=False) if shard else None
    if not path:
        return None
    with safe_open(path, "pt") as f:
        return f.get_tensor(key) if key in f.keys() else None


def _restore_output_layer_zero3(model: Any, weight: Any) -> None:
    """Give a ZeRO-3-partitioned T5 its checkpoint's own output layer back (partitioned as well)."""
    import deepspeed
    import torch
    from transformers.integrations.deepspeed import deepspeed_config

    vocab_size, d_model = weight.shape
    with deepspeed.zero.Init(config_dict_or_path=deepspeed_config()):
        head = torch.nn.Linear(d_model, vocab_size, bias=False, dtype=model.shared.weight.dtype)
    with deepspeed.zero.GatheredParameters(head.weight, modifier_rank=0), torch.no_grad():
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            head.weight.copy_(weight.to(head.weight.dtype))
    model.lm_head = head
    model.all_tied_weights_keys.pop("lm_head.weight", None)


def t5_v1_1_config(vocab_size: int, tokenizer: Any, **sizes: Any) -> Any:
    """A from-scratch T5 v1.1 config: gated-GELU feed-forward, no dropout by default, and (through
    `tie_word_embeddings=False`) no rescaling of the decoder output, as in v1.1.

    `sizes` are T5Config fields (d_model, d_ff, d_kv, num_layers, num_decoder_layers, num_heads,
    dropout_rate, ...); None values keep T5 v1.1 small's.
    """
    from transformers import T5Config

    fields = dict(
        d_model=512, d_ff=1024, d_kv=64, num_layers=8, num_heads=6, dropout_rate=0.0,  # google/t5-v1_1-small
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )
    fields.update({k: v for k, v in sizes.items() if v is not None})
    return T5Config(
        vocab_size=vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **fields,
    )


def new_t5(config: Any) -> Any:
    """A freshly initialised T5; for a v1.1 config (`scale_decoder_outputs` False) with an untied output layer.

    T5 v1.1 does not share the output layer with the input embeddings, but transformers 5.23 builds
    every T5 with them tied (T5Config forces tie_word_embeddings=True and only reads the flag to
    decide the output scaling). Tied and unscaled, the initial logits have a standard deviation of
    about sqrt(d_model) and the first loss is ~20-40 nats instead of ~ln(vocab).
    """
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration(config)
    if not getattr(config, "scale_decoder_outputs", True):
        untie_output_layer(model)
    return model


def untie_output_layer(model: Any, keep_rows: Any = None) -> None:
    """Give `model` its own output layer, initialised N(0, 1/d_model) as a mesh-TF dense layer is
    (fan-in scaling), keeping the rows of `keep_rows` when given, and stop transformers re-tying it."""
    import torch

    vocab_size, d_model = model.shared.weight.shape
    head = torch.nn.Linear(d_model, vocab_size, bias=False, device=model.shared.weight.device, dtype=model.shared.weight.dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, d_model**-0.5)
        if keep_rows is not None:
            head.weight[: keep_rows.shape[0]] = keep_rows
    model.lm_head = head
    model.all_tied_weights_keys.pop("lm_head.weight", None)


def output_layer_is_tied(model: Any) -> bool:
    return model.lm_head.weight is model.shared.weight  # identity: ZeRO-3 leaves partitioned weights empty


def fit_embeddings_to_tokenizer(model: Any, tokenizer: Any) -> None:
    """Grow the embedding matrix when the tokenizer has more tokens than the model has rows.

    Never shrink it: T5 checkpoints carry more rows than tokens (32128 vs 32100). An untied output
    layer (T5 v1.1) stays untied: transformers' resize would tie it to the input embeddings.
    """
    weight = model.get_input_embeddings().weight
    rows = getattr(weight, "ds_shape", weight.shape)[0]  # ZeRO-3 partitions leave weight.shape empty
    if len(tokenizer) <= rows:
        return
    logger.info("resizing token embeddings %d -> %d", rows, len(tokenizer))
    untied_head = None if output_layer_is_tied(model) else model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if untied_head is not None:
        untie_output_layer(model, keep_rows=untied_head)
