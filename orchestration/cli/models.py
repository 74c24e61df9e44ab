"""`logloop models`: the registry, which version is production, and how two versions differ.

    logloop models list [--batch B] [--json]           # every version, by batch; PROD marks production
    logloop models show BATCH [VERSION] [--json]       # production by default
    logloop models promote BATCH VERSION [--reason R]  # pin production to VERSION
    logloop models rollback BATCH [--reason R]         # back to the previous production version
    logloop models follow BATCH [--reason R]           # unpin: production follows the latest again
    logloop models history BATCH [--json]              # every change of production: who, when, why
    logloop models diff BATCH V1 V2 [--json]           # metrics, vocabulary, masking rules, templates

Production is what scoring, fine-tuning and the gate's champion use (Store.get_model). A batch
without a pin follows its latest version; a pinned one stays pinned when newer versions register
(unless LOGLOOP_PROMOTE_NEW_VERSIONS is true). Every change is recorded with its source
(`cli:<user>` here) and reason.
"""

from __future__ import annotations

import json
import sys

from orchestration.cli.common import batch_arg, CliError, human_number, human_time, one_line, open_store, print_grouped_table, print_table, run_user_command

DIFF_TOKENS_SHOWN = 20  # tokens listed per side in the text diff (--json lists them all)


def add_parser(sub) -> None:
    models = sub.add_parser(
        "models", help="registered models: list, show, promote, rollback, follow, history, diff",
        description="The model registry: each batch's versions, which one is production (what scoring, "
                    "fine-tuning and the gate's champion use), who changed it and why, and how two versions differ.",
    ).add_subparsers(dest="models_command", required=True)
    p = models.add_parser("list", help="list registered models with lineage; PROD marks production")
    p.add_argument("--batch", type=batch_arg, help="only this batch")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=cmd_list)

    p = models.add_parser("show", help="show one model (the batch's production model by default)")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("version", nargs="?", type=int)
    p.add_argument("--json", action="store_true", help="print the registry row as JSON (exact values)")
    p.set_defaults(func=cmd_show)

    p = models.add_parser("promote", help="pin the batch's production model to VERSION",
                          description="Make VERSION the batch's production model and pin it there: newer versions "
                          "then register without replacing it (unless LOGLOOP_PROMOTE_NEW_VERSIONS is true). "
                          "Scoring, fine-tuning and the gate's champion use it from the next run on.")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("version", type=int)
    p.add_argument("--reason", default="", help="why (recorded in the history)")
    p.set_defaults(func=cmd_promote)

    p = models.add_parser("rollback", help="pin production back to the previous production version",
                          description="Go back to the version that was production before the current one, and pin "
                          "it. Repeated rollbacks walk further back through the history.")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("--reason", default="", help="why (recorded in the history)")
    p.set_defaults(func=cmd_rollback)

    p = models.add_parser("follow", help="unpin: production follows the batch's latest version again")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("--reason", default="", help="why (recorded in the history)")
    p.set_defaults(func=cmd_follow)

    p = models.add_parser("history", help="every change of the batch's production model: who, when, why")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("--json", action="store_true", help="print a JSON list of objects (oldest first)")
    p.set_defaults(func=cmd_history)

    p = models.add_parser("diff", help="compare two versions: metrics, vocabulary, masking rules, templates",
                          description="Compare versions V1 and V2 of a batch: their gate metrics (top-k accuracy, "
                          "flagged share, template count, ...), the vocabulary tokens V2 added and removed, and "
                          "the masking rules. Templates are compared by each version's template_count metric "
                          "(the templates of its own validation lines, counted at the gate).")
    p.add_argument("batch", type=batch_arg)
    p.add_argument("v1", type=int, metavar="V1")
    p.add_argument("v2", type=int, metavar="V2")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object (exact values)")
    p.set_defaults(func=cmd_diff)


# -- list and show ------------------------------------------------------------------------------------


def _production_by_batch(store, batches) -> dict:
    """batch -> (production version, pinned), from one read of the production history."""
    from resources.store_records import production_state

    events: dict[str, list] = {}
    for e in store.production_events():
        events.setdefault(e.batch, []).append(e)
    out = {}
    for batch, models in batches.items():
        model, pinned = production_state(models, events.get(batch, []))
        out[batch] = (model.version if model else None, pinned)
    return out


def _prod_mark(version: int, production) -> str:
    prod_version, pinned = production
    if version != prod_version:
        return ""
    return "pinned" if pinned else "yes"


