"""pre_train_t5.py with the save of one checkpoint cut short, as a user's run can have it (for
tests/test_reliability.py).

    python tests/fail_during_save.py kill STEP pre_train_t5-arguments...
    python tests/fail_during_save.py disk_full STEP pre_train_t5-arguments...

kill: SIGKILL after the model and the optimizer of checkpoint STEP are written and before its RNG and
trainer state are, as a `kill -9` during a large save would.
disk_full: the disk fills up while the weights of checkpoint STEP are written: half the file lands, then
safetensors raises what it raises on a full disk (the message as read on a full tmpfs).
"""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import safetensors.torch  # noqa: E402
import transformers.modeling_utils  # noqa: E402
from safetensors import SafetensorError  # noqa: E402
from transformers import Trainer  # noqa: E402

MODE, STEP = sys.argv[1], int(sys.argv[2])
_save_rng_state = Trainer._save_rng_state
_safe_save_file = transformers.modeling_utils.safe_save_file


def _killed_at_step(self: Trainer, output_dir: str) -> None:
    if self.state.global_step == STEP:
        os.kill(os.getpid(), signal.SIGKILL)
    _save_rng_state(self, output_dir)


def _disk_full_at_step(tensors: dict, filename: str, metadata: dict | None = None) -> None:
    if f"checkpoint-{STEP}{os.sep}" in filename:
        data = safetensors.torch.save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    _safe_save_file(tensors, filename, metadata=metadata)


if MODE == "kill":
    Trainer._save_rng_state = _killed_at_step
elif MODE == "disk_full":
    transformers.modeling_utils.safe_save_file = _disk_full_at_step
else:
    raise SystemExit(f"unknown mode {MODE!r}: kill or disk_full")

if __name__ == "__main__":
    import pre_train_t5
    from errors import run_main

    run_main(lambda _: pre_train_t5.main(sys.argv[3:]))
