"""Container runtimes behind one protocol."""

from legato.runtime.base import LogLine, Replica, ReplicaRequest, Runtime, RuntimeEvent

__all__ = ["LogLine", "Replica", "ReplicaRequest", "Runtime", "RuntimeEvent"]