def cmd_list(args) -> int:
    store = open_store()
    models = store.list_models(args.batch)
    by_batch: dict[str, list] = {}
    for m in models:
        by_batch.setdefault(m.batch, []).append(m)
    production = _production_by_batch(store, by_batch) if models else {}
    if args.json:
        print(json.dumps([{**m.to_dict(), "production": m.version == production[m.batch][0],
                           "pinned": m.version == production[m.batch][0] and production[m.batch][1]}
                          for m in models], indent=2))
        return 0
    if not models:
        print("no models registered" + (f" for batch {args.batch!r}{_did_you_mean(store, args.batch)}"
                                        if args.batch else ""))
        return 0
    groups = []
    for batch, versions in by_batch.items():  # a batch's artifacts share its folder: named once, above
        folders = {m.artifact.rpartition("/")[0] for m in versions}
        folder = folders.pop() if len(folders) == 1 and "" not in folders else None
        heading = f"{batch}  (artifacts in {folder}/)" if folder else batch
        groups.append((heading, [(
            m.version, _prod_mark(m.version, production[batch]) or "-", m.mode,
            "-" if m.parent_version is None else m.parent_version, _metric(m.metrics.get("top_k_accuracy")),
            _metric(m.metrics.get("anomaly_share")), human_time(m.window_end_ms),
            m.artifact.rpartition("/")[2] if folder else m.artifact,
        ) for m in versions]))
    print_grouped_table(("VERSION", "PROD", "MODE", "PARENT", "TOP-K ACC", "FLAGGED", "DATA UNTIL", "ARTIFACT"), groups,
                   nowrap=("VERSION", "PROD", "MODE", "PARENT", "TOP-K ACC", "FLAGGED", "DATA UNTIL"))
    return 0


