"""Run the alos2fm CLI and send this process a signal after optimiser step K.

Usage: ``python interrupted_run.py SIGNAL STEP alos2fm-arguments...``. The signal is real
(``os.kill`` of this process), so SIGKILL ends the run at once, as a killed job would, and
SIGTERM / SIGUSR1 go through the run's own handlers, as on a preempted cluster node.
"""

import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

import alos2fm.train.engine as engine
from alos2fm.cli import main


class _SignalAt(Callback):
    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _with_signal(build_trainer, signum: int, step: int):
    def build(*args, callbacks=(), **kwargs):
        return build_trainer(*args, callbacks=[*callbacks, _SignalAt(signum, step)], **kwargs)

    return build


if __name__ == "__main__":
    signum, step = signal.Signals[sys.argv[1]], int(sys.argv[2])
    import alos2fm.train.pretrain as pretrain

    pretrain.build_trainer = _with_signal(engine.build_trainer, signum, step)
    sys.argv = ["alos2fm", *sys.argv[3:]]
    main()
