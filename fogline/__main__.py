"""The `fogline` command (also `python -m fogline`).

Importing the command takes a tenth of a second, half a second on a busy machine: a Ctrl-C
meanwhile ends it as quietly as one after it, with the shell's status for SIGINT."""

import sys


def main() -> int:
    try:
        from fogline.cli import main as run  # noqa: PLC0415
    except KeyboardInterrupt:
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