def _metric(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else human_number(value)


def cmd_show(args) -> int:
    store = open_store()
    production, pinned = store.production(args.batch)
    model = production if args.version is None else store.get_model(args.batch, args.version)
    if model is None:
        what = f"version {args.version} of batch {args.batch!r}" if args.version is not None else f"batch {args.batch!r}"
        hint = _did_you_mean(store, args.batch) if args.version is None or not store.list_models(args.batch) else ""
        print(f"error: no model registered for {what}{hint}", file=sys.stderr)
        return 1
    is_production = production is not None and model.version == production.version
    if args.json:
        print(json.dumps({**model.to_dict(), "production": is_production, "pinned": is_production and pinned},
                         indent=2))
        return 0
    if is_production:
        status = "production, pinned" if pinned else "production (follows the latest version)"
    else:
        status = f"not production (production is v{production.version}{', pinned' if pinned else ''})"
    rows = [("", ""),
            ("batch", model.batch),
            ("version", f"{model.version}  {status}"),
            ("mode", model.mode + ("" if model.parent_version is None else f", parent v{model.parent_version}")),
            ("run", model.run_id),
            ("registered", human_time(model.created_ms)),
            ("data", f"{human_time(model.window_start_ms)} to {human_time(model.window_end_ms)}"),
            ("artifact", model.artifact),
            ("uri", model.artifact_uri)]
    for key in _metric_order(model.metrics):
        value = model.metrics[key]
        rows.append((key, _metric(value) if _scalar(value) else one_line(json.dumps(value), 80)))
    print_table(rows, header=False)
    return 0


def _scalar(value) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _metric_order(metrics: dict) -> list[str]:
    first = [k for k in ("top_k_accuracy", "anomaly_share", "template_count") if k in metrics]
    return first + sorted(k for k in metrics if k not in first)


# -- production: promote, rollback, follow, history ---------------------------------------------------


def _did_you_mean(store, batch: str) -> str:
    """'; did you mean ...?' naming the known batch closest to one without models (or '')."""
    from orchestration.cli.common import did_you_mean

    return did_you_mean(batch, {m.batch for m in store.list_models()})


def _source() -> str:
    from orchestration.cli.feedback import _source as source

    return source()


def _known(store, batch: str) -> list:
    models = store.list_models(batch)
    if not models:
        raise CliError(f"no model registered for batch {batch!r}{_did_you_mean(store, batch)}"
                       " ('logloop models list' shows the batches)")
    return models


def _print_change(event, verb: str) -> None:
    before = "none" if event.previous_version is None else f"v{event.previous_version}"
    pin = "pinned" if event.pinned else "follows the latest version"
    print(f"batch {event.batch!r}: production {verb} v{event.version} (was {before}; {pin})")


def _print_follow(event) -> None:
    print(f"batch {event.batch!r}: production follows the latest version again, now v{event.version} "
          f"(was v{event.previous_version}, pinned)")


def _artifacts():
    from orchestration.resources import artifact_storage

    return artifact_storage()


def _refuse_retired(artifacts, batch: str, model) -> None:
    """A version whose weights retention deleted cannot be production: it could not score."""
    from orchestration.services.retention import retired

    if model is not None and retired(artifacts, model.artifact):
        raise CliError(f"version {model.version} of batch {batch!r} was retired by the retention policy (its weights "
                       "are gone) and cannot be production; promote a kept version ('logloop models list')")


def _after(store, artifacts, event) -> None:
    """The production record (for `store restore`) and the Dagster UI's observation; a failure there
    does not undo the change, it is said on stderr."""
    from orchestration.production import after_change

    for problem in after_change(store, artifacts, event):
        print(f"warning: {problem}", file=sys.stderr)


def cmd_promote(args) -> int:
    def run(args) -> int:
        store, artifacts = open_store(), _artifacts()
        _known(store, args.batch)
        _refuse_retired(artifacts, args.batch, store.get_model(args.batch, args.version))
        event = store.promote(args.batch, args.version, source=_source(), reason=args.reason)
        _print_change(event, "is now")
        _after(store, artifacts, event)
        return 0

    return run_user_command(run, args)


def cmd_rollback(args) -> int:
    def run(args) -> int:
        from resources.store import rollback_target

        store, artifacts = open_store(), _artifacts()
        models = _known(store, args.batch)
        current = store.get_model(args.batch)
        target = rollback_target(models, store.production_events(args.batch), current.version)
        _refuse_retired(artifacts, args.batch, next((m for m in models if m.version == target), None))
        event = store.rollback(args.batch, source=_source(), reason=args.reason)
        _print_change(event, "rolled back to")
        _after(store, artifacts, event)
        return 0

    return run_user_command(run, args)


def cmd_follow(args) -> int:
    def run(args) -> int:
        store, artifacts = open_store(), _artifacts()
        _known(store, args.batch)
        event = store.follow_latest(args.batch, source=_source(), reason=args.reason)
        _print_follow(event)
        _after(store, artifacts, event)
        return 0

    return run_user_command(run, args)


def cmd_history(args) -> int:
    def run(args) -> int:
        store = open_store()
        events = store.production_events(args.batch)
        if not events and not store.list_models(args.batch):
            raise CliError(f"no model registered for batch {args.batch!r}{_did_you_mean(store, args.batch)}")
        if args.json:
            print(json.dumps([e.to_dict() for e in events], indent=2, ensure_ascii=False))
            return 0
        production, pinned = store.production(args.batch)
        now = (f"production: v{production.version}, " + ("pinned" if pinned else "follows the latest version")
               if production else "production: none")
        if not events:
            print(f"no production changes recorded for batch {args.batch!r}; {now}")
            return 0
        rows = [("WHEN", "ACTION", "FROM", "TO", "PINNED", "SOURCE", "REASON")]
        for e in events:
            rows.append((human_time(e.created_ms), e.action, "-" if e.previous_version is None else e.previous_version,
                         e.version, "yes" if e.pinned else "no", e.source or "-", one_line(e.reason, 200) or "-"))
        print_table(rows, nowrap=("WHEN", "ACTION", "FROM", "TO", "PINNED"))
        print(now)
        return 0

    return run_user_command(run, args)


# -- diff ---------------------------------------------------------------------------------------------


def _read(batch: str, version: int):
    from orchestration.cli.common import load_registered_artifact

    return load_registered_artifact(batch, version)


def model_diff(batch: str, v1: int, v2: int) -> dict:
    """The comparison `models diff` prints: exact values, JSON-ready."""
    if v1 == v2:
        raise CliError(f"V1 and V2 are both version {v1}: name two different versions of batch {batch!r}")
    store = open_store()
    models = {m.version: m for m in _known(store, batch)}
    for v in (v1, v2):
        if v not in models:
            raise CliError(f"batch {batch!r} has no version {v} (registered: "
                           f"{', '.join(map(str, sorted(models)[-10:]))})")
    (a, ra), (b, rb) = _read(batch, v1), _read(batch, v2)
    metrics = {}
    for key in _metric_order({**ra.metrics, **rb.metrics}):
        x, y = ra.metrics.get(key), rb.metrics.get(key)
        if not (_number(x) or _number(y)):
            continue
        metrics[key] = {"v1": x, "v2": y, "change": y - x if _number(x) and _number(y) else None}
    losses = [_last_loss(m) for m in (a.metrics, b.metrics)]  # where an artifact kept its loss curve
    if "final_loss" not in metrics and any(v is not None for v in losses):
        metrics["final_loss"] = {"v1": losses[0], "v2": losses[1],
                                 "change": losses[1] - losses[0] if None not in losses else None}
    from ops.train.vocab import SPECIALS

    t1 = [t for t in a.vocab.itos if t not in SPECIALS]
    t2 = [t for t in b.vocab.itos if t not in SPECIALS]
    s1, s2 = set(t1), set(t2)
    rules1 = [r.get("name") if isinstance(r, dict) else str(r) for r in (a.masking_rules or [])]
    rules2 = [r.get("name") if isinstance(r, dict) else str(r) for r in (b.masking_rules or [])]
    return {
        "batch": batch,
        "v1": {"version": v1, "mode": ra.mode, "parent_version": ra.parent_version, "created_ms": ra.created_ms,
               "window_end_ms": ra.window_end_ms, "artifact": ra.artifact},
        "v2": {"version": v2, "mode": rb.mode, "parent_version": rb.parent_version, "created_ms": rb.created_ms,
               "window_end_ms": rb.window_end_ms, "artifact": rb.artifact},
        "metrics": metrics,
        "vocabulary": {"v1_size": len(t1), "v2_size": len(t2), "added": [t for t in t2 if t not in s1],
                       "removed": [t for t in t1 if t not in s2]},
        "masking_rules": {"same": a.masking_rules == b.masking_rules,
                          "added": [r for r in rules2 if r not in rules1], "removed": [r for r in rules1 if r not in rules2]},
        "templates": {"v1": ra.metrics.get("template_count"), "v2": rb.metrics.get("template_count"),
                      "note": "template_count: distinct templates of each version's own validation lines, at its gate"},
    }


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _last_loss(metrics: dict):
    curve = metrics.get("loss_curve")
    return curve[-1] if isinstance(curve, list) and curve and _number(curve[-1]) else None


def cmd_diff(args) -> int:
    def run(args) -> int:
        diff = model_diff(args.batch, args.v1, args.v2)
        if args.json:
            print(json.dumps(diff, indent=2, ensure_ascii=False))
            return 0
        one, two = diff["v1"], diff["v2"]
        print(f"batch {args.batch!r}: v{one['version']} ({one['mode']}, data until {human_time(one['window_end_ms'])}) "
              f"-> v{two['version']} ({two['mode']}, data until {human_time(two['window_end_ms'])})")
        rows = [("METRIC", f"V{one['version']}", f"V{two['version']}", "CHANGE")]
        for key, m in diff["metrics"].items():
            change = m["change"]
            rows.append((key, _metric(m["v1"]), _metric(m["v2"]),
                         "-" if change is None else ("+" if change > 0 else "") + human_number(change)))
        if len(rows) > 1:
            print_table(rows, nowrap=("V" + str(one["version"]), "V" + str(two["version"]), "CHANGE"))
        vocab = diff["vocabulary"]
        print(f"vocabulary: {vocab['v1_size']} -> {vocab['v2_size']} tokens, {len(vocab['added'])} added, "
              f"{len(vocab['removed'])} removed")
        for word, tokens in (("added", vocab["added"]), ("removed", vocab["removed"])):
            if tokens:
                more = f" (and {len(tokens) - DIFF_TOKENS_SHOWN} more; --json lists all)" \
                    if len(tokens) > DIFF_TOKENS_SHOWN else ""
                print(f"  {word}: {' '.join(tokens[:DIFF_TOKENS_SHOWN])}{more}")
        rules = diff["masking_rules"]
        if rules["same"]:
            print("masking rules: the same")
        else:
            print(f"masking rules: changed; added {rules['added'] or 'none'}, removed {rules['removed'] or 'none'}")
        templates = diff["templates"]
        print(f"templates (of each version's validation lines, at its gate): {human_number(templates['v1'])} -> "
              f"{human_number(templates['v2'])}")
        return 0

    return run_user_command(run, args)
