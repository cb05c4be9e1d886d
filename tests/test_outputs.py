"""The one records reader and the one records writer: formats, gzip, UTF-8 errors, carried user fields,
and the finished-run tail (training run vs evaluation-only run beside it)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile

from absl.testing import absltest, parameterized

from errors import UserError
from outputs import FINISHED_MARKER, RunOutputs, write_records
from records import read_records, read_text

ROWS = [{"idx": 0, "prediction": "positive", "meta": {"judge": 3}}, {"idx": 1, "prediction": "négatif", "meta": None}]


class WriteRecordsTest(parameterized.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp()

    @parameterized.parameters("out.jsonl", "out.jsonl.gz", "out.json", "out.json.gz")
    def test_json_formats_read_back_exactly(self, name: str) -> None:
        path = write_records(os.path.join(self.tmp, name), ROWS)
        self.assertEqual(read_records(path), ROWS)
        self.assertEqual(os.listdir(self.tmp), [name])  # no temporary file left behind

    @parameterized.parameters(("out.csv", ","), ("out.tsv.gz", "\t"))
    def test_tables_have_a_header_of_every_key_and_json_cells(self, name: str, delimiter: str) -> None:
        path = write_records(os.path.join(self.tmp, name), ROWS + [{"idx": 2, "extra": "x"}])
        text = read_text(path)
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        self.assertEqual(text.splitlines()[0].split(delimiter), ["idx", "prediction", "meta", "extra"])
        self.assertEqual(rows[0], {"idx": "0", "prediction": "positive", "meta": '{"judge": 3}', "extra": ""})
        self.assertEqual(rows[2]["extra"], "x")

    def test_carried_fields_and_per_token_rows(self) -> None:
        records = [{"text": "a b", "speaker": "s1", "score": 0.5}, {"text": "c", "speaker": "s2", "score": 0.1}]
        rows = [{"token": "a", "surprisal": 1.0}, {"token": "b", "surprisal": 2.0}, {"token": "c", "score": 9.0}]
        with self.assertLogs("outputs", level="WARNING") as logs:
            path = write_records(os.path.join(self.tmp, "tokens.jsonl"), rows, carry=records, example_of=[0, 0, 1])
        self.assertEqual(read_records(path), [
            {"text": "a b", "speaker": "s1", "score": 0.5, "token": "a", "surprisal": 1.0},
            {"text": "a b", "speaker": "s1", "score": 0.5, "token": "b", "surprisal": 2.0},
            {"text": "c", "speaker": "s2", "token": "c", "score": 9.0},  # the output's value wins
        ])
        self.assertIn("records already hold 'score'", logs.output[0])

    def test_unknown_format_is_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, r"\.jsonl, \.json, \.csv or \.tsv"):
            write_records(os.path.join(self.tmp, "out.txt"), ROWS)


class DiskFullTest(absltest.TestCase):
    def test_no_space_left_is_one_line_and_the_earlier_file_stays(self) -> None:
        import errno
        from unittest import mock

        import outputs

        run = tempfile.mkdtemp()
        path = os.path.join(run, "all_results.json")
        outputs.write_json_atomic(path, {"eval_loss": 1.0})

        real_fdopen = os.fdopen

        class Full:  # a file on a full disk: writing fails with OSError 28
            def __init__(self, fd: int, mode: str) -> None:
                self.file = real_fdopen(fd, mode)

            def __enter__(self) -> "Full":
                return self

            def __exit__(self, *exc: object) -> None:
                self.file.close()

            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        with mock.patch.object(outputs.os, "fdopen", Full):
            with self.assertRaisesRegex(UserError, rf"^{run}: disk full while writing all_results\.json \([\d.]+ MiB free\); "):
                outputs.write_json_atomic(path, {"eval_loss": 2.0})
        with open(path) as f:
            self.assertEqual(json.load(f), {"eval_loss": 1.0})
        self.assertEqual(os.listdir(run), ["all_results.json"])  # no temporary file left


class ReadTest(absltest.TestCase):
    def test_gzip_utf8_and_errors(self) -> None:
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, "r.jsonl.gz")
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write('{"text": "café"}\n\n{"text": "b"}\n')
        self.assertEqual(read_records(path), [{"text": "café"}, {"text": "b"}])
        latin1 = os.path.join(tmp, "l.jsonl")
        with open(latin1, "wb") as f:
            f.write('{"text": "caf\xe9"}\n'.encode("latin-1"))
        with self.assertRaisesRegex(UserError, r"l\.jsonl: not UTF-8 text \(byte 0xe9 at offset 13, line 1\); re-encode it as UTF-8$"):
            read_records(latin1)
        broken = os.path.join(tmp, "b.jsonl.gz")
        with open(broken, "wb") as f:
            f.write(b"not gzip")
        with self.assertRaisesRegex(UserError, r"b\.jsonl\.gz: not a readable gzip file"):
            read_text(broken)
        with self.assertRaisesRegex(UserError, r"nope\.jsonl: no such file$"):
            read_text(os.path.join(tmp, "nope.jsonl"))


class RunOutputsTest(absltest.TestCase):
    def test_training_run_then_evaluation_only_run_beside_it(self) -> None:
        run = tempfile.mkdtemp()
        trained = RunOutputs(run, evaluation_only=False)
        trained.write_records("predictions_eval.jsonl", ROWS)
        finished = trained.finish({"eval_loss": 1.5}, [{"loss": 2.0, "step": 1}, {"eval_loss": 1.5, "step": 1}], [], ["--x"])
        self.assertEqual(finished, os.path.join(run, FINISHED_MARKER))
        for name in ("provenance.json", "loss_curve.png", FINISHED_MARKER, "predictions_eval.jsonl"):
            self.assertTrue(os.path.isfile(os.path.join(run, name)), name)
        before = {name: open(os.path.join(run, name), "rb").read() for name in os.listdir(run)}

        again = RunOutputs(run, evaluation_only=True)
        written = again.write_records("predictions_eval.jsonl", ROWS[:1])
        results = again.finish({"eval_loss": 1.4}, [], [], None)
        self.assertEqual(os.path.basename(written), "predictions_eval-1.jsonl")
        self.assertEqual(os.path.basename(results), "eval_results.json")
        with open(results) as f:
            self.assertEqual(json.load(f), {"eval_loss": 1.4})
        self.assertEqual({name: open(os.path.join(run, name), "rb").read() for name in before}, before)  # nothing replaced


if __name__ == "__main__":
    absltest.main()
