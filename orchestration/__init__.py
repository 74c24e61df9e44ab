"""Dagster wiring of logloop."""

import warnings

# Partitioned asset checks and backfill policies are flagged preview/beta; we rely on them
# deliberately, so their warnings would only be noise on every command. Matched by Dagster's
# wording rather than by its warning classes, so that importing this package (as the `logloop`
# command does) does not import Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)", module=r"dagster\.")
