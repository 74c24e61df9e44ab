"""The Dagster UI and webserver for real: `dagster dev` on loopback, headless Chromium, GraphQL.

- a browser opens the asset graph, launches one batch's training from the launchpad with a
  ModelTraining spec's run config, waits for success, and finds the loss curve on the run page;
  on the model's page the loss trend (an inline SVG) and the loss plot (a PNG behind "[Show
  Markdown]") load as images, and so does the gate's score histogram on the check's page
  (screenshots: model-page.png and check-page.png in the server's home, printed with -s);
- the data is demo-like (the last 4 closed hours, summarised as `make demo` does) and the time
  windows start from the data (LOGLOOP_PARTITION_START, which tests/conftest.py pins, is unset for
  the server): partition_summaries' partition bar is (almost) all filled (partitions-page.png);
- `logloop models promote` and `rollback` show in the UI: registered_model's batch partition gets an
  observation with the new production version, seen on its Events tab (production-page.png);
- `logloop train create --wait` launches a training through the webserver's GraphQL API and
  streams the run's own progress lines (epoch, loss, samples/s, ETA) while it waits.

Chromium and its driver come from Debian (installed here when missing); selenium is a test extra.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from scripts import demo_logs
from orchestration.services.training_spec import parse_spec, run_config
from tests.servers.processes import apt_install, stop_process_group


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BATCH = "demo/shop/checkout"
HOURS = 4  # of demo logs, the last closed hours (as `make demo` makes them)
START = demo_logs.default_start_ms(HOURS)  # the trainings below learn from the first of them


class ChromiumUnavailable(RuntimeError):
    """Debian's chromium and chromium-driver could not be installed."""


def ensure_chromium() -> tuple[str, str]:
    def find():
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
        return (browser, driver) if browser and driver else None

    try:
        # with fonts for the text, as the screenshots want; not the rest of what chromium recommends (a
        # printer setup, Samba, a notification daemon: some 100 packages for a headless browser)
        return apt_install("chromium chromium-driver fonts-liberation", find, ChromiumUnavailable, "the browser test")
    except ChromiumUnavailable as exc:
        pytest.fail(str(exc))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui") / "home"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")
    demo_logs.generate(home / "logs", start_ms=START, hours=HOURS, lines_per_hour=6000, seed=4)
    # The daemon's new_samples_sensor trains nothing by itself here (the tests launch the trainings);
    # the rest of the loop settings are the shipped ones.
    settings = yaml.safe_load((ROOT / "config" / "loop.yaml").read_text())
    settings["thresholds"] = {"min_start_count": 10**9, "min_update_count": 10**9}
    (home / "loop.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore",
           "LOGLOOP_LOOP_CONFIG": str(home / "loop.yaml")}
    env.pop("LOGLOOP_PARTITION_START", None)  # the time windows start from the data, as on a fresh install
    fmt = "%Y-%m-%d-%H:%M"
    first = dt.datetime.fromtimestamp(START / 1000, dt.timezone.utc)
    last = first + dt.timedelta(hours=HOURS - 1)
    subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions",
                    "--select", "partition_summaries", "--partition-range", f"{first:{fmt}}...{last:{fmt}}"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    port = free_port()
    log_path = home / "dev.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(BIN / "dagster"), "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1",
                             "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"dagster dev did not come up: {log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(2)
    try:
        yield {"url": url, "env": {**env, "LOGLOOP_DAGSTER_URL": url}, "home": home, "log": log_path}
    finally:
        stopped = stop_process_group(proc, log)
    assert stopped, f"dagster dev ignored SIGTERM for 30 s:\n{log_path.read_text(errors='replace')[-3000:]}"


def spec_doc(spec_id: str, epochs: int = 3, batch: str = BATCH) -> dict:
    return {"kind": "ModelTraining", "id": spec_id, "spec": {
        "data": {"batch": batch, "time_intervals": [{"start": START, "end": START + 3_600_000}]},
        "mode": "auto", "hyperParameters": {"t": "1000", "epochs": str(epochs)}}}


def models(home: Path, batch: str = BATCH) -> list:
    from resources.store_resources import SQLiteStore

    return SQLiteStore(path=str(home / "store.sqlite")).list_models(batch)


# -- the browser ------------------------------------------------------------------------------------------


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = ensure_chromium()
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(options=options, service=Service(driver_path))


def text(d) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return d.find_element(By.TAG_NAME, "body").text
    except StaleElementReferenceException:  # React re-rendered under us; ask again
        return ""


def button(d, label: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == label and b.is_enabled()), None)
    except StaleElementReferenceException:
        return None


