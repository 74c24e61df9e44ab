"""Plots and tidy metadata: ops/plots.py, the train step's progress reports, and what a
materialized chain shows in the UI (a loss plot and a score histogram as data-URI PNGs,
timestamps as timestamps, no null values, rounded floats)."""

from __future__ import annotations

import base64
import io
import math
import re

import pytest
from dagster import AssetKey, materialize
from dagster._core.definitions.metadata.metadata_value import (
    FloatMetadataValue,
    MarkdownMetadataValue,
    NullMetadataValue,
    TimestampMetadataValue,
)
from PIL import Image

from ops.plots import (
    MAX_PNG_BYTES,
    histogram,
    loss_curve_png,
    markdown_image,
    round_sig,
    score_histogram_png,
    sparkline,
    tidy_metadata,
)
from tests.orchestration import test_pipeline
from tests.orchestration.test_pipeline import BATCH, ingest, train_config

env = test_pipeline.env  # the fixture: a fresh Dagster instance, demo logs, local store and artifacts

NAN, INF = float("nan"), float("inf")


def decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes the whole image, not just the header
    return image


def png_of(markdown: str) -> bytes:
    m = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert m, markdown[:100]
    return base64.b64decode(m.group(1), validate=True)


@pytest.mark.parametrize("losses, steps", [
    ([3.3, 2.1, 1.7], [(0.5, 3.6), (1.0, 3.1), (1.5, 2.4), (2.0, 2.0), (3.0, 1.6)]),
    ([3.3], []),                                   # one epoch
    ([], []),                                      # nothing trained (all epochs resumed earlier)
    ([NAN, INF], [(0.5, NAN)]),                    # nothing finite
    ([5.0, NAN, 0.01], [(0.5, -INF), (1.0, 4.0)]),  # some non-finite, and a fall by orders of magnitude
    ([float(i) for i in range(1000, 0, -1)], [(i / 100, 1000 - i) for i in range(100_000)]),  # long runs
])
def test_loss_curve_is_a_small_png(losses, steps):
    png = loss_curve_png(losses, steps)
    image = decode(png)
    assert image.size == (480, 240)
    assert len(png) <= MAX_PNG_BYTES


def test_score_histogram_is_a_small_png_and_counts_by_weight():
    edges, counts = histogram([1.0, 1.0, 0.95, 0.5, 0.0, NAN, 0.7, 0.6999], weights=[10, 5, 1, 2, 3, 100, 4, 1])
    assert len(edges) == 21 and edges[0] == 0.0 and edges[-1] == 1.0 and edges[14] == 0.7
    assert sum(counts) == 10 + 5 + 1 + 2 + 3 + 4 + 1  # NaN left out
    assert counts[-1] == 16 and counts[0] == 3 and counts[10] == 2
    assert counts[14] == 4 and counts[13] == 1  # a score on the threshold is not below it
    for args in ((edges, counts, 0.7), (edges, counts, None), ([], [], 0.7), (edges, [0.0] * 20, 0.7),
                 (edges, [NAN] * 20, NAN), (*histogram([]), 0.7)):
        png = score_histogram_png(*args)
        assert decode(png).size == (480, 240) and len(png) <= MAX_PNG_BYTES
    assert decode(score_histogram_png(edges, counts, 0.7, width=240, height=120)).size == (240, 120)


def test_markdown_image_is_a_data_uri():
    png = loss_curve_png([2.0, 1.0])
    assert png_of(markdown_image(png, "loss curve")) == png


@pytest.mark.parametrize("values", [[3.9, 2.8, 2.3], [1.0], [5.0, 5.0], [float(i % 7) for i in range(10_000)],
                                    [NAN, 2.0, INF, 1.0, -INF]])
