"""Stage 4, train: `nulog_model`, a candidate NuLog trained on the run's own sample (ops.train)."""

import json
import os

from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, create_model

from ops.mask.masking import load_rules
from ops.sample.sampling import read_sample
from ops.train.config import NuLogConfig, TrainConfig, tunable_fields
from ops.validate.feedback import train_classifier
from orchestration import contract
from orchestration.contract import FINETUNE, CandidateRef, ModelRef
from orchestration.k8s import train_step_k8s_config
from orchestration.partitions import batch_partitions
from orchestration.loop_settings import loop_settings
from orchestration.upstream import upstream_sample
from resources.artifacts import ArtifactStorage
from orchestration.assets.sample import training_sample


# The tunable fields of the training loop's and the model's configs (ops.train.config: defaults,
# bounds, descriptions), as the nulog_model asset's run config.
TrainAssetConfig = create_model(
    "TrainAssetConfig", __base__=Config, __module__=__name__,
    **{name: (typ, Field(default=default, **kwargs))
       for name, (typ, default, kwargs) in tunable_fields(TrainConfig, NuLogConfig).items()},
)


@asset(
    partitions_def=batch_partitions,
    deps=[training_sample],
    group_name="model",
    kinds={"pytorch"},
    op_tags={"dagster-k8s/config": train_step_k8s_config()},
)
def nulog_model(
    context: AssetExecutionContext, config: TrainAssetConfig, artifacts: ArtifactStorage
) -> MaterializeResult:
    """Train NuLog on the batch's training sample; checkpoint each epoch so a retry resumes."""
    from ops.register.artifact import read_artifact, write_artifact
    from ops.train.loop import TrainingDiverged, train
    from ops.train.vocab import Vocab

    batch = context.partition_key
    sample = upstream_sample(context.instance, context.run.run_id, batch)
    with artifacts.reading(sample.key) as path:
        train_lines, validation_lines = read_sample(path)
    # the run's decision (training_sample carried it out, ops.train.decisions made it): nothing is decided here
    start_model = None
    if sample.mode == FINETUNE:
        with artifacts.reading(sample.parent_artifact) as path:
            parent = read_artifact(path)
        vocab, start_model = parent.vocab, parent.model
        context.log.info(f"fine-tuning v{sample.parent_version}")
    else:
        vocab = Vocab.build(train_lines)
    cfg = TrainConfig(**{name: getattr(config, name) for name in tunable_fields(TrainConfig)})
    model_cfg = start_model.cfg if start_model is not None else NuLogConfig(vocab_size=len(vocab), max_len=config.max_len)
    # keyed by the run that drew the sample: a re-execution of this step resumes it
    checkpoint_key = contract.checkpoint_key(batch, sample.run_id)
    # The checkpoint lives in artifact storage (a retry may run in another pod, on another disk):
    # fetched to a local temp file before training, put back after each epoch.
    import shutil
    import tempfile

    from resources.artifacts import ArtifactStorageError

    checkpoint_dir = tempfile.mkdtemp(prefix="logloop-checkpoint-")
    checkpoint = os.path.join(checkpoint_dir, "checkpoint.pt")
    if artifacts.exists(checkpoint_key):
        with artifacts.reading(checkpoint_key) as path:
            shutil.copyfile(path, checkpoint)

    def upload_checkpoint(path: str) -> None:
        try:
            with artifacts.writing(checkpoint_key) as tmp:
                shutil.copyfile(path, tmp)
        except (ArtifactStorageError, OSError) as exc:  # costs only the resume point, not the training
            context.log.warning(f"epoch checkpoint not saved to {artifacts.uri(checkpoint_key)}: {exc}")

    step_losses: list[tuple[float, float]] = []  # (fractional epoch, loss since the last report)

    def progress(p: dict) -> None:
        from ops.train.progress import progress_line

        context.log.info(progress_line(p))
        if p.get("steps"):
            step_losses.append((p["epoch"] - 1 + p["step"] / p["steps"], p.get("recent_loss", p["loss"])))

    try:
        result = train(train_lines, vocab, cfg, model=start_model, progress=progress, checkpoint_path=checkpoint,
                       model_config=model_cfg, on_checkpoint=upload_checkpoint)
    except TrainingDiverged as exc:
        raise Failure(description=f"batch {batch!r}: {exc}", metadata={"batch": batch, "outcome": "diverged"}) from exc
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    labels = {}
    if sample.labels_key:  # runs sampled before feedback existed have none
        with artifacts.reading(sample.labels_key) as path, open(path) as f:
            labels = json.load(f)
    candidate = CandidateRef(sample=sample, run_id=context.run.run_id, key=contract.candidate_key(batch, context.run.run_id),
                             checkpoint_key=checkpoint_key, mode=sample.mode, escalation=sample.escalation)
    with artifacts.writing(candidate.key) as tmp:
        write_artifact(
            tmp, result.model, vocab, load_rules(), model_cfg,
            metrics={"loss_curve": result.losses},
            meta={**ModelRef.of_candidate(candidate).to_meta(),
                  "feedback": labels, "feedback_model": train_classifier(labels) if labels else None},
            train_config=cfg,
            multiline_rules=loop_settings().multiline.rules(),  # how the data stage joined lines into events
        )
    from ops.plots import loss_curve_png, markdown_image, round_sig, sparkline, tidy_metadata

    window = {f"window_{end}": MetadataValue.timestamp(ms / 1000)
              for end, ms in (("start", sample.window_start_ms), ("end", sample.window_end_ms)) if ms is not None}
    # the UI shows short markdown inline (the trend, an SVG) and long markdown behind "[Show Markdown]" (the plot)
    trend = sparkline([loss for _, loss in step_losses] or result.losses, alt="loss trend")
    return MaterializeResult(
        metadata=tidy_metadata({
            "final_loss": result.losses[-1] if result.losses else None,
            **({"loss_trend": MetadataValue.md(trend)} if trend else {}),
            "loss_plot": MetadataValue.md(markdown_image(
                loss_curve_png(result.losses, step_losses, title=f"{batch}: training loss"), "loss curve")),
            # the reference the gate and registered_model read; the timestamps are for people
            **candidate.to_metadata(),
            **window,
            # the loss per epoch as data (tests and scripts read it); the plot above is for people
            "loss_curve": MetadataValue.json({"epoch": list(range(1, len(result.losses) + 1)),
                                              "loss": [round_sig(x) for x in result.losses]}),
            "epochs": len(result.losses),
            "vocab_size": len(vocab),
            "oov_share_validation": vocab.oov_share(validation_lines),
            "logs_per_s": result.logs_per_s,
            "rows_per_s": result.rows_per_s,
            "train_s": result.train_s,
            "device": result.device,
            "resumed_from_epoch": result.resumed_from,
        })
    )
