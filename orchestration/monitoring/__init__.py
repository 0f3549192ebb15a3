"""Monitoring: what every project costs and does, read from the task records and the instance,
for `orch status`, the Prometheus exporter (`orch metrics serve`) and the portfolio."""
