"""`logloop train ...`: ModelTraining specs and Opni requests, mirroring `odahuflowctl train`.

    logloop train validate -f spec.yaml
    logloop train create -f spec.yaml [--wait]       # through the Dagster webserver's GraphQL API
    logloop train get [ID] [--json]
    logloop train local -f spec.yaml                 # in this process, like `odahuflowctl local train run`
    logloop train request '<opni json>' [--batch B] [--local] [--wait]

The webserver's URL comes from LOGLOOP_DAGSTER_URL (default http://localhost:3000); errors that need it name it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from urllib.parse import urlparse

from typing import TYPE_CHECKING

from orchestration.cli.common import batch_arg, open_store
from orchestration.contract import PARTITION_TAG

if TYPE_CHECKING:
    from orchestration.services.training_spec import TrainingSpec

# orchestration.services.training_spec (pydantic, yaml) is imported by the commands that read a spec, so
# that the rest of the CLI, `--help` included, starts without it.

JOB = "train_model"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
DEFAULT_DAGSTER_URL = "http://localhost:3000"  # LOGLOOP_DAGSTER_URL unset


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="training requests (ModelTraining specs, Opni requests)")
    verbs = train.add_subparsers(dest="train_command", required=True)
    p = verbs.add_parser("validate", help="validate a ModelTraining spec")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=cmd_validate)
    p = verbs.add_parser("create", help="launch a training on the Dagster webserver")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--wait", action="store_true", help="follow the run to its end")
    p.set_defaults(func=cmd_create)
    p = verbs.add_parser("get", help="list trainings with their state and artifacts")
    p.add_argument("id", nargs="?")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=cmd_get)
    p = verbs.add_parser("local", help="run a training in this process")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=cmd_local)
    p = verbs.add_parser("request", help="launch a training from Opni's request payload")
    p.add_argument("payload", help='{"model_to_train": "nulog", "time_intervals": [{"start_ts": ns, "end_ts": ns}]}')
    p.add_argument("--batch", type=batch_arg, default="default")
    p.add_argument("--id", help="training id (default: opni-<time>)")
    p.add_argument("--local", action="store_true", help="run in this process instead of on the webserver")
    p.add_argument("--wait", action="store_true")
    p.set_defaults(func=cmd_request)


def task_mode(spec: TrainingSpec):
    return None if spec.mode == "auto" else spec.mode  # the run resolves auto; the task learns it then


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_validate(args) -> int:
    from orchestration.services.training_spec import SpecError, load_spec_file

    try:
        spec = load_spec_file(args.file)
    except SpecError as exc:
        return _fail(str(exc))
    print(f"spec {spec.id} is valid: batch {spec.batch!r}, mode {spec.mode}, "
          f"hyperParameters {json.dumps(spec.hyper_parameters, sort_keys=True)}")
    return 0


def dagster_url() -> str:
    """The Dagster webserver's URL (LOGLOOP_DAGSTER_URL)."""
    from orchestration.config import settings

    return settings().dagster_url or DEFAULT_DAGSTER_URL


def webserver(url: str) -> str:
    """The webserver as errors name it: its URL and the variable that sets it."""
    return f"the Dagster webserver at {url} (LOGLOOP_DAGSTER_URL)"


def graphql_client():
    from dagster_graphql import DagsterGraphQLClient

    url = urlparse(dagster_url())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"LOGLOOP_DAGSTER_URL {url.geturl()!r} must be an http(s) URL")
    return DagsterGraphQLClient(url.hostname, port_number=url.port, use_https=url.scheme == "https",
                                path_prefix=url.path.rstrip("/"), timeout=60)


ADD_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""


