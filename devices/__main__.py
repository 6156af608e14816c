"""`python -m devices factory ...`: the simulators without the `fogline` command around them.

A Ctrl-C while it is still importing ends it as quietly as one after (fogline/__main__.py)."""

import sys


def main() -> int:
    try:
        from devices.cli import main as run  # noqa: PLC0415
    except KeyboardInterrupt:
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
