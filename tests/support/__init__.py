"""What the tests and benchmarks share: real git repositories, throwaway registries, the stand-in
agent CLI, and a real Dagster daemon to run them against."""