def test_sparkline_is_short_enough_to_show_inline(values):
    """The UI shows markdown inline only under 1,000 characters: the trend must fit."""
    md = sparkline(values, alt="loss trend")
    assert len(md) < 1000
    m = re.fullmatch(r"!\[loss trend\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    svg = base64.b64decode(m.group(1), validate=True).decode()
    assert svg.startswith("<svg ") and svg.endswith("</svg>") and "NaN" not in svg and "inf" not in svg
    assert sparkline([]) is None and sparkline([NAN]) is None


def test_rounding_and_absent_values():
    assert round_sig(3.3553598123) == 3.355 and round_sig(0.000123456) == 0.0001235
    assert round_sig(123456.7) == 123500.0 and round_sig(0.0) == 0.0 and round_sig(-2.71828) == -2.718
    assert round_sig(None) is None and round_sig(NAN) is None and round_sig(INF) is None
    tidy = tidy_metadata({"a": 1.23456789, "b": None, "c": NAN, "d": 7, "e": "", "f": True, "g": "x"})
    assert tidy == {"a": 1.235, "d": 7, "e": "", "f": True, "g": "x"}


def test_progress_is_time_based_too_with_an_eta():
    """The train step reports at least every log_every_s seconds, whatever log_every says, and
    each report says where it is and how long is left."""
    from ops.train.model import NuLogConfig
    from ops.train.loop import TrainConfig, train
    from ops.train.progress import progress_line
    from ops.train.vocab import Vocab

    lines = [(f"user <num> logged in from host{i % 7} port <num>", 1 + i % 5) for i in range(60)]
    vocab = Vocab.build(lines)
    calls = []
    train(lines, vocab, TrainConfig(epochs=2, batch_size=16, log_every=10**6, log_every_s=1e-9, device="cpu"),
          model_config=NuLogConfig(vocab_size=len(vocab), d_model=16, n_heads=2, d_ff=16, max_len=16),
          progress=calls.append)
    ends = [c for c in calls if c["step"] == c["steps"]]
    assert [c["epoch"] for c in ends] == [1, 2]
    assert len(calls) > len(ends)  # mid-epoch reports came from the clock, not the step count
    for c in calls:
        assert {"epoch", "epochs", "step", "steps", "loss", "recent_loss", "samples_per_s", "rows_per_s",
                "elapsed_s", "eta_s"} <= set(c)
        assert c["eta_s"] >= 0 and c["epochs"] == 2
    assert ends[-1]["eta_s"] == 0
    line = progress_line(calls[0])
    assert re.match(r"epoch 1/2, step \d+/\d+ \(\d+%\): loss \d+\.\d{4}.*samples/s.*ETA \d+", line), line
    assert progress_line(ends[-1]).endswith("done")


def test_materialized_chain_shows_plots_timestamps_and_no_nulls(env):
    from orchestration.assets.register import registered_model
    from orchestration.assets.sample import training_sample
    from orchestration.assets.train import nulog_model
    from orchestration.checks.quality import nulog_model_quality

    instance, resources = env
    ingest(instance, resources)
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=train_config())
    assert result.success
    [check] = result.get_asset_check_evaluations()
    metas = {node: result.asset_materializations_for_node(node)[0].metadata for node in ("training_sample", "nulog_model")}
    metas["check"] = check.metadata
    metas["partition_summaries"] = instance.get_latest_materialization_event(
        AssetKey("partition_summaries")).asset_materialization.metadata
    for node, meta in metas.items():
        for key, value in meta.items():
            assert not isinstance(value, NullMetadataValue) and value.value is not None, (node, key)
            if isinstance(value, FloatMetadataValue):
                assert value.value == round_sig(value.value), (node, key, value.value)

    model = metas["nulog_model"]
    plot = model["loss_plot"]
    assert isinstance(plot, MarkdownMetadataValue)
    assert decode(png_of(plot.value)).size == (480, 240)
    assert len(model["loss_curve"].value["loss"]) == 2 and model["final_loss"].value > 0
    assert isinstance(model["loss_trend"], MarkdownMetadataValue) and len(model["loss_trend"].value) < 1000
    for meta in (metas["training_sample"], model):
        assert isinstance(meta["window_start"], TimestampMetadataValue)
        assert "window_start_ms" not in meta and "window_end_ms" not in meta  # times once, as timestamps
        assert meta["window_end"].value > meta["window_start"].value
    assert "parent_version" not in metas["training_sample"]  # a scratch run has no parent: absent, not null
    assert isinstance(metas["partition_summaries"]["window_start"], TimestampMetadataValue)

    hist = metas["check"]["score_histogram"]
    assert isinstance(hist, MarkdownMetadataValue)
    assert decode(png_of(hist.value)).size == (480, 240)
    assert math.isfinite(metas["check"]["top_k_accuracy"].value)
