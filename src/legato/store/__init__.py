"""The state store: desired state, deployments, events, tokens and pending removals."""

from legato.store.models import (
    Deployment,
    DeploymentLog,
    Event,
    MetricPoint,
    Removal,
    Service,
    Token,
)
from legato.store.sqlite import Store

__all__ = ["Deployment", "DeploymentLog", "Event", "MetricPoint", "Removal", "Service", "Store", "Token"]
