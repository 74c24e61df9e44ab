"""Computation, with no Dagster: one sub-package per stage of the loop.

    fetch/     read logs and parse records          (partition_summaries)
    mask/      mask messages, summarise windows     (partition_summaries)
    sample/    draw the training sample             (training_sample)
    train/     decide when, build and train NuLog   (nulog_model, the sensor's decisions)
    validate/  evaluate, score, judge, templates    (nulog_model_quality, anomaly_scores)
    register/  the model artifact format            (registered_model)

Shared by all stages: windows.py (time on the log's clock), naming.py (identifiers that reach
paths and SQL), files.py (temporary files), plots.py (pictures for the Dagster UI).
"""
