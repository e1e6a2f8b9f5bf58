"""Thin Python helpers over the generated stubs (`livestate.v1`), for node agents and tools.

Installs without the server's dependencies: `pip install livestate` brings only grpcio,
protobuf and grpcio-status.
"""

from livestate.client.admin import Admin
from livestate.client.agent import NodeAgent, Reading
from livestate.client.scheduler import Held, QueueLost, Scheduler

__all__ = ["Admin", "Held", "NodeAgent", "QueueLost", "Reading", "Scheduler"]
