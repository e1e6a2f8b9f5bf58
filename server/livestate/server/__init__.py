"""The livestate gRPC server (install with the `server` extra)."""

from livestate.server.core.config import Config, ConfigError
from livestate.server.process.app import LivestateServer, create_server, serve

__all__ = ["Config", "ConfigError", "LivestateServer", "create_server", "serve"]
