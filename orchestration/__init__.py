"""orchestration: a multi-project orchestrator for AI coding agents, built on Dagster."""
