"""Well-known label, annotation, taint and condition names, in one place.

healer records its own progress in `healer.io/...` annotations so that a restart or a new
leader never repeats a step; the Kubernetes names are the ones the API server and the
controllers use.
"""

from typing import Final

# healer's own marks
CORDONED_BY: Final = "healer.io/cordoned-by"  # annotation: healer cordoned this node (value: rule)
CORDONED_AT: Final = "healer.io/cordoned-at"  # annotation: RFC 3339 time of that cordon
FENCED: Final = "healer.io/fenced"  # annotation "true": an operator confirmed the node is powered off
PROTECTED: Final = "healer.io/protected"  # label "true": alerts only, never remediated
REMEDIATIONS: Final = "healer.io/remediations"  # annotation: JSON list of RFC 3339 times of remediations
GPU_UNHEALTHY_TAINT: Final = "healer.io/gpu-unhealthy"
GPU_RESET_AT: Final = "healer.io/gpu-reset-at"  # annotation: RFC 3339 time an operator reset the GPUs
GPU_CONDITION: Final = "GPUHealthy"
EVENT_REASON_PREFIX: Final = "Healer"

# Kubernetes
CONTROL_PLANE_LABEL: Final = "node-role.kubernetes.io/control-plane"
MASTER_LABEL: Final = "node-role.kubernetes.io/master"
OUT_OF_SERVICE_TAINT: Final = "node.kubernetes.io/out-of-service"
UNREACHABLE_TAINT: Final = "node.kubernetes.io/unreachable"
NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"
UNSCHEDULABLE_TAINT: Final = "node.kubernetes.io/unschedulable"
MIRROR_POD_ANNOTATION: Final = "kubernetes.io/config.mirror"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
GPU_RESOURCE: Final = "nvidia.com/gpu"
LOCAL_PATH_PROVISIONER: Final = "rancher.io/local-path"
