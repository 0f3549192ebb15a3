"""The project registry: YAML files in, validated frozen models and clear errors out."""

from orchestration.registry.errors import RegistryError, RegistryLoadError
from orchestration.registry.layers import Origin
from orchestration.registry.loader import LoadedProject, Registry, load_registry
from orchestration.registry.models import (
    PRIORITY_CLASSES,
    AgentProfile,
    AgentSettings,
    AgentsFile,
    Pool,
    PoolsFile,
    ProjectSpec,
)

__all__ = [
    "PRIORITY_CLASSES",
    "AgentProfile",
    "AgentSettings",
    "AgentsFile",
    "LoadedProject",
    "Origin",
    "Pool",
    "PoolsFile",
    "ProjectSpec",
    "Registry",
    "RegistryError",
    "RegistryLoadError",
    "load_registry",
]
