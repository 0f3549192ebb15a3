"""Sharing agent slots among projects: the policy (pure) and how it is applied to Dagster."""
