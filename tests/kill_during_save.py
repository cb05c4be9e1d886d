"""pre_train_t5.py, killed with SIGKILL in the middle of its checkpoint save at one step (for
tests/test_reliability.py).

    python tests/kill_during_save.py STEP pre_train_t5-arguments...

The kill lands after the model and the optimizer of checkpoint STEP are written and before its RNG and
trainer state are, as a `kill -9` (or a full disk) during a large save would.
"""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import Trainer  # noqa: E402

KILL_AT = int(sys.argv[1])
_save_rng_state = Trainer._save_rng_state


def _killed_at_step(self: Trainer, output_dir: str) -> None:
    if self.state.global_step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    _save_rng_state(self, output_dir)


Trainer._save_rng_state = _killed_at_step

if __name__ == "__main__":
    import pre_train_t5
    from errors import run_main

    run_main(lambda _: pre_train_t5.main(sys.argv[2:]))
