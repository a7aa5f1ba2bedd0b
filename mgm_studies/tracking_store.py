"""Where the MLflow store is, whether it answers, and its schema created once.

`check_reachable` names a store that cannot answer (`MLFLOW_TRACKING_URI`) within seconds, instead of after MLflow's
retries (about 2 minutes for an HTTP server that is down, minutes for a file that is not SQLite). `open_client`: MLflow
creates a fresh SQLite store's tables in whichever process opens it first, and several processes opening it at once
all failed (four `train` started together), so the first opening happens under an exclusive lock on the database's
folder: one process creates the schema, the others wait for it and then find it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import socket
import ssl
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mgm_studies.configbase import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

FIELD = "MLFLOW_TRACKING_URI"
PROBE_TIMEOUT_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"
_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


class StoreUnreachable(RuntimeError):
    """The store did not answer: a server or database that is down or unreachable (exit 1, not invalid input: the
    same command may work once it is up). A store that cannot work at all (not a SQLite file) is a ConfigError."""


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite file `mlflow.db` in the working directory (absolute path)."""
    return os.environ.get(FIELD) or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def shown(uri: str) -> str:
    """`uri` without credentials (`user:password@` is dropped): what messages and logs may print."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for any other store (and for in-memory SQLite)."""
    if not uri.startswith("sqlite:///") or uri in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


@functools.cache
def check_reachable(uri: str) -> None:
    """Raise StoreUnreachable if the store does not answer, a ConfigError if it cannot be a store (both name
    MLFLOW_TRACKING_URI); passes once per process."""
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in _DATABASE_PORTS:
        _check_port(uri, _DATABASE_PORTS[scheme])


def _check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise ConfigError.single(FIELD, f"{shown(uri)}: {folder} is a file, not a folder for the database")
    if path.exists():
        if path.is_dir():
            raise ConfigError.single(FIELD, f"{shown(uri)}: {path} is a folder, not a SQLite file")
        try:
            with path.open("rb") as handle:
                head = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise ConfigError.single(FIELD, f"{shown(uri)}: cannot read {path} ({exc.strerror})") from None
        if head and head != _SQLITE_HEADER:
            raise ConfigError.single(FIELD, f"{shown(uri)}: {path} is not a SQLite database")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError.single(FIELD, f"{shown(uri)}: {path} is not readable and writable")
        return
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError.single(FIELD, f"{shown(uri)}: cannot create the database under {existing or folder}")


def _check_server(uri: str) -> None:
    """Any HTTP answer (even 401 or 404) means a server is there; no answer within the timeout means there is none."""
    health = shown(uri).rstrip("/") + "/health"  # the probe needs no credentials: MLflow's own calls carry them
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return  # a TLS server answered: MLflow's own calls use its certificate settings
        raise StoreUnreachable(
            f"{FIELD}: cannot read the MLflow tracking store {shown(uri)}: the server does not answer within "
            f"{PROBE_TIMEOUT_S:.0f} s ({reason}); start it (mlflow server --host 127.0.0.1 ...) or point "
            f"{FIELD} at a reachable store"
        ) from None


def _check_port(uri: str, default_port: int) -> None:
    parts = urlsplit(uri)
    if not parts.hostname:
        return
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise StoreUnreachable(
            f"{FIELD}: cannot read the MLflow tracking store {shown(uri)}: the database does not answer within "
            f"{PROBE_TIMEOUT_S:.0f} s ({exc})"
        ) from None


@contextmanager
def _folder_lock(folder: Path):
    """An exclusive flock on a folder (held by an open descriptor of it): writes nothing, released on close."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def open_client(uri: str) -> MlflowClient:
    """A client of the store at `uri`, checked to answer and, for SQLite, with its schema created under a lock."""
    import mlflow
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    path = sqlite_path(uri)
    if path is None:
        return MlflowClient(tracking_uri=uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError.single(FIELD, f"{shown(uri)}: cannot create {path.parent} ({exc.strerror})") from None
    with _folder_lock(path.parent):
        return MlflowClient(tracking_uri=uri)  # its constructor opens the store, which creates or checks the tables
