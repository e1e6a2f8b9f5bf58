"""The `livestate` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livestate", description="livestate control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the gRPC server")
    try:
        from livestate.server import config as config_mod
    except ImportError as exc:  # the client-only install
        print(
            f"livestate serve needs the server extra: pip install 'livestate[server]' ({exc})",
            file=sys.stderr,
        )
        return 2
    config_mod.add_arguments(serve_parser)
    args = parser.parse_args(argv)

    if args.command == "serve":
        try:
            config = config_mod.from_sources(args)
        except config_mod.ConfigError as exc:
            parser.error(str(exc))
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        from livestate.server.app import serve

        serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
