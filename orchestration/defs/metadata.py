"""What the UI shows of each materialization and check: domain results shaped into Dagster
metadata. Numbers stay numbers, so the UI can plot them over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from orchestration.dependencies.detection import ScanOutcome
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.errors import RegistryError
from orchestration.registry.models import ProjectSpec
from orchestration.tasks.execution import TaskOutcome
from orchestration.tasks.models import Task
from orchestration.verification import VerificationResult
from orchestration.workspace.workspace import SourceState


def source_metadata(spec: ProjectSpec, state: SourceState) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "repo": spec.repo,
        "branch": state.branch,
        "branch_sha": state.branch_sha or "",
        "remote": state.remote,
    }
    if not state.remote:
        metadata |= {
            "head_sha": state.head_sha or "",
            "head_branch": state.head_branch or "(detached)",
            "dirty": bool(state.dirty),
        }
    if state.last_commit_time is not None:
        metadata["last_commit_time"] = dg.MetadataValue.timestamp(state.last_commit_time)
        metadata["last_commit"] = state.last_commit_summary or ""
    return metadata


def manifest_metadata(
    spec: ProjectSpec, outcome: ScanOutcome, graph: DependencyGraph
) -> dict[str, Any]:
    scan = outcome.scan
    rows = "\n".join(
        f"| `{m.path}` | {m.ecosystem} | {', '.join(p.name for p in m.packages)} | "
        f"{len(m.requirements)} |"
        for m in scan.manifests
    )
    providers = [e for e in graph.edges if e.consumer == spec.name]
    consumers = [e.consumer for e in graph.edges if e.provider == spec.name]
    mismatches = [m for edge in providers for m in edge.version_mismatches]
    return {
        "commit": scan.commit or "",
        "cached": outcome.cached,
        "manifest_count": len(scan.manifests),
        "requirement_count": len(scan.requirements),
        "provides": dg.MetadataValue.json(sorted({p.name for p in scan.packages})),
        "manifests": dg.MetadataValue.md(
            "| file | ecosystem | provides | requirements |\n|---|---|---|---|\n" + rows
            if rows
            else "none found"
        ),
        "depends_on": dg.MetadataValue.json(
            {e.provider: [ev.to_dict() for ev in e.evidence] for e in providers}
        ),
        "used_by": dg.MetadataValue.json(sorted(consumers)),
        "version_mismatches": dg.MetadataValue.json(mismatches),
        "cycles": dg.MetadataValue.json([list(c) for c in graph.cycles if spec.name in c]),
        "problems": dg.MetadataValue.json(list(scan.problems)),
    }


def verification_metadata(result: VerificationResult) -> dict[str, Any]:
    return {
        "configured": True,
        "command": " ".join(result.argv),
        "passed": result.tests_passed,
        "failed": result.tests_failed,
        "skipped": result.tests_skipped,
        "exit_code": result.exit_code if result.exit_code is not None else -1,
        "timed_out": result.timed_out,
        "runner": result.runner or "exit code",
        "duration_s": round(result.duration_s, 3),
        "output_tail": dg.MetadataValue.md(f"```\n{result.output_tail}\n```"),
    }


def task_metadata(outcome: TaskOutcome) -> dict[str, Any]:
    """Metadata of a task's materialization."""
    agent, verification, task = outcome.agent, outcome.verification, outcome.task
    metadata: dict[str, Any] = {
        "task": outcome.task.id,
        "status": str(outcome.task.status),
        "profile": outcome.profile,
        "model": outcome.model or "",
        "duration_s": round(agent.duration_s, 3),
        "cost_usd": float(agent.cost_usd or 0.0),
        "tokens_in": int(agent.tokens_in or 0),
        "tokens_out": int(agent.tokens_out or 0),
        "turns": int(agent.turns or 0),
        "files_changed": outcome.diff.files_changed,
        "lines_added": outcome.diff.lines_added,
        "lines_removed": outcome.diff.lines_removed,
        "commit": outcome.commit or "",
        "branch": outcome.branch,
        "verify_passed": verification.tests_passed if verification else 0,
        "verify_failed": verification.tests_failed if verification else 0,
        "session_id": agent.session_id or "",
        "summary": dg.MetadataValue.md(agent.summary[:2000] or "(none)"),
        **({"reason": outcome.task.reason} if outcome.task.reason else {}),
    }
    if outcome.transcript is not None:
        metadata["transcript"] = dg.MetadataValue.path(str(outcome.transcript))
    if task.delivered_to:
        metadata["delivered_to"] = task.delivered_to
    if task.delivery_error:
        metadata["delivery_error"] = task.delivery_error
    if task.interruptions:
        metadata["interruptions"] = dg.MetadataValue.json(task.interruptions)
        metadata["times_preempted"] = task.times_preempted
    if task.extra.get("preempted_others"):
        metadata["preempted_others"] = dg.MetadataValue.json(task.extra["preempted_others"])
    if task.extra.get("channels_read"):
        metadata["channels_read"] = dg.MetadataValue.json(task.extra["channels_read"])
    return metadata


def task_check_metadata(task: Task) -> dict[str, Any]:
    return {
        "passed": int(task.extra.get("verify_passed") or 0),
        "failed": int(task.extra.get("verify_failed") or 0),
        "status": str(task.status),
    }


def registry_errors_table(errors: Sequence[RegistryError]) -> dg.MetadataValue:
    table = "\n".join(f"| `{e.file}` | {e.line or ''} | `{e.key}` | {e.message} |" for e in errors)
    return dg.MetadataValue.md(
        "| file | line | key | error |\n|---|---|---|---|\n" + table if table else "none"
    )


def dependencies_metadata(
    graph: DependencyGraph, outcomes: dict[str, ScanOutcome | str]
) -> dict[str, Any]:
    failed = {p: o for p, o in outcomes.items() if isinstance(o, str)}
    return {
        "projects": len(graph.nodes),
        "edges": len(graph.edges),
        "cycles": len(graph.cycles),
        "parsed": sum(1 for o in outcomes.values() if not isinstance(o, str) and not o.cached),
        "failed": dg.MetadataValue.json(failed),
        "graph": dg.MetadataValue.md(f"```mermaid\n{graph.to_mermaid()}\n```"),
    }
