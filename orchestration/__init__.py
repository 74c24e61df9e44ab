"""Dagster wiring of logloop."""

import atexit
import gc
import warnings

# Partitioned asset checks and backfill policies are flagged preview/beta; we rely on them
# deliberately, so their warnings would only be noise on every command. Matched by Dagster's
# wording rather than by its warning classes, so that importing this package (as the `logloop`
# command does) does not import Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)", module=r"dagster\.")

# A process that has loaded the code location holds some 300,000 objects (Dagster, torch, ...), and
# at exit Python runs full garbage collections over all of them: 0.4 to 0.8 s of CPU for every step,
# run and command (benchmarks/process_exit.py). Freezing them as the exit begins leaves those
# collections next to nothing to walk. Every atexit handler (log flushing among them) still runs, and
# what is still referenced is still released; only garbage in reference cycles is left to the OS.
atexit.register(gc.freeze)
