"""The state store: desired state, deployments, events and tokens."""

from legato.store.models import Deployment, Event, Service, Token
from legato.store.sqlite import Store

__all__ = ["Deployment", "Event", "Service", "Store", "Token"]
