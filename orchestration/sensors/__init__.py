"""The sensors, one file each: new samples start training runs (new_samples), NATS requests start
them too (nats), the reaper settles dead tasks (reaper), runs that fail settle their tasks
(run_ends), the observer counts what the source holds (observer), retention forgets what may go
(retention), and failed checks post alerts (alerts)."""
