"""Test helper (not a test module): `python tests/train_kill_helper.py STEP sit-train-flags...`
runs `sit train` with a callback that SIGKILLs this process right after step STEP."""

import os
import signal
import sys

import sit.train
from sit.cli import main
from sit.train import Callbacks


def _kill_after(kill_at: int):
    def after_step(step: int) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return Callbacks(after_step=after_step)


if __name__ == "__main__":
    kill_at = int(sys.argv[1])
    real_train = sit.train.train

    def train_with_kill(*args, **kwargs):
        return real_train(*args, callbacks=_kill_after(kill_at), **kwargs)

    sit.train.train = train_with_kill  # sit.commands.train looks it up at call time
    sys.exit(main(["train", *sys.argv[2:]]))