def reachable(url: str) -> str | None:
    """None when the webserver answers; otherwise why not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/server_info", timeout=10):
            return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


RUN_EVENTS = """
query($runId: ID!, $cursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message } }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success description } }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}"""
SHOWN_LEVELS = ("INFO", "WARNING", "ERROR", "CRITICAL")


def run_event_lines(client, run_id: str, cursor: str | None) -> tuple[list[str], str | None]:
    """The run's own messages since `cursor`, as lines to print, and the new cursor: what its steps
    logged (context.log at INFO and above: the train step's epoch, loss, samples/s and ETA), step
    failures with their errors, and check results. Dagster's own DEBUG events are left out."""
    lines = []
    while True:
        got = client._execute(RUN_EVENTS, {"runId": run_id, "cursor": cursor, "limit": 1000})["logsForRun"]
        if got["__typename"] != "EventConnection":
            raise RuntimeError(got.get("message") or got["__typename"])
        for e in got["events"]:
            step = f"[{e['stepKey']}] " if e.get("stepKey") else ""
            kind = e["__typename"]
            if kind == "LogMessageEvent" and e.get("level") in SHOWN_LEVELS:
                lines.append(f"  {step}{e['level'] + ': ' if e['level'] != 'INFO' else ''}{e['message']}")
            elif kind in ("ExecutionStepFailureEvent", "RunFailureEvent"):
                error = (e.get("error") or {}).get("message", "").strip()
                lines.append(f"  {step}{e['message']}" + (f"\n{error}" if error else ""))
            elif kind == "AssetCheckEvaluationEvent":
                ev = e["evaluation"]
                lines.append(f"  {step}check {ev['checkName']}: {'passed' if ev['success'] else 'FAILED'}"
                             + (f": {ev['description']}" if ev.get("description") else ""))
        cursor = got["cursor"] or cursor
        if not got.get("hasMore") or not got["events"]:
            return lines, cursor


def launch_remote(spec: TrainingSpec, wait: bool) -> int:
    from dagster_graphql import DagsterGraphQLClientError

    from orchestration.services.training_spec import run_config, run_tags

    url = dagster_url()
    why = reachable(url)
    if why is not None:
        return _fail(f"training {spec.id}: cannot reach {webserver(url)}: {why}; start it with `make dev`, or set "
                     "LOGLOOP_DAGSTER_URL to where it runs")
    try:
        client = graphql_client()
        [info] = client._get_repo_locations_and_names_with_pipeline(JOB)[:1] or [None]
        if info is None:
            return _fail(f"{webserver(url)} has no job {JOB!r}; is the logloop code location loaded there?")
        selector = {"repositoryLocationName": info.repository_location_name, "repositoryName": info.repository_name}
        added = client._execute(ADD_PARTITION, {"selector": selector, "name": "batches", "key": spec.batch})
        kind = added["addDynamicPartition"]["__typename"]
        if kind not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            return _fail(f"could not add batch {spec.batch!r}: {added['addDynamicPartition'].get('message', kind)}")
        from orchestration.tasks import schedule_task

        schedule_task(open_store(), spec.id, spec.batch, task_mode(spec), "launched by logloop train")
        run_id = client.submit_job_execution(
            JOB, repository_location_name=info.repository_location_name, repository_name=info.repository_name,
            run_config=run_config(spec), tags=run_tags(spec),
        )
    except ValueError as exc:
        return _fail(f"training {spec.id}: {exc}")
    except DagsterGraphQLClientError as exc:
        return _fail(f"training {spec.id}: {webserver(url)}: {exc}")
    except Exception as exc:  # connection refused and friends come from requests/gql
        return _fail(f"training {spec.id}: cannot reach {webserver(url)}: {type(exc).__name__}: {exc}")
    print(f"training {spec.id}: run {run_id} launched")
    if not wait:
        return 0
    # Follow the run: its status changes, and its own log lines (epoch, loss, samples/s, ETA) read
    # from its event log over GraphQL with a cursor, as they come.
    last, cursor, events_ok = None, None, True
    while True:
        try:
            status = client.get_run_status(run_id).value
        except Exception as exc:  # the webserver went away while following: the run itself may go on
            return _fail(f"training {spec.id}: lost {webserver(url)} while following run {run_id} "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); 'logloop train get {spec.id}' "
                         "shows its state")
        if status != last and status not in FINISHED:  # a final status is printed after the run's last lines
            print(f"training {spec.id}: {status}", flush=True)
        last = status
        if events_ok:
            try:
                lines, cursor = run_event_lines(client, run_id, cursor)
            except Exception as exc:  # an older webserver, a dropped connection: status alone still works
                print(f"training {spec.id}: the run's log lines cannot be read ({type(exc).__name__}: {exc}); "
                      "following its status only", flush=True)
                events_ok = False
            else:
                for line in lines:
                    print(line, flush=True)
        if status in FINISHED:
            print(f"training {spec.id}: {status}", flush=True)
            return 0 if status == "SUCCESS" else 1
        time.sleep(2)


