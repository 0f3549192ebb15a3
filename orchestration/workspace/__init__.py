"""Private clones, worktrees and the isolation rules that keep projects apart under ORCH_HOME."""
