"""``histosynth serve``: the local web app (paint a mask, generate, transfer, browse datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_port(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when ``host:port`` cannot be bound."""
    import socket

    from histosynth.errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InputError(f"cannot resolve --host {host!r} ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as error:
            raise InputError(f"cannot listen on {host}:{port} ({error.strerror})") from None


def serve(
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (default: the shipped EBHI model)."),
    datasets: Optional[Path] = typer.Option(None, "--datasets", help="A synthetic dataset folder, or a folder of "
                                            "them, to browse with their audit reports."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback exposes the "
                             "app (no authentication) to the network."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    max_steps: int = typer.Option(50, "--max-steps", min=1, max=1000, help="Most sampling steps one request may ask."),
    max_upload_mb: float = typer.Option(8.0, "--max-upload-mb", min=0.01, help="Largest request body (MiB)."),
    max_side: int = typer.Option(2048, "--max-side", min=16, help="Largest uploaded image side (pixels)."),
    allow_host: list[str] = typer.Option([], "--allow-host", metavar="NAME[:PORT]", help="Also answer requests "
                                         "for this Host name (repeatable; without :PORT any port), e.g. the "
                                         "machine's name when binding 0.0.0.0 or a reverse proxy's name. By "
                                         "default only the bound host and localhost/127.0.0.1/[::1] on --port."),
) -> None:
    """Serve a web page to paint or upload a mask, choose class and guidance, and see the generated tile beside
    its mask; transfer an uploaded tile's appearance; browse synthetic datasets and their reports. The model
    loads once; requests run one at a time."""
    from importlib.util import find_spec

    from histosynth.errors import InputError

    missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                          ("python-multipart", ["python_multipart", "multipart"]))
               if not any(find_spec(module) for module in modules)]
    if missing:
        raise InputError(f"histosynth serve needs {', '.join(missing)}: pip install 'histosynth[serve]'")
    import uvicorn

    from histosynth.serve.app import create_app
    from histosynth.serve.guards import WILDCARD_BINDS, allowed_hosts, split_host
    from histosynth.serve.service import ServeLimits
    from histosynth.weights import default_model_dir

    bad = [name for name in allow_host if split_host(name) is None]
    if bad:
        raise InputError(f"--allow-host {bad[0]!r} is not a host name or name:port")
    _check_port(host, port)
    hosts = allowed_hosts(host, port, allow_host)
    limits = ServeLimits(max_upload_bytes=int(max_upload_mb * 2**20), max_side=max_side, max_steps=max_steps)
    typer.echo("loading the model ...", err=True)
    app = create_app(model or default_model_dir(), device, limits, datasets, hosts)
    if host not in LOOPBACK:
        typer.echo(f"warning: binding {host}: anyone who can reach port {port} can use this machine's model", err=True)
    if host.strip() in WILDCARD_BINDS and not allow_host:
        typer.echo("note: only requests for localhost are answered; add --allow-host NAME for each name or address "
                   "clients use to reach this machine", err=True)
    typer.echo(f"histosynth serve: open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """Run ``serve`` on its own (``python -m histosynth.cli.serve``): one-line errors, exit 2."""
    import sys

    from histosynth.errors import HistosynthError

    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command.command()(serve)
    try:
        command(args=argv, prog_name="histosynth serve")
    except HistosynthError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
