"""Dagster wiring of logloop."""

import atexit
import gc
import warnings

# Partitioned asset checks and backfill policies are flagged preview/beta; we rely on them
# deliberately, so their warnings would only be noise on every command. Matched by Dagster's
# wording rather than by its warning classes, so that importing this package (as the `logloop`
# command does) does not import Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)", module=r"dagster\.")

# Collections as Python's defaults space them (every 700 new objects, a full one every 70,000) walk
# again and again the long-lived objects that loading the code location creates (Dagster, torch, the
# storage clients). Collected every 10,000 new objects, with the same ratios between generations, a
# step that trains starts with about 14% less CPU and no more memory (benchmarks/process_start.py);
# garbage in reference cycles still goes at the next collection.
GC_THRESHOLDS = (10_000, 10, 10)
gc.set_threshold(*GC_THRESHOLDS)

# A process that has loaded the code location holds some 300,000 objects (Dagster, torch, ...), and
# at exit Python runs full garbage collections over all of them: 0.4 to 0.8 s of CPU for every step,
# run and command (benchmarks/process_exit.py). Freezing them as the exit begins leaves those
# collections next to nothing to walk. Every atexit handler (log flushing among them) still runs, and
# what is still referenced is still released; only garbage in reference cycles is left to the OS.
atexit.register(gc.freeze)
