"""The services the loop offers beside its assets, using no Dagster API (they take the store and
storage as arguments): training specs and Opni's requests (training_spec, nats_requests), news of
models for other services (model_events), retention (retention_plan, retention) and rebuilding the
store from artifact storage (restore)."""
