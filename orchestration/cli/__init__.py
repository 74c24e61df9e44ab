"""The `logloop` command line, one module per command group:

    app.py        the parser, `tasks list`, `store restore`, the entry point (main)
    common.py     errors, the store, tables, input lines, a batch's registered model
    train.py      train create|get|list (ModelTraining specs, Opni requests)
    models.py     models list|show|promote|rollback|follow|history|diff
    score.py      score, templates
    feedback.py   feedback (labels)
    anomalies.py  anomalies (trends)
    push.py       push, samples count|results, serve-ingest
    retention.py  cleanup
    nats.py       nats setup|status|flush
    config.py     config (the effective settings)
"""
