"""Thin Python helpers over the generated stubs (`livestate.v1`), for node agents and tools.

Installs without the server's dependencies: `pip install livestate` brings only grpcio,
protobuf and grpcio-status.
"""

from livestate.client.agent import NodeAgent, Reading

__all__ = ["NodeAgent", "Reading"]
