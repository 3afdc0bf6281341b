"""Free ports for servers started by tests and scripts."""

from __future__ import annotations

from auras.bridge.transport import free_service_port

__all__ = ["free_service_port"]