def cmd_create(args) -> int:
    from orchestration.services.training_spec import SpecError, load_spec_file

    try:
        spec = load_spec_file(args.file)
    except SpecError as exc:
        return _fail(str(exc))
    return launch_remote(spec, args.wait)


def run_local(spec: TrainingSpec) -> int:
    from dagster import DagsterInstance, materialize

    from orchestration.assets.register import registered_model
    from orchestration.assets.sample import training_sample
    from orchestration.assets.train import nulog_model
    from orchestration.checks.quality import nulog_model_quality
    from orchestration.resources import build_resources
    from orchestration.tasks import fail_task, schedule_task
    from orchestration.services.training_spec import run_config, run_tags

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    if not instance.has_dynamic_partition("batches", spec.batch):
        instance.add_dynamic_partitions("batches", [spec.batch])
    store = open_store()
    schedule_task(store, spec.id, spec.batch, task_mode(spec), "logloop train local")
    result = materialize(
        [training_sample, nulog_model, nulog_model_quality, registered_model], partition_key=spec.batch,
        instance=instance, resources=build_resources(), run_config=run_config(spec, executor="in_process"),
        tags={k: v for k, v in run_tags(spec).items() if k != PARTITION_TAG}, raise_on_error=False,
    )
    if not result.success:
        fail_task(store, spec.id, spec.batch, result.run_id, "local run failed")
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        reason = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else "see the run's logs"
        return _fail(f"training {spec.id} failed: {reason}")
    model = next((m for m in store.list_models(spec.batch) if m.run_id == result.run_id), None)
    print(f"training {spec.id}: succeeded; batch {spec.batch!r} version {model.version if model else '?'} "
          f"at {model.artifact_uri if model else '?'}")
    return 0


def cmd_local(args) -> int:
    from orchestration.services.training_spec import SpecError, load_spec_file

    try:
        spec = load_spec_file(args.file)
    except SpecError as exc:
        return _fail(str(exc))
    return run_local(spec)


def cmd_request(args) -> int:
    from orchestration.services.training_spec import SpecError, from_opni_request

    try:
        payload = json.loads(args.payload)
    except RecursionError:
        return _fail("the request is nested too deeply")
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        reason = " ".join(str(exc).split("; use sys.set_int_max_str_digits")[0].split())
        return _fail(f"the request is not valid JSON: {reason}")
    try:
        spec = from_opni_request(payload, batch=args.batch, spec_id=args.id)
    except SpecError as exc:
        return _fail(str(exc))
    return run_local(spec) if args.local else launch_remote(spec, args.wait)


def cmd_get(args) -> int:
    store = open_store()
    tasks = store.list_tasks()
    if args.id:
        tasks = [t for t in tasks if t.task_id == args.id]
        if not tasks:
            return _fail(f"no training {args.id!r}")
    artifacts = {m.run_id: m for m in store.list_models()}
    rows = []
    for t in tasks:
        m = artifacts.get(t.run_id)
        rows.append({**asdict(t), "artifacts": [{"runId": t.run_id, "artifactName": m.artifact.rsplit("/", 1)[-1],
                                                 "version": m.version}] if m else []})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no trainings")
        return 0
    from orchestration.cli.common import batch_arg, print_table

    cells = [("ID", "BATCH", "STATE", "MODE", "RUN", "ARTIFACT")]
    for r in rows:
        art = r["artifacts"][0]["artifactName"] if r["artifacts"] else "-"
        run = "= ID" if r["run_id"] == r["task_id"] else r["run_id"] or "-"  # a training launched as a plain run
        cells.append((r["task_id"], r["batch"], r["state"], r["mode"], run, art))
    print_table(cells, nowrap=("STATE", "MODE"), keep=("ID", "BATCH"))
    return 0
