"""A helper process whose stdout lines are read by a thread while a with-block runs.

The lab's measuring streams (the traffic generator, the ARP sampler) run as processes of their
own, not as threads of the caller: sharing the caller's interpreter lock with an API client and
a test loop delays them by hundreds of milliseconds on a busy machine. Each prints a line per
measurement (CLOCK_MONOTONIC is one clock for every process); a subclass parses them.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self


class LineStream:
    """Runs ``argv`` while the with-block runs; :meth:`_line` takes each line it prints.

    Leaving the block sends SIGTERM: the process finishes what it measures, prints it and
    exits, and every line it printed has been taken when ``__exit__`` returns.
    """

    def __init__(self, argv: Sequence[str], *, name: str) -> None:
        self.argv = list(argv)
        self._process: subprocess.Popen[str] | None = None
        self._reader = threading.Thread(target=self._read, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        self._reader.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process is not None
        with self._process:  # closes its stdout and waits for it
            self._process.terminate()
            self._reader.join()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._line(line)

    def _line(self, line: str) -> None:
        raise NotImplementedError
