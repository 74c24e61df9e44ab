"""The asset chain, one module per stage (Stage 5, the blocking gate, is orchestration/checks/quality.py):

    summaries.py  raw_logs -> partition_summaries       fetch, mask   (ops.fetch, ops.mask)
    sample.py     -> training_sample                     sample        (ops.sample)
    train.py      -> nulog_model                         train         (ops.train)
    register.py   -> registered_model                    register      (orchestration.registry)

Each asset takes typed inputs (orchestration.contract's references, resolved for its own run by
orchestration.upstream), calls one function in ops/, writes its heavy data to artifact storage
itself and records metadata.

These modules do not use `from __future__ import annotations`: Dagster reads the run-config
classes from the annotations at import time, and strings it cannot resolve.
"""
