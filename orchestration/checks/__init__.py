"""Asset checks: the blocking quality gate on a trained model (quality), and the warnings on each
window's anomaly rate (anomaly_rate) and template counts (template_counts)."""
