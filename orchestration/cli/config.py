"""`logloop config`: the effective settings, where each value came from, secrets masked.

    logloop config [--json]

Imports only the settings (no Dagster, no torch, no store), so it answers at once, also where
the rest of the code location would not load.
"""

from __future__ import annotations

import json
import sys

DESCRIPTION = (
    "Print every setting's effective value and where it came from: the default, the profile (LOGLOOP_PROFILE), "
    "the loop settings file (config/loop.yaml or LOGLOOP_LOOP_CONFIG) or an environment variable (LOGLOOP_<SETTING>, "
    "a nested field as LOGLOOP_<SETTING>__<FIELD>). Secrets are masked. A LOGLOOP_* variable that is no setting is "
    "reported with the closest one. Exit status: 0, or 2 when the settings are invalid. --json prints "
    '{"file": ..., "profile": ..., "settings": {NAME: {"value", "from", "env", "secret"}}, "warnings": [...]}.'
)
UNSET = "-"


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="the effective settings and where each comes from", description=DESCRIPTION)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_config, light=True)


def _text(value) -> str:
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value) if value else "[]"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def cmd_config(args) -> int:
    from orchestration.config import effective, settings, unknown_variables
    from orchestration.loop_settings import LoopSettingsError

    warnings = unknown_variables()
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        current = settings()
    except LoopSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = effective(current)
    file = current.source_file()
    if args.json:
        print(json.dumps({
            "file": file, "profile": current.profile,
            "settings": {r["name"]: {"value": r["value"], "from": r["from"], "env": r["env"], "secret": r["secret"]}
                         for r in rows},
            "warnings": warnings,
        }, indent=2))
        return 0
    from orchestration.cli.common import print_grouped_table

    print(f"settings file: {file or 'none (defaults and environment only)'}")
    print(f"profile: {current.profile or 'none'}")
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["section"], []).append((r["name"], _text(r["value"]), r["from"]))
    print_grouped_table(("SETTING", "VALUE", "FROM"), list(groups.items()), nowrap=("FROM",), keep=("SETTING",))
    print("Each setting's variable is LOGLOOP_ and its name in capitals, a nested field after __ "
          "(thresholds.min_start_count: LOGLOOP_THRESHOLDS__MIN_START_COUNT).")
    return 0