def type_into(driver, css: str, *keys, timeout: float = 60):
    """Types `keys` into the field matching `css` once it can be clicked. A page that is still
    loading may render the field again while this finds or types into it: it is then found again,
    cleared and typed into afresh."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    def typed(d):
        field = EC.element_to_be_clickable((By.CSS_SELECTOR, css))(d)
        if not field:
            return False
        field.clear()
        for key in keys:
            field.send_keys(key)
        return True

    WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(typed)


def dismiss_modal(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    skip = button(driver, "Skip")
    if skip is not None:
        skip.click()
        WebDriverWait(driver, 10).until(lambda d: button(d, "Skip") is None)


def click(driver, element):
    from selenium.common.exceptions import ElementClickInterceptedException

    for _ in range(10):
        try:
            return element.click()
        except ElementClickInterceptedException:  # the newsletter modal pops up late
            dismiss_modal(driver)
            time.sleep(1)
    element.click()


def loaded_image(d, alt: str):
    """The <img> with this alt text once its data loaded and decoded (naturalWidth > 0)."""
    return d.execute_script(
        "const i = [...document.images].find(i => i.alt === arguments[0]);"
        "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight, i.src.split(',')[0]] : null",
        alt)


def test_train_create_waits_for_the_run_through_graphql(server, tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_doc("ui-create")))
    out = subprocess.run([str(BIN / "logloop"), "train", "create", "-f", str(tmp_path / "spec.yaml"), "--wait"],
                         capture_output=True, text=True, env=server["env"], timeout=420)
    assert out.returncode == 0, (out.stdout, out.stderr, server["log"].read_text(errors="replace")[-3000:])
    print(out.stdout)  # (seen with -s)
    assert "run " in out.stdout and "training ui-create: SUCCESS" in out.stdout
    # the run's own progress lines, read from its event log over GraphQL while waiting
    progress = re.findall(r"^  \[nulog_model\] epoch \d+/3, step \d+/\d+ \(\d+%\): loss \d+\.\d{4}.*"
                          r"samples/s.*(?:ETA \d+\w|done)$", out.stdout, flags=re.M)
    assert progress and progress[-1].endswith("done"), out.stdout
    assert out.stdout.index("STARTED") < out.stdout.index(progress[0]) < out.stdout.index("SUCCESS")
    assert "STEP_START" not in out.stdout and "DEBUG" not in out.stdout  # Dagster's own event stream stays out
    got = json.loads(subprocess.run([str(BIN / "logloop"), "train", "get", "ui-create", "--json"], capture_output=True,
                                    text=True, env=server["env"], timeout=60).stdout)
    assert got[0]["state"] == "succeeded" and got[0]["artifacts"]


def test_browser_launches_a_batch_from_the_launchpad_and_sees_the_loss_curve(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver = open_browser()
    wait = WebDriverWait(driver, 120)
    batch = "demo/shop/payments"  # not the create test's batch: a scratch run, whatever ran before
    before = {m.version for m in models(server["home"], batch)}

    try:
        # the asset graph
        driver.get(server["url"] + "/asset-groups")
        wait.until(lambda d: "model" in text(d))
        try:  # Dagster's "join the community" modal shows once per browser profile
            WebDriverWait(driver, 20).until(lambda d: button(d, "Skip"))
        except Exception:
            pass
        dismiss_modal(driver)
        driver.get(server["url"] + "/assets/nulog_model")
        wait.until(lambda d: "nulog_model" in text(d))

        # the launchpad of the train_model job, with a spec's run config and the batch's partition
        driver.get(server["url"] + "/locations/orchestration.definitions/jobs/train_model/playground")
        wait.until(lambda d: d.execute_script("return document.querySelectorAll('.CodeMirror').length") > 0)
        dismiss_modal(driver)
        config = yaml.safe_dump(run_config(parse_spec(spec_doc("ui-launchpad", batch=batch)), executor="multiprocess"))
        driver.execute_script("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])", config)
        partition = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "input[placeholder='Partition']")))
        click(driver, partition)
        partition.send_keys(batch)
        # the partition is chosen from the suggestions once they have loaded (on a busy machine they
        # come later than a fixed pause), then Enter takes the highlighted one
        wait.until(lambda d: any(el.text.strip() == batch for el in d.find_elements(By.CSS_SELECTOR, "[role=menuitem], li")))
        partition.send_keys(Keys.ENTER)
        click(driver, wait.until(lambda d: button(d, "Launch Run")))
        try:
            wait.until(lambda d: "/runs/" in d.current_url)
        except TimeoutException:
            pytest.fail(f"Launch Run did not open a run page; the launchpad shows: {text(driver)[-1500:]}")

        # the run succeeds, and its page shows the loss curve recorded as metadata
        WebDriverWait(driver, 420, poll_frequency=3).until(
            lambda d: {m.version for m in models(server["home"], batch)} - before or "Failure" in text(d))
        new = [m for m in models(server["home"], batch) if m.version not in before]
        assert new, "the run did not register a model: " + text(driver)[-2000:]
        driver.refresh()
        # the event log is virtualised: narrow it to the train step's events first
        type_into(driver, "input[placeholder^='Filter']", "step:nulog_model", Keys.ENTER)
        # (tall metadata tables are clipped on screen, so look at the DOM's text, not the visible text)
        WebDriverWait(driver, 60).until(lambda d: "loss_curve" in d.execute_script("return document.body.textContent"))

        # The model's page: the latest materialization's metadata. Short markdown (the loss trend,
        # an SVG) shows inline; the PNG plot is longer than the UI's 1,000-character inline limit,
        # so it opens from "[Show Markdown]" in its row.
        driver.get(server["url"] + "/assets/nulog_model?partition=" + urllib.parse.quote(batch, safe=""))
        dismiss_modal(driver)
        assert WebDriverWait(driver, 60).until(lambda d: loaded_image(d, "loss trend"))[2] == "data:image/svg+xml;base64"
        row = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.XPATH, "//tr[.//*[text()='loss_plot']]"))
        click(driver, row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]"))
        width, height, src = WebDriverWait(driver, 30).until(lambda d: loaded_image(d, "loss curve"))
        assert [width, height, src] == [480, 240, "data:image/png;base64"]
        time.sleep(1)  # the dialog fades in; the screenshot is for people
        shot = server["home"] / "model-page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the model's page with its loss plot: {shot}")

        # The gate's page: the validation score histogram in the check's metadata.
        driver.get(server["url"] + "/assets/nulog_model?view=checks&checkDetail=nulog_model_quality")
        dismiss_modal(driver)
        row = WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.XPATH, "//tr[.//*[text()='score_histogram']]"))
        click(driver, row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]"))
        assert WebDriverWait(driver, 30).until(lambda d: loaded_image(d, "validation score histogram"))[:2] == [480, 240]
        time.sleep(1)
        shot = server["home"] / "check-page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the check's page with its score histogram: {shot}")
    except Exception:
        driver.save_screenshot(str(server["home"] / "failure.png"))
        raise
    finally:
        driver.quit()


def test_browser_sees_the_partition_bar_and_production_changes(server):
    """The windows of the demo-like data fill partition_summaries' partition bar; a promote and a
    rollback from the command line show on registered_model's page for the batch."""
    from selenium.webdriver.support.ui import WebDriverWait

    from resources.store_resources import SQLiteStore

    store = SQLiteStore(path=str(server["home"] / "store.sqlite"))
    if not store.list_models(BATCH):  # the create test trained v1; alone, this test registers rows itself
        store.register_model(_row(1, artifact="models/ui/nulog-1.zip"))
        store.record_new_version(BATCH, 1, source="test")
    # a second version to roll back from: v1's weights registered again as v2 (training twice costs minutes;
    # which version scores is what this test is about, not what it learned)
    v1 = store.get_model(BATCH, 1)
    latest = store.latest_model(BATCH).version
    if latest == 1:
        store.register_model(_row(2, artifact=v1.artifact, metrics=v1.metrics))
        store.record_new_version(BATCH, 2, source="test")
        latest = 2
    assert store.get_model(BATCH).version == latest  # following the latest version

    driver = open_browser()
    try:
        # the partition bar: every window of the data is summarised, and the windows begin with the data
        driver.get(server["url"] + "/assets/partition_summaries?view=partitions")
        counts = WebDriverWait(driver, 60).until(lambda d: _partition_counts(text(d)))
        try:  # Dagster's "join the community" modal shows once per browser profile, a little late
            WebDriverWait(driver, 20).until(lambda d: button(d, "Skip"))
        except Exception:
            pass
        dismiss_modal(driver)
        filled = counts["Materialized"] / sum(counts.values())
        assert counts["Materialized"] >= HOURS and counts["Failed"] == 0 and filled >= 0.75, counts
        time.sleep(1)  # the screenshot is for people: the bar is green where windows are summarised
        shot = server["home"] / "partitions-page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of partition_summaries' partitions: {shot} ({counts})")

        def production_on_page(version: int, was: int, change: str):
            """registered_model's Events for the batch: the newest event, shown selected, is the change,
            with its metadata. (The Overview's metadata table shows the latest materialization's.)"""
            page = server["url"] + "/assets/registered_model?view=events&partition=" + urllib.parse.quote(BATCH, safe="")
            driver.get(page)
            said = f"production is v{version} (was v{was}), pinned: {change} by cli:"
            WebDriverWait(driver, 60).until(lambda d: said in text(d))
            dismiss_modal(driver)
            body = text(driver)
            assert f"Partition {BATCH} observed" in body, body[-2000:]
            assert f"\nproduction_version\n{version}\n" in body and f"\nproduction_change\n{change}\n" in body, body[-2000:]
            assert f"\nproduction_previous_version\n{was}\n" in body and "\nproduction_pinned\ntrue\n" in body, body[-2000:]

        older = latest - 1
        out = logloop(server, "models", "promote", BATCH, str(older), "--reason", "the newer one flags every deploy")
        assert out.stdout == f"batch {BATCH!r}: production is now v{older} (was v{latest}; pinned)\n"
        production_on_page(older, latest, "promote")
        dismiss_modal(driver)
        time.sleep(1)
        shot = server["home"] / "production-page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of registered_model after the promote: {shot}")

        out = logloop(server, "models", "rollback", BATCH, "--reason", "back to what it was")
        assert out.stdout == f"batch {BATCH!r}: production rolled back to v{latest} (was v{older}; pinned)\n"
        production_on_page(latest, older, "rollback")
        assert store.get_model(BATCH).version == latest and store.production(BATCH)[1] is True
    except Exception:
        driver.save_screenshot(str(server["home"] / "failure.png"))
        raise
    finally:
        driver.quit()


def logloop(server, *args) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "logloop"), *args], capture_output=True, text=True, env=server["env"], timeout=120)
    assert out.returncode == 0 and "warning" not in out.stderr, (out.stdout, out.stderr)
    return out


def _row(version: int, *, artifact: str, metrics: dict | None = None):
    from resources.store import ModelRecord

    return ModelRecord(batch=BATCH, version=version, run_id=f"ui-row-{version}", artifact=artifact,
                       artifact_uri=artifact, metrics=metrics or {"top_k_accuracy": 0.9, "anomaly_share": 0.01},
                       window_start_ms=START, window_end_ms=START + 3_600_000)


def _partition_counts(body: str) -> dict | None:
    """{"Failed": n, "Materialized": n, "Materializing": n, "Missing": n} from the Partitions tab's filters."""
    found = dict((k, int(v)) for k, v in re.findall(r"\b(Failed|Materialized|Materializing|Missing) \((\d+)\)", body))
    return found if len(found) == 4 else None
