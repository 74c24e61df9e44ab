"""The product's code location with every step in its own sandbox process (tests/sandbox_executor.py)."""

from dagster import Definitions

from orchestration import definitions as product
from tests.sandbox_executor import sandbox_step_executor

defs = Definitions(
    assets=product.defs.assets, asset_checks=product.defs.asset_checks, jobs=product.defs.jobs,
    schedules=product.defs.schedules, sensors=product.defs.sensors, resources=product.defs.resources,
    executor=sandbox_step_executor,
)
