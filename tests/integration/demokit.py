"""Starting `fogline demo` in a test, and finding every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY = "Ctrl-C stops"  # the last of the lines the demo prints once everything runs
MARK = "FOGLINE_TEST_DEMO_MARK"


class Demo:
    """`fogline demo` as a user starts it (`python -m fogline` is the `fogline` command); `lines` fills as it prints (stdout and stderr).

    Its own session makes it the leader of a process group, as a shell makes a foreground
    job: `interrupt()` is Ctrl-C, SIGINT to that whole group. Every process it starts
    inherits a mark in its environment, so `left()` finds them wherever they went (the
    broker and the devices run in sessions of their own)."""

    def __init__(self, *args: str, log_level: str = "WARNING") -> None:
        self.mark = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fogline", "--log-level", log_level, "demo", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, MARK: self.mark},
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> int:
        """The index of the first line holding `text`, once it is printed."""
        return self.wait_for_match(re.compile(re.escape(text)), timeout)

    def wait_for_match(self, pattern: re.Pattern[str], timeout: float = 60) -> int:
        """The index of the first line `pattern` finds something in, once it is printed."""

        def at() -> int | None:
            return next((i for i, line in enumerate(self.lines) if pattern.search(line)), None)

        with self._changed:
            found = self._changed.wait_for(
                lambda: at() is not None or not self._reader.is_alive(), timeout
            )
            index = at()
        what = pattern.pattern
        assert found, f"the demo did not print {what!r} in {timeout:g}s: {self.lines}"
        assert index is not None, f"the demo ended without printing {what!r}: {self.lines}"
        return index

    def wait_for_library(self, name: str, timeout: float = 60) -> None:
        """Once the process has mapped a shared library whose path holds `name` (an
        extension module it imports): a moment in its imports, however loaded the machine."""
        maps = Path(f"/proc/{self.proc.pid}/maps")
        deadline = time.monotonic() + timeout
        while name not in maps.read_text():
            assert self.proc.poll() is None, f"the demo ended: {self.lines}"
            assert time.monotonic() < deadline, f"no {name} loaded in {timeout:g}s"
            time.sleep(0.001)

    def interrupt(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # as the terminal sends it on Ctrl-C

    def finish(self, timeout: float = 60) -> int:
        """Its exit status, once it ended and printed all it had to say."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def left(self) -> list[str]:
        """The command lines of processes it started that still run."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = (proc / "environ").read_bytes()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if f"{MARK}={self.mark}".encode() in environ.split(b"\0"):
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command}")
        return found

    def kill_left(self) -> None:
        """Whatever a failed test leaves is not left to the next one."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for entry in self.left():
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
        if self.proc.stdout is not None:
            self._reader.join(10)
            self.proc.stdout.close()
