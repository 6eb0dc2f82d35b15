"""Actuators: what touches the world outside the process. Decision publishers (file,
webhook), the prewarm executor and its Kubernetes scale client, the Lease that elects the one
replica that acts (``lease``), the manual-override store and the audit log; and the hook a
LiteLLM proxy loads (``litellm_hook``, a file that stands alone, not imported here). Each is driven by the loop's publish stage (or the API, for overrides) and
never blocks a tick: network calls run on background threads, files are written atomically."""

from controller.actuators.atomic import atomic_write
from controller.actuators.audit import AuditLog
from controller.actuators.lease import (
    LeaderElector,
    LeaseClient,
    LeaseConflict,
    LeaseError,
    LeaseRecord,
)
from controller.actuators.overrides import OverrideStore
from controller.actuators.prewarm import (
    KubernetesError,
    KubernetesScaler,
    PrewarmExecutor,
    ReplicaScaler,
)
from controller.actuators.publishers import (
    FilePublisher,
    LatestWins,
    Publisher,
    WebhookPublisher,
    build_publishers,
    litellm_config,
)

__all__ = [
    "AuditLog",
    "FilePublisher",
    "KubernetesError",
    "KubernetesScaler",
    "LatestWins",
    "LeaderElector",
    "LeaseClient",
    "LeaseConflict",
    "LeaseError",
    "LeaseRecord",
    "OverrideStore",
    "PrewarmExecutor",
    "Publisher",
    "ReplicaScaler",
    "WebhookPublisher",
    "atomic_write",
    "build_publishers",
    "litellm_config",
]
