"""seq2seq.py or clf.py without --training_run_name, under torchrun, with each process's clock set one
second apart (as two ranks that straddle a second see it): tests/test_distributed.py checks that the
processes still share one run dir.

    torchrun --nproc_per_node 2 tests/run_name_job.py SCRIPT ARGS...
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import records  # noqa: E402


class RankClock(datetime.datetime):
    """2026-12-02 12:00:00 plus one second per rank."""

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> "RankClock":
        return cls(2026, 12, 2, 12, 0, int(os.environ.get("RANK", "0")))


if __name__ == "__main__":
    records.datetime = RankClock
    script = importlib.import_module(os.path.splitext(os.path.basename(sys.argv[1]))[0])
    script.main(sys.argv[2:])
