"""The edge: HTTP routing to healthy replicas."""

from legato.edge.base import Edge, Route, Upstream

__all__ = ["Edge", "Route", "Upstream"]
