"""Dagster wiring of logloop."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Partitioned asset checks and backfill policies are flagged preview/beta; we rely on
# them deliberately, so their warnings would only be noise on every command.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
