"""`splitwatch serve`: the backend under uvicorn, JSON logs on stderr.

It refuses to start on a database that is empty or behind the migration head, with the
sentence that says what to run; no traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Annotated

import typer


def register(cli: typer.Typer) -> None:
    @cli.command("serve")
    def serve(
        host: Annotated[
            str | None, typer.Option("--host", help="Address to listen on [env SPLITWATCH_HOST; 127.0.0.1].")
        ] = None,
        port: Annotated[
            int | None, typer.Option("--port", help="Port to listen on [env SPLITWATCH_PORT; 8000].")
        ] = None,
        database_url: Annotated[
            str | None,
            typer.Option(
                "--database-url",
                help="SQLAlchemy URL [env SPLITWATCH_DATABASE_URL; sqlite:///./splitwatch.db].",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option("--workers", min=1, help="uvicorn worker processes (PostgreSQL for more than 1)."),
        ] = None,
        ssl_certfile: Annotated[
            str | None,
            typer.Option(
                "--ssl-certfile",
                help="Serve HTTPS with this PEM certificate (chain) [env SPLITWATCH_SSL_CERTFILE].",
            ),
        ] = None,
        ssl_keyfile: Annotated[
            str | None,
            typer.Option(
                "--ssl-keyfile", help="The certificate's PEM private key [env SPLITWATCH_SSL_KEYFILE]."
            ),
        ] = None,
        forwarded_allow_ips: Annotated[
            str | None,
            typer.Option(
                "--forwarded-allow-ips",
                help="Proxies whose X-Forwarded-For/-Proto are believed, comma-separated, or * "
                "[env SPLITWATCH_FORWARDED_ALLOW_IPS; 127.0.0.1].",
            ),
        ] = None,
    ) -> None:
        """Run the backend: ingest, REST API, dashboard, /metrics."""
        import uvicorn
        from pydantic import ValidationError

        from app.logging import configure_logging
        from app.settings import Settings
        from app.store.engine import DatabaseUrlError, is_sqlite, make_engine
        from app.store.schema_check import schema_status

        flags = {
            "host": host,
            "port": port,
            "database_url": database_url,
            "workers": workers,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "forwarded_allow_ips": forwarded_allow_ips,
        }
        overrides = {k: v for k, v in flags.items() if v is not None}
        try:
            settings = Settings(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            typer.echo(
                f"splitwatch serve: invalid setting ({problems}): fix the flag or SPLITWATCH_* variable",
                err=True,
            )
            raise typer.Exit(2) from None
        try:
            engine = make_engine(settings.database_url)
        except DatabaseUrlError as exc:
            typer.echo(f"splitwatch serve: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            status = schema_status(engine)
        finally:
            engine.dispose()
        if not status.ok:
            typer.echo(f"splitwatch serve: {status.message}", err=True)
            raise typer.Exit(1)
        if settings.workers > 1 and is_sqlite(settings.database_url):
            typer.echo(
                "splitwatch serve: --workers > 1 needs PostgreSQL: SQLite has one writer per process "
                "(use --workers 1, or SPLITWATCH_DATABASE_URL=postgresql://...)",
                err=True,
            )
            raise typer.Exit(2)
        tls_problem = _check_tls(settings.ssl_certfile, settings.ssl_keyfile)
        if tls_problem:
            typer.echo(f"splitwatch serve: {tls_problem}", err=True)
            raise typer.Exit(2)
        configure_logging(settings.log_level)
        from app.server import uvicorn_options

        common = {
            **uvicorn_options(settings),
            "host": settings.host,
            "port": settings.port,
            "log_config": None,
            "access_log": False,
            # X-Forwarded-For / X-Forwarded-Proto set the client address and the scheme, from
            # these peers only (docs/settings.md, "Behind a reverse proxy").
            "proxy_headers": True,
            "forwarded_allow_ips": settings.forwarded_allow_ips,
            "ssl_certfile": settings.ssl_certfile,
            "ssl_keyfile": settings.ssl_keyfile,
            "timeout_graceful_shutdown": 10,
        }
        if settings.workers == 1:
            from app.main import create_app

            uvicorn.run(create_app(settings), **common)
            return
        # Several processes: each worker builds its app from the environment.
        for key, value in overrides.items():
            os.environ[f"SPLITWATCH_{key.upper()}"] = str(value)
        with _shared_metrics_dir():
            uvicorn.run("app.main:create_app_from_env", factory=True, workers=settings.workers, **common)


def _check_tls(certfile: str | None, keyfile: str | None) -> str | None:
    """The sentence that says what is wrong with the TLS files, or None: uvicorn would only
    trace back from deep inside its start-up."""
    import ssl

    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        return "--ssl-certfile and --ssl-keyfile go together: pass both (or neither, for plain HTTP)"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:  # before OSError, of which it is a kind
        return (
            f"the TLS files are not a PEM certificate and its key ({exc.reason or exc}): "
            f"check --ssl-certfile {certfile} and --ssl-keyfile {keyfile}"
        )
    except OSError as exc:
        return (
            f"cannot read the TLS files ({exc.strerror or exc}): "
            f"check --ssl-certfile {certfile} and --ssl-keyfile {keyfile}"
        )
    return None


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the workers (app/metrics.py: one port, one set of ingest
    counters). An operator's own directory is used but emptied first: files left by an earlier
    run would add that run's counts to this one's. Else a fresh one, removed at exit."""
    import shutil
    import tempfile
    from pathlib import Path

    # app.metrics.MULTIPROC_ENV, without importing prometheus_client in this (non-serving) process.
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="splitwatch-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)
