"""`livestate serve` (the rest of the `livestate` command is livestate.client.cli)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from livestate.server.core import config as config_mod
from livestate.server.core import logs


def serve_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="livestate serve", description="run the livestate gRPC server")
    config_mod.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_mod.from_sources(args)
    except config_mod.ConfigError as exc:
        parser.error(str(exc))
    logs.configure(config.log_level, config.log_format)
    if config.process_count > 1:
        from livestate.server.process import supervisor

        return supervisor.run(config)
    from livestate.server.process.app import serve

    try:
        serve(config)
    except config_mod.ConfigError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":  # the supervisor's children: `python -m livestate.server.process.cli serve`
    import sys

    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m livestate.server.process.cli serve [options]")
    sys.exit(serve_main(sys.argv[2:]))
