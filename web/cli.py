"""`webllama serve BUNDLE_OR_DIR... [--host 127.0.0.1] [--port 8000] [--leaderboard DIR]` and
`webllama site BUNDLE_OR_DIR... --out DIR [--leaderboard DIR] [--force]` (a static site, web/static_site.py).

`register(subparsers)` is called by the root parser in converter/cli.py. `python -m webllama.web.cli serve ...`
runs the same subcommand without the root parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webllama.errors import WebllamaError


class ServeFailed(WebllamaError):
    """The server could not start: bad bundle path, missing npm install, port in use."""


def port_number(text: str) -> int:
    """argparse type: a TCP port a server can listen on (werkzeug would take 99999 modulo 65536)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a port from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; give one from 1 to 65535")
    return port


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> frozenset[str]:
    """Host header names accepted besides loopback names and IP literals (web/server.py host_allowed):
    the bound name, and this machine's names when the server is reachable from the network."""
    import socket

    names = {host}
    if not is_loopback(host):
        names |= {socket.gethostname(), socket.getfqdn()}
    return frozenset(n for n in names if n)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the chat page, the browser engine and bundles over HTTP",
        description="Serve the chat page (/), the eval page (/eval.html), the engine and the given "
        "bundles (/bundles/NAME/, listed at /api/models) with COOP/COEP headers.",
    )
    p.add_argument(
        "bundles",
        nargs="+",
        type=Path,
        metavar="BUNDLE_OR_DIR",
        help="a bundle folder (holds manifest.json) or a folder of bundle folders",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    p.add_argument(
        "--leaderboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="leaderboard folder (`webllama leaderboard --out DIR`), shown at /leaderboard/",
    )
    p.set_defaults(handler=run_serve)
    _register_site(subparsers)


def _register_site(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "site",
        help="write the chat page, the engine and bundles as a static site for any static file host",
        description="Write a self-contained static site: the chat page, the engine, the onnxruntime-web / "
        "tokenizers / jinja files it loads, copies of the bundles, api/models, and the leaderboard. "
        "Without COOP/COEP headers from the host the page runs WASM on one thread.",
    )
    p.add_argument(
        "bundles",
        nargs="+",
        type=Path,
        metavar="BUNDLE_OR_DIR",
        help="a bundle folder (holds manifest.json) or a folder of bundle folders",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write (must not exist)")
    p.add_argument(
        "--leaderboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="leaderboard folder (`webllama leaderboard --out DIR`), copied to DIR/leaderboard/",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it is a site written before")
    p.set_defaults(handler=run_site)


def run_site(args: argparse.Namespace) -> int:
    from webllama.web.static_site import SiteOptions, write_site

    s = write_site(SiteOptions(bundle_paths=tuple(args.bundles), out=args.out, leaderboard_dir=args.leaderboard, force=args.force))
    board = f"leaderboard from {s.leaderboard}" if s.leaderboard else "no leaderboard"
    sys.stdout.write(
        f"webllama: site with {', '.join(s.bundles)} ({board}, {s.bytes / 1e6:.1f} MB) in {s.out}\n"
        f"  try it: python -m http.server -d {s.out} 8000, then open http://127.0.0.1:8000/\n"
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from webllama.web.server import WEB_DIR, ServeConfig, ServeError, create_app

    if not (WEB_DIR / "node_modules" / "onnxruntime-web").is_dir():
        raise ServeFailed(f"{WEB_DIR}/node_modules is missing onnxruntime-web; run `cd {WEB_DIR} && npm ci`")
    cfg = ServeConfig(bundle_paths=tuple(args.bundles), leaderboard_dir=args.leaderboard, allowed_hosts=allowed_hosts(args.host))
    try:
        app = create_app(cfg)
    except ServeError as e:
        raise ServeFailed(str(e)) from e
    names = ", ".join(sorted(app.config["WEBLLAMA_BUNDLES"]))
    if not is_loopback(args.host):
        sys.stderr.write(
            f"warning: --host {args.host} makes {names} and the chat page reachable from the network, "
            "to anyone who can reach this machine; use --host 127.0.0.1 to keep them local\n"
        )
    sys.stderr.write(f"webllama: serving {names} on http://{args.host}:{args.port}/\n")
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    except (OSError, OverflowError) as e:
        raise ServeFailed(f"cannot listen on {args.host}:{args.port} ({e}); pick another --port or --host") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webllama.web.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except WebllamaError as e:
        sys.stderr.write(f"error: {e}\n")
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
