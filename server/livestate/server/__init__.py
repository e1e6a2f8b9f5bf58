"""The livestate gRPC server (install with the `server` extra)."""

from livestate.server.app import LivestateServer, create_server, serve
from livestate.server.config import Config, ConfigError

__all__ = ["Config", "ConfigError", "LivestateServer", "create_server", "serve"]
