"""Malformed inputs, run as a user runs the four scripts: exit 2, one `error: ` line, nothing written.

    HF_HUB_OFFLINE=1 python -m pytest -q -p no:logging tests/test_bad_inputs.py

Every case is a real command line (`python <script>.py ...`, cwd the repository root, offline). Each
must exit with code 2 and print exactly one non-empty line on stderr: `error: ` followed by a message
that names the file, record, field or flag involved (a regex per case), and no traceback. The case's
output directory or run folder must not exist afterwards; a finished run it was pointed at must be
byte-for-byte unchanged. And the mistake must be found before the heavy imports (`-X importtime`
shows no torch, transformers or datasets), so that it is reported in about a second; that includes
unknown and abbreviated flags (the early parse knows every flag). The commands run two at a time in
setUpClass.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_t5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 120  # per command; a bad input must fail in seconds
WORKERS = 2  # commands run at once (CI has 2 cores)


@dataclasses.dataclass(frozen=True)
class Case:
    """One malformed command line. `{tmp}` and `{mount}` in `argv`, `absent` and `unchanged` are filled in."""

    script: str
    argv: tuple[str, ...]
    pattern: str  # re.search on the message after "error: "
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    unchanged: str | None = None  # a finished run dir whose files must stay as they were
    late: bool = False  # found only once the tokenizer is loaded (after the heavy imports)


HEAVY = ("torch", "transformers", "datasets")  # what the early checks must not import


def pretrain(name: str, argv: list[str], pattern: str, output_dir: str | None = None) -> tuple[str, Case]:
    output_dir = output_dir or f"{{tmp}}/out/{name}"
    return name, Case("pre_train_t5.py", ("--output_dir", output_dir, *argv), pattern, absent=(output_dir,))


def finetune(name: str, argv: list[str], pattern: str, output_dir: str | None = None) -> tuple[str, Case]:
    output_dir = output_dir or f"{{tmp}}/out/{name}"
    base = ("--output_dir", output_dir, "--model_name_or_path", "{mount}/models/tiny")
    return name, Case("fine_tune_t5.py", (*base, *argv), pattern, absent=(output_dir,))


def mount_run(script: str, name: str, argv: list[str], pattern: str, model: list[str], mount: str = "{mount}") -> tuple[str, Case]:
    """seq2seq.py / clf.py: the tiny model is {mount}/models/tiny; results would go to <mount>/models/<name>."""
    base = ["--mount_dir", mount, "--training_run_name", name, *model]
    return name, Case(script, (*base, *argv), pattern, absent=(f"{mount}/models/{name}",))


def seq2seq(name: str, argv: list[str], pattern: str) -> tuple[str, Case]:
    return mount_run("seq2seq.py", name, argv, pattern, ["--model_init_name", "tiny"])


def clf(name: str, argv: list[str], pattern: str, mount: str = "{mount}") -> tuple[str, Case]:
    return mount_run("clf.py", name, argv, pattern, ["--model_pretrain_name", "tiny"], mount)


def lm(name: str, argv: list[str], pattern: str, model: str = "{tmp}/lm/gpt2", late: bool = False) -> tuple[str, Case]:
    """finetune_lm.py, by default on a stand-in GPT-2 folder (a config.json naming GPT2LMHeadModel: enough for the early checks)."""
    output_dir = f"{{tmp}}/out/{name}"
    base = ("--output_dir", output_dir, "--model_name_or_path", model)
    return name, Case("finetune_lm.py", (*base, *argv), pattern, absent=(output_dir,), late=late)


def bias(name: str, argv: list[str], pattern: str, data: str = "{tmp}/bias/crows") -> tuple[str, Case]:
    """bias.py on a stand-in BERT folder (config.json with its sizes: enough for the early checks)."""
    output_dir = f"{{tmp}}/out/{name}"
    base = ("--output_dir", output_dir, "--model_name_or_path", "{tmp}/bias/bert", "--dataset_dir", data)
    return name, Case("bias.py", (*base, *argv), pattern, absent=(output_dir,))


def late(case: tuple[str, Case]) -> tuple[str, Case]:
    """A case found only once the model is loaded (after the heavy imports)."""
    name, c = case
    return name, dataclasses.replace(c, late=True)


def finished(case: tuple[str, Case], run_dir: str) -> tuple[str, Case]:
    """A case pointed at a finished run: its files must stay exactly as they were (the name is the run's)."""
    name, c = case
    return name, dataclasses.replace(c, absent=(), unchanged=run_dir)


TOY = ["--benchmark", "toy", "--dataset_name", "sentiment"]  # sentence, label (negative/positive)
STSB = ["--benchmark", "glue", "--dataset_name", "stsb"]  # sentence1, sentence2, label (a score in [0, 5])

CASES: list[tuple[str, Case]] = [
    # --- pre_train_t5.py -------------------------------------------------------------------------
    pretrain("pt_invalid_jsonl", ["--train_file", "{tmp}/pt/bad.jsonl"],
             r"^--train_file \S+/pt/bad\.jsonl: line 2: invalid JSON at column 10: Expecting value$"),
    pretrain("pt_text_not_a_string", ["--train_file", "{tmp}/pt/number.jsonl"],
             r"^--train_file \S+/pt/number\.jsonl: line 2: field \"text\" must be a string, got int$"),
    pretrain("pt_empty_corpus", ["--train_file", "{tmp}/pt/blank.txt"],
             r"^--train_file \S+/pt/blank\.txt: the file holds no text$"),
    pretrain("pt_not_utf8_corpus", ["--train_file", "{tmp}/pt/latin1.txt"],
             r"^--train_file \S+/pt/latin1\.txt: not UTF-8 text: byte 0xe9 at offset 9 \(line 2\); re-encode the file as UTF-8$"),
    pretrain("pt_noise_density", ["--train_file", "{tmp}/pt/corpus.txt", "--noise_density", "1.5"],
             r"^--noise_density 1\.5: must lie strictly between 0 and 1$"),
    pretrain("pt_dataset_name_and_train_file", ["--dataset_name", "allenai/c4", "--train_file", "{tmp}/pt/corpus.txt"],
             r"^--dataset_name and a local corpus \(--train_file/--data_dir\) both given: use one$"),
    finished(pretrain("pt_finished_run", ["--train_file", "{tmp}/pt/corpus.txt"],
                      r"^--output_dir \S+/out/finished_pt: holds a finished run \(all_results\.json\); .* --overwrite_output_dir",
                      output_dir="{tmp}/out/finished_pt"), "{tmp}/out/finished_pt"),
    pretrain("pt_int_flag", ["--train_file", "{tmp}/pt/corpus.txt", "--max_steps", "ten"],
             r"^argument --max_steps/--max-steps: invalid int value: 'ten'$"),
    pretrain("pt_no_such_model_dir", ["--train_file", "{tmp}/pt/corpus.txt", "--model_name_or_path", "{tmp}/no_such_model"],
             r"^--model_name_or_path '\S+/no_such_model': no such local directory, and not a Hub name \(org/name\)$"),
    pretrain("pt_streaming_without_max_steps", ["--train_file", "{tmp}/pt/corpus.txt", "--streaming"],
             r"^--streaming needs --max_steps: a streamed corpus has no length to count epochs by$"),
    # --- fine_tune_t5.py -------------------------------------------------------------------------
    finetune("ft_missing_required_flag", ["--benchmark", "toy"],
             r"^the following arguments are required: --dataset_name/--dataset-name$"),
    finetune("ft_invalid_jsonl_line", [*TOY, "--train_file", "{tmp}/ft/bad.jsonl", "--validation_file", "{tmp}/ft/good.csv"],
             r"^\S+/ft/bad\.jsonl: line 2: invalid JSON at column 34: Expecting ',' delimiter$"),
    finetune("ft_unknown_task", ["--benchmark", "toy", "--dataset_name", "sst2"],
             r"^unknown task 'sst2' of benchmark 'toy'; valid: sentiment$"),
    finetune("ft_model_dir_without_config", [*TOY, "--model_name_or_path", "{tmp}/pt"],
             r"^--model_name_or_path '\S+/pt': the directory holds no config\.json; give a saved model's directory or a Hub name$"),
    finetune("ft_eval_mode_beam", [*TOY, "--eval_mode", "beam"],
             r"^--eval_mode beam: must be one of auto, score, generate$"),
    finetune("ft_zero_eval_samples", [*TOY, "--max_eval_samples", "0"],
             r"^--max_eval_samples 0: must be at least 1 \(leave it out for every example\)$"),
    finetune("ft_not_utf8_tsv", [*TOY, "--train_file", "{tmp}/ft/latin1.tsv", "--validation_file", "{tmp}/ft/good.csv"],
             r"^\S+/ft/latin1\.tsv: not UTF-8 text \(byte 0xe9 at offset 22, line 2\); re-encode it as UTF-8$"),
    finetune("ft_missing_column", [*TOY, "--train_file", "{tmp}/ft/no_sentence.csv", "--validation_file", "{tmp}/ft/good.csv"],
             r"^\S+/ft/no_sentence\.csv: missing column 'sentence'; columns found: text, label$"),
    finetune("ft_score_out_of_range", [*STSB, "--train_file", "{tmp}/ft/stsb.csv", "--validation_file", "{tmp}/ft/stsb.csv"],
             r"^\S+/ft/stsb\.csv, line 3: column 'label': score '7\.5' is not a number in \[0\.0, 5\.0\]$"),
    finetune("ft_tab_inside_tsv_text", [*TOY, "--train_file", "{tmp}/ft/tab.tsv", "--validation_file", "{tmp}/ft/good.csv"],
             r"^\S+/ft/tab\.tsv: line 3: 3 fields, the header has 2 \(a tab inside the text\?\)$"),
    finished(finetune("ft_finished_run", TOY,
                      r"^--output_dir \S+/out/finished_ft: holds a finished run \(all_results\.json\); .* --overwrite_output_dir",
                      output_dir="{tmp}/out/finished_ft"), "{tmp}/out/finished_ft"),
    # --- seq2seq.py ------------------------------------------------------------------------------
    seq2seq("s2s_invalid_json", ["--data_name", "s2s_broken"],
            r"^\S+/mount/data/s2s_broken\.json: invalid JSON at line 2 column 18: Expecting ',' delimiter$"),
    seq2seq("s2s_multiline_json_position", ["--data_name", "s2s_good", "--train_file", "{tmp}/pretty_bad.json"],
            r"^\S+/pretty_bad\.json: invalid JSON at line 3 column 16: Expecting ',' delimiter$"),
    seq2seq("s2s_completion_a_number", ["--data_name", "s2s_number"],
            r"^\S+/data/s2s_number\.json: train record 2: field 'completion' must be a string, got int 5$"),
    seq2seq("s2s_both_model_flags", ["--data_name", "s2s_good", "--model_init_path", "{mount}/models/tiny"],
            r"^give exactly one of --model_init_name \(a folder under \S+/mount/models\) or --model_init_path"),
    seq2seq("s2s_n_samples_0", ["--data_name", "s2s_good", "--n_samples", "0"],
            r"^--n_samples 0: must be at least 1$"),
    seq2seq("s2s_all_completions_empty", ["--data_name", "s2s_empty_completions"],
            r"^\S+/data/s2s_empty_completions\.json: all 2 train records have an empty 'completion' \(nothing to learn or score\)$"),
    finished(seq2seq("finished_s2s", ["--data_name", "s2s_good"],
                     r"^--output_dir \S+/models/finished_s2s: holds a finished run \(all_results\.json\); .* --overwrite_output_dir"),
             "{mount}/models/finished_s2s"),
    # --- clf.py ----------------------------------------------------------------------------------
    clf("clf_target_above_1", ["--data_name", "clf_range"],
        r"^\S+/data/clf_range\.json: train record 2: field 'target' must be a number in \[0, 1\], got 1\.5$"),
    clf("clf_target_nan", ["--data_name", "clf_nan"],
        r"^\S+/data/clf_nan\.json: eval record 1: field 'target' must be a number in \[0, 1\], got nan$"),
    clf("clf_target_a_string", ["--data_name", "clf_string"],
        r"^\S+/data/clf_string\.json: train record 1: field 'target' must be a number in \[0, 1\], got str \"0\.7\"$"),
    clf("clf_no_target", ["--data_name", "clf_no_target"],
        r"^\S+/data/clf_no_target\.json: train record 3: no 'target' field \(required: input, target\)$"),
    clf("clf_empty_train", ["--data_name", "clf_empty_train"],
        r"^\S+/data/clf_empty_train\.json: the train split is empty$"),
    clf("clf_not_utf8_data", ["--data_name", "clf_latin1"],
        r"^\S+/data/clf_latin1\.json: not UTF-8 text \(byte 0xe9 at offset 25, line 1\); re-encode it as UTF-8$"),
    clf("clf_not_utf8_config", ["--config", "{tmp}/clf/latin1.yaml", "--data_name", "clf_good"],
        r"^\S+/clf/latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 27, line 2\); re-encode it as UTF-8$"),
    clf("clf_invalid_config_yaml", ["--config", "{tmp}/clf/bad.yaml", "--data_name", "clf_good"],
        r"^\S+/clf/bad\.yaml: invalid YAML at line 2 column 20: mapping values are not allowed here$"),
    clf("clf_template_without_input", ["--data_name", "clf_good", "--template", "Is it sport?"],
        r"^--template 'Is it sport\?': must contain \{input\}"),
    clf("clf_fp16", ["--data_name", "clf_good", "--fp16"],
        r"^--fp16: T5's activations overflow float16 .* pass --allow_fp16 to force it$"),
    clf("clf_unknown_flag", ["--data_name", "clf_good", "--yes_tokn", "yes"], r"^unknown flag --yes_tokn \(did you mean --yes_token\?\)$"),
    clf("clf_no_model_folder", ["--data_name", "clf_good", "--model_pretrain_name", "{tmp}/no_such_model"],
        r"^--model_pretrain_name '\S+/no_such_model': no such local directory, and not a Hub name \(org/name\)$"),
    finished(clf("finished_clf", ["--data_name", "clf_good"],
                 r"^--output_dir \S+/models/finished_clf: holds a finished run \(all_results\.json\); .* --overwrite_output_dir"),
             "{mount}/models/finished_clf"),
    # Damaged models, checkpoints and output dirs.
    finetune("ft_invalid_model_config", [*TOY, "--model_name_or_path", "{tmp}/broken_config"],
             r"^\S+/broken_config/config\.json: invalid JSON at line 2 column 1: Expecting ',' delimiter$"),
    pretrain("pt_incomplete_checkpoint", ["--train_file", "{tmp}/pt/corpus.txt", "--resume_from_checkpoint", "{tmp}/cut/checkpoint-4"],
             r"^--resume_from_checkpoint \S+/cut/checkpoint-4: not a complete checkpoint \(no trainer_state\.json; .* 'auto'"),
    pretrain("pt_dangling_symlink", ["--train_file", "{tmp}/pt/corpus.txt"],
             r"^--output_dir \S+/dangling: \S+/dangling is a symbolic link to \S+/gone, which does not exist", output_dir="{tmp}/dangling"),
    # Training controls (every script): KL data, early stopping, freezing.
    lm("ctl_kl_dataset_missing", ["--train_file", "{tmp}/lm/good.txt", "--kl_dataset", "{tmp}/lm/no_such.txt.gz"],
       r"^--kl_dataset \S+/lm/no_such\.txt\.gz: no such file$"),
    pretrain("ctl_kl_too_few_examples", ["--train_file", "{tmp}/pt/corpus.txt", "--kl_dataset", "{tmp}/lm/good.txt"],
             r"^--kl_dataset \S+/lm/good\.txt: holds 2 examples, fewer than --kl_examples_per_step 20 "),
    finetune("ctl_kl_scaleby_count", [*TOY, "--kl_dataset", "{tmp}/lm/good.txt", "{tmp}/lm/good.txt", "--kl_scaleby", "1", "2", "3"],
             r"^--kl_scaleby has 3 values for 2 --kl_dataset files: give one value or one per file$"),
    lm("ctl_patience_without_validation", ["--train_file", "{tmp}/lm/good.txt", "--patience", "3"],
       r"^--patience 3: early stopping needs an evaluation each epoch"),
    seq2seq("ctl_frozen_and_unfrozen", ["--data_name", "s2s_good", "--frozen_params", "shared.weight", "--unfrozen_params", "lm_head.weight"],
            r"^--frozen_params and --unfrozen_params together: give one way of saying what trains$"),
    late(clf("ctl_pattern_matches_nothing", ["--data_name", "clf_good", "--frozen_params", "decoder.nothing.*", "--max_steps", "1",
                                             "--yes_token", "film", "--no_token", "script"],
             r"^--frozen_params 'decoder\.nothing\.\*': matches no parameter of the model")),
    # finetune_lm.py: data files with their metadata, preprocessing settings, the model type, the run.
    lm("lm_metadata_count", ["--test_file", "{tmp}/lm/meta.txt.gz"],
       r"^\S+/lm/meta_metadata\.json\.gz: holds 2 metadata lines but --test_file \S+/lm/meta\.txt\.gz holds 3 examples; "
       r"line i of the metadata belongs to example i"),
    lm("lm_json_without_text", ["--test_file", "{tmp}/lm/notext.json.gz"],
       r"^--test_file \S+/lm/notext\.json\.gz: line 2: no \"text\" field \(each line: \{\"text\": \.\.\., \"labels\": \.\.\.\}\)$"),
    lm("lm_labels_not_text", ["--train_file", "{tmp}/lm/good.txt", "--test_file", "{tmp}/lm/number_labels.jsonl"],
       r"^--test_file \S+/lm/number_labels\.jsonl: line 2: \"labels\" must be a string \(the target text\), got int$"),
    lm("lm_not_utf8", ["--train_file", "{tmp}/lm/latin1.txt"],
       r"^\S+/lm/latin1\.txt: not UTF-8 text \(byte 0xe9 at offset 9, line 2\); re-encode it as UTF-8$"),
    lm("lm_blank_line", ["--test_file", "{tmp}/lm/blank.txt"],
       r"^--test_file \S+/lm/blank\.txt: line 2 is blank; every line is one example"),
    lm("lm_unknown_file_type", ["--test_file", "{tmp}/lm/good.csv"], r"^--test_file \S+/lm/good\.csv: unknown data file type; give \.txt"),
    lm("lm_masking_a_causal_lm", ["--test_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn.test", "mask_random_tokens"],
       r"^data_preprocessing_fn\.test: mask_random_tokens masks tokens; a causal LM \(lm\) predicts every token: use identity$"),
    lm("lm_word_not_one_token", ["--test_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn.test", "mask_word_tokens",
                                 "--data_preprocessing_fn_kwargs.test.word_tokens_to_mask", "qqzzxx"],
       r"^mask_word_tokens: word_tokens_to_mask entry 'qqzzxx' must be one known token; it encodes to \d+ tokens",
       model="{mount}/models/tiny", late=True),
    lm("lm_unknown_function", ["--train_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn.train", "mask_everything"],
       r"^data_preprocessing_fn\.train: unknown preprocessing function 'mask_everything'; valid: identity, .*, mask_words$"),
    lm("lm_unknown_strategy", ["--train_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn_strategy.train", "sometimes"],
       r"^data_preprocessing_fn\.train: unknown preprocessing strategy 'sometimes'; valid: once, per_batch$"),
    lm("lm_unknown_kwarg", ["--train_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn", "mask_random_spans",
                            "--data_preprocessing_fn_kwargs.train.noise", "0.2", "--model_task", "seq2seq"],
       r"^data_preprocessing_fn\.train: mask_random_spans takes no kwarg 'noise'; valid: mask_prop, mean_noise_span_length$"),
    lm("lm_replacement_props_sum", ["--train_file", "{tmp}/lm/good.txt", "--model_task", "mlm", "--data_preprocessing_fn.train", "mask_random_tokens",
                                    "--data_preprocessing_fn_kwargs.train.replacement_props.mask", "0.5",
                                    "--data_preprocessing_fn_kwargs.train.replacement_props.random", "0.1",
                                    "--data_preprocessing_fn_kwargs.train.replacement_props.original", "0.1"],
       r"^data_preprocessing_fn\.train: replacement_props must map exactly 'mask', 'random' and 'original' to non-negative numbers that sum to 1"),
    lm("lm_unknown_split", ["--train_file", "{tmp}/lm/good.txt", "--data_preprocessing_fn.dev", "identity"],
       r"^--data_preprocessing_fn: unknown split 'dev'; keys are train, validation, test$"),
    lm("lm_unknown_model_task", ["--test_file", "{tmp}/lm/good.txt", "--model_task", "clm"],
       r"^--model_task clm: must be one of lm, mlm, seq2seq"),
    lm("lm_test_only_without_test_file", [], r"^nothing to do: give --train_file \(with --validation_file\) to fine-tune, and/or --test_file"),
    lm("lm_validation_without_train", ["--validation_file", "{tmp}/lm/good.txt"], r"^--validation_file without --train_file"),
    lm("lm_study_param_no_argument", ["--train_file", "{tmp}/lm/good.txt", "--validation_file", "{tmp}/lm/good.txt", "--do_optimize",
                                      "--params.learnig_rate.values", "1e-5", "1e-3"],
       r"^--params\.learnig_rate: no such training argument \(did you mean learning_rate\? a study varies Trainer and loss-term "
       r"arguments, e\.g\. learning_rate, weight_decay, .*kl_scaleby\)$"),
    lm("lm_study_low_above_high", ["--train_file", "{tmp}/lm/good.txt", "--validation_file", "{tmp}/lm/good.txt", "--do_optimize",
                                   "--params.learning_rate.values", "1e-3", "1e-5"],
       r"^--params\.learning_rate\.values \[0\.001, 1e-05\]: low 0\.001 is above high 1e-05; a range is \[low, high\]"),
    finished(lm("finished_lm", ["--train_file", "{tmp}/lm/good.txt"],
                r"^--output_dir \S+/out/finished_lm: holds a finished run \(all_results\.json\); .* --overwrite_output_dir"),
             "{tmp}/out/finished_lm"),
    lm("lm_head_mask_wrong_shape", ["--test_file", "{tmp}/lm/good.txt", "--head_mask", "{tmp}/bias/gpt2_mask.json"],
       r"^\S+/bias/gpt2_mask\.json: 'decoder' has shape \(1, 4\); this model's decoder mask is \(2, 4\) \(layers, heads\)$"),
    # --- bias.py -----------------------------------------------------------------------------------
    bias("bias_csv_without_sent_more", ["--dataset_name", "crows_pairs"],
         r"^\S+/bias/nosent/crows_pairs_anonymized\.csv: no column 'sent_more'; a CrowS-Pairs file has columns sent_more, "
         r"sent_less, stereo_antistereo, bias_type$", data="{tmp}/bias/nosent"),
    bias("bias_stereoset_without_data", ["--dataset_name", "stereoset"],
         r"^\S+/bias/nodata/dev\.json: no 'data' key; a StereoSet file is \{\"version\": \.\.\., \"data\": ", data="{tmp}/bias/nodata"),
    bias("bias_bracket_line_without_brackets", ["--dataset_name", "winobias"],
         r"^\S+/bias/winobias/anti_stereotyped_type1\.txt\.test line 2: no \[bracketed\] mentions; a WinoBias line looks like ",
         data="{tmp}/bias/winobias"),
    bias("bias_unknown_dataset_name", ["--dataset_name", "crowspairs"],
         r"^unknown task 'crowspairs' of benchmark 'bias'; valid: crows_pairs, stereoset, winobias$"),
    bias("bias_head_mask_wrong_shape", ["--dataset_name", "crows_pairs", "--head_mask", "{tmp}/bias/wrong_shape.json"],
         r"^\S+/bias/wrong_shape\.json: 'encoder' has shape \(3, 3\); this model's encoder mask is \(2, 4\) \(layers, heads\)$"),
    bias("bias_mask_not_numbers", ["--dataset_name", "crows_pairs", "--head_mask", "{tmp}/bias/words.json"],
         r"^\S+/bias/words\.json: 'encoder' is not an array of numbers; give a \(layers, heads\) array of 0\.\.1 values$"),
    bias("bias_mask_top_k_too_large", ["--dataset_name", "crows_pairs", "--mask_top_k", "9"],
         r"^--mask_top_k 9: the model has 8 heads$"),
    # --- LoRA (adapters.py) ---------------------------------------------------------------------------
    finetune("lora_glob_targets", ["--benchmark", "toy", "--dataset_name", "sentiment", "--lora_r", "8", "--lora_target_modules", "*.q"],
             r"^--lora_target_modules '\*\.q': not a valid regular expression \(nothing to repeat at position 0\); peft matches a "
             r"regular expression against the whole module name, not a glob: write '\.\*\\\.q'$"),
    pretrain("lora_from_scratch", ["--train_file", "{tmp}/pt/corpus.txt", "--lora_r", "8"],
             r"^--lora_r 8: LoRA adapts a pretrained model, and this run builds a new one; give --model_name_or_path"),
    lm("lora_with_frozen_params", ["--train_file", "{tmp}/lm/good.txt", "--lora_r", "8", "--frozen_params", "wte.weight"],
       r"^--frozen_params with --lora_r: LoRA trains its adapters and nothing else, and saves only them"),
    bias("bias_lora_flag", ["--dataset_name", "crows_pairs", "--lora_r", "8"],
         r"^--lora_r: a training flag, and bias.py only scores; give an adapter directory as --model_name_or_path"),
    # --- Hub (hub.py) ----------------------------------------------------------------------------------
    finetune("hub_push_offline", ["--benchmark", "toy", "--dataset_name", "sentiment", "--push_to_hub"],
             r"^--push_to_hub: the Hub is off here \(HF_HUB_OFFLINE=1\); run with --push_to_hub_dry_run to write what would be "
             r"pushed into OUTPUT_DIR/hub"),
    # A regular file as --mount_dir: the run folder would lie below it (root ignores permission bits; this it cannot).
    clf("clf_run_below_a_file", ["--data_name", "clf_good"],
        r"^--output_dir \S+/a_file/models/clf_run_below_a_file: \S+/a_file is a file, not a directory", mount="{tmp}/a_file"),
]


def write(path: str, content: str | bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)


def write_fixtures(tmp: str, mount: str) -> None:
    """Tiny data files, each broken in one way, and finished runs (an `all_results.json` marks one)."""
    write(f"{tmp}/a_file", "a regular file, used as a parent directory\n")
    for run_dir in (f"{tmp}/out/finished_pt", f"{tmp}/out/finished_ft", f"{mount}/models/finished_s2s",
                    f"{mount}/models/finished_clf", f"{tmp}/out/finished_lm"):
        write(f"{run_dir}/all_results.json", json.dumps({"eval_loss": 1.25}))
        write(f"{run_dir}/model.safetensors", b"\x00weights\x01")
    # pre_train_t5.py corpora
    write(f"{tmp}/pt/corpus.txt", "the model learns tokens from text\nand predicts missing spans\n")
    write(f"{tmp}/pt/bad.jsonl", '{"text": "a"}\n{"text": oops}\n')
    write(f"{tmp}/pt/number.jsonl", '{"text": "fine"}\n{"text": 42}\n')
    write(f"{tmp}/pt/blank.txt", "\n  \n\n")
    write(f"{tmp}/pt/latin1.txt", b"hello\ncaf\xe9 au lait\n")  # 0xe9 at byte 9, line 2
    # fine_tune_t5.py task files (toy/sentiment: sentence, label; glue/stsb: sentence1, sentence2, label)
    write(f"{tmp}/ft/good.csv", "sentence,label\nthe film was great,positive\nthe plot was dull,0\n")
    write(f"{tmp}/ft/bad.jsonl", '{"sentence": "fine", "label": 1}\n{"sentence": "the plot was dull" "label": 0}\n')
    write(f"{tmp}/ft/latin1.tsv", b"sentence\tlabel\nthe caf\xe9 was great\t1\n")  # 0xe9 at byte 22
    write(f"{tmp}/ft/no_sentence.csv", "text,label\nthe film was great,1\n")
    write(f"{tmp}/ft/tab.tsv", "sentence\tlabel\nthe film was great\t1\nthe verdict\t0\t1 (really positive)\n")  # line 3
    write(f"{tmp}/ft/stsb.csv", "sentence1,sentence2,label\na cat sat,a cat sat,5.0\na dog,a car,7.5\n")
    # seq2seq.py records
    pair = {"prompt": "2 + 2 =", "completion": "4"}
    write(f"{tmp}/pretty_bad.json", '{\n"train": [\n{"prompt": "a" "completion": "b"}\n]\n}\n')  # line 3 column 16
    write(f"{mount}/data/s2s_good.json", json.dumps({"train": [pair, pair], "eval": [pair]}))
    write(f"{mount}/data/s2s_broken.json", '{"train": [\n  {"prompt": "a" "completion": "b"}], "eval": []}\n')  # line 2 column 18
    write(f"{mount}/data/s2s_empty_completions.json", json.dumps({"train": [{**pair, "completion": ""}] * 2, "eval": [pair]}))
    write(f"{mount}/data/s2s_number.json", json.dumps({"train": [pair, {"prompt": "2 + 3 =", "completion": 5}], "eval": [pair]}))
    # clf.py records and configs
    item = {"input": "the striker scored twice", "target": 0.9}
    write(f"{mount}/data/clf_good.json", json.dumps({"train": [item, item], "eval": [item]}))
    write(f"{mount}/data/clf_range.json", json.dumps({"train": [item, {"input": "a goal", "target": 1.5}], "eval": [item]}))
    write(f"{mount}/data/clf_nan.json", json.dumps({"train": [item], "eval": [{"input": "a goal", "target": float("nan")}]}))
    write(f"{mount}/data/clf_string.json", json.dumps({"train": [{"input": "a goal", "target": "0.7"}], "eval": [item]}))
    write(f"{mount}/data/clf_no_target.json", json.dumps({"train": [item, item, {"input": "a goal"}], "eval": [item]}))
    write(f"{mount}/data/clf_empty_train.json", json.dumps({"train": [], "eval": [item]}))
    write(f"{mount}/data/clf_latin1.json", b'{"train": [{"input": "caf\xe9", "target": 0.1}], "eval": []}')  # 0xe9 at byte 25
    write(f"{tmp}/clf/bad.yaml", "max_steps: 10\nlearning_rate: 1e-3: x\nseed: 1\n")  # line 2 column 20
    write(f"{tmp}/clf/latin1.yaml", b"max_steps: 10\ntemplate: caf\xe9 {input}\n")
    # finetune_lm.py data (a stand-in GPT-2 folder: the early checks read its config.json only)
    write(f"{tmp}/lm/gpt2/config.json", json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2, "n_head": 4}))
    write(f"{tmp}/lm/gpt2/tokenizer.json", "{}")
    write(f"{tmp}/lm/good.txt", "the model learns\nmissing spans\n")
    write(f"{tmp}/lm/good.csv", "text\nthe model learns\n")
    write(f"{tmp}/lm/blank.txt", "the model learns\n\nmissing spans\n")
    write(f"{tmp}/lm/latin1.txt", b"hello\ncaf\xe9 au lait\n")  # 0xe9 at byte 9, line 2
    write(f"{tmp}/lm/meta.txt.gz", gzip.compress(b"a b\nc d\ne f\n"))
    write(f"{tmp}/lm/meta_metadata.json.gz", gzip.compress(b'{"id": 1}\n{"id": 2}\n'))
    write(f"{tmp}/lm/notext.json.gz", gzip.compress(b'{"text": "a b"}\n{"labels": "c d"}\n'))
    write(f"{tmp}/lm/number_labels.jsonl", '{"text": "a b", "labels": "b"}\n{"text": "a b", "labels": 3}\n')
    # bias.py: a stand-in BERT (2 layers x 4 heads), the benchmarks' files each broken in one way, mask files
    write(f"{tmp}/bias/bert/config.json", json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert",
                                                      "num_hidden_layers": 2, "num_attention_heads": 4}))
    write(f"{tmp}/bias/bert/tokenizer.json", "{}")
    crows = ',sent_more,sent_less,stereo_antistereo,bias_type\n0,Zorbians cook well.,Quellans cook well.,stereo,age\n'
    write(f"{tmp}/bias/crows/crows_pairs_anonymized.csv", crows)
    write(f"{tmp}/bias/nosent/crows_pairs_anonymized.csv", crows.replace(",sent_more,", ",sentence,"))
    write(f"{tmp}/bias/nodata/dev.json", json.dumps({"version": "1.0"}))
    for stereotype in ("pro", "anti"):
        for kind in (1, 2):
            pronoun = "he" if stereotype == "pro" else "she"
            lines = [f"1 [The baker] thanked the clerk because [{pronoun}] was kind.", f"2 The baker met the clerk because {pronoun} was late."]
            if (stereotype, kind) != ("anti", 1):
                lines[1] = f"2 [The baker] met the clerk because [{pronoun}] was late."
            write(f"{tmp}/bias/winobias/{stereotype}_stereotyped_type{kind}.txt.test", "\n".join(lines) + "\n")
    write(f"{tmp}/bias/wrong_shape.json", json.dumps({"encoder": [[1, 1, 1]] * 3}))
    write(f"{tmp}/bias/words.json", json.dumps({"encoder": "all heads"}))
    write(f"{tmp}/bias/gpt2_mask.json", json.dumps({"decoder": [[1, 0, 1, 1]]}))
    # damaged model, checkpoint, output dir
    write(f"{tmp}/broken_config/config.json", '{"model_type": "t5"\n"d_model": 4}\n')  # line 2 column 1
    write(f"{tmp}/broken_config/spiece.model", b"\x00")
    write(f"{tmp}/cut/checkpoint-4/model.safetensors", b"\x00half")  # a save cut short: no trainer_state.json
    os.symlink(f"{tmp}/gone", f"{tmp}/dangling")


