"""Run a module under cProfile timed by the process's CPU clock, not the wall clock.

    python -m bench._cpu_profile OUT MODULE [ARGS...]

``python -m cProfile`` times by the wall clock: on a shared 2-core machine, the time a
process waits for a core lands on whatever function it was in, so the profile shows the
machine's load. The stats are written to OUT when the module returns or raises (SIGTERM
ends ``porterlb manager`` with a return).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
