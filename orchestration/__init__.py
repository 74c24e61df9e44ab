"""Dagster wiring of logloop."""

import warnings

# Dagster's own warning classes, from the small package that defines them: importing `dagster`
# here would make every `orchestration` import (`logloop config` too) load all of Dagster.
from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

# Partitioned asset checks and backfill policies are flagged preview/beta; we rely on
# them deliberately, so their warnings would only be noise on every command.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
