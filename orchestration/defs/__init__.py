"""The Dagster wing: the only place that assembles Dagster definitions. The entry point is
`orchestration.defs.definitions`; the factory, the shared assets, sensors, resources and the
shaping of metadata live beside it, and call the domain rooms for everything they do."""