def snapshot(directory: str) -> dict[str, str]:
    """Relative path -> sha256 of every file under `directory`."""
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


class BadInputTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="bad_inputs_")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.mount = os.path.join(cls.tmp, "mount")
        write_fixtures(cls.tmp, cls.mount)
        cls.before = {name: snapshot(cls.fill(case.unchanged)) for name, case in CASES if case.unchanged}
        cls.models_before = sorted(os.listdir(os.path.join(cls.mount, "models")) + ["tiny"])
        cls.out_before = sorted(os.listdir(os.path.join(cls.tmp, "out")))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": os.path.join(cls.tmp, "cache")}

        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            # The tiny model is built while the cases that do not name it run (pre_train_t5.py's).
            model = pool.submit(save_tiny_t5, os.path.join(cls.mount, "models", "tiny"))

            def run(case: Case) -> subprocess.CompletedProcess:
                argv = [sys.executable, "-X", "importtime", case.script, *(cls.fill(a) for a in case.argv), "--report_to", "none"]
                if any("{mount}" in a for a in case.argv):
                    model.result()
                return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)

            futures = {name: pool.submit(run, case) for name, case in CASES}
            cls.results = {name: future.result() for name, future in futures.items()}

    @classmethod
    def fill(cls, text: str) -> str:
        return text.replace("{tmp}", cls.tmp).replace("{mount}", cls.mount)

    @parameterized.named_parameters((name, name, case) for name, case in CASES)
    def test_one_error_line_and_nothing_written(self, name: str, case: Case) -> None:
        proc = self.results[name]
        imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
        where = f"{case.script} {' '.join(self.fill(a) for a in case.argv)}\nstderr:\n{stderr[-3000:]}"
        self.assertNotIn("Traceback", stderr, where)
        self.assertEqual(proc.returncode, 2, where)
        lines = [line for line in stderr.splitlines() if line.strip()]
        if case.late:  # the model loaded first: its loading may have logged; the error is the one last line
            self.assertLen([line for line in lines if line.startswith("error: ")], 1, where)
            lines = lines[-1:]
        self.assertLen(lines, 1, where)
        self.assertTrue(lines[0].startswith("error: "), where)
        self.assertRegex(lines[0].removeprefix("error: "), re.compile(case.pattern), where)
        for path in case.absent:
            self.assertFalse(os.path.exists(self.fill(path)), f"{self.fill(path)} left behind by\n{where}")
        if not case.late:
            self.assertEqual(sorted(imported & set(HEAVY)), [], f"imported before the mistake was found:\n{where}")

    @parameterized.named_parameters((name, name, case) for name, case in CASES if case.unchanged)
    def test_finished_run_unchanged(self, name: str, case: Case) -> None:
        self.assertEqual(snapshot(self.fill(case.unchanged)), self.before[name])

    def test_no_run_folder_left_behind(self) -> None:
        # Covers the runs named by default (`<data>-<model>-<time>`) as well as the cases' own names.
        self.assertEqual(sorted(os.listdir(os.path.join(self.mount, "models"))), self.models_before)
        self.assertEqual(sorted(os.listdir(os.path.join(self.tmp, "out"))), self.out_before)
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "a_file")))

    def test_catalogue_covers_every_script(self) -> None:
        counts = {script: sum(case.script == script for _, case in CASES)
                  for script in ("pre_train_t5.py", "fine_tune_t5.py", "seq2seq.py", "clf.py", "finetune_lm.py", "bias.py")}
        self.assertGreaterEqual(min(counts.values()), 5, counts)


if __name__ == "__main__":
    absltest.main()
