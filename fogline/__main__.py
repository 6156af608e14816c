"""The `fogline` command (also `python -m fogline`).

Importing the command takes a tenth of a second, half a second on a busy machine. A Ctrl-C
meanwhile is held until the imports are done, then ends the command as quietly as one
after it, with the shell's status for SIGINT: raised inside an extension's initialisation
it crashed orjson's (SIGSEGV), and inside a class body Python wraps it in a RuntimeError."""

import signal
import sys
from types import FrameType


def main() -> int:
    interrupted: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        interrupted.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        from fogline.cli import main as run  # noqa: PLC0415
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        return 128 + signal.SIGINT
    return run()


if __name__ == "__main__":
    sys.exit(main())
