"""A sweep against an MLflow server whose backend store is a real PostgreSQL (issue 15, part 6): the server that
clusters/README.md ("MLflow on PostgreSQL") runs for many concurrent sweeps, started here with the same flags.

PostgreSQL is Debian's (`/usr/lib/postgresql/*/bin`; `.ci/run` installs it through scripts/ensure_postgres.sh where
missing). Where the binaries or psycopg2 are missing the test fails under `CI=true` and is skipped elsewhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
    "train": {"steps": 40, "batch_size": 32, "checkpoint_interval": 20, "log_interval": 10},
    "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 200, "reference_samples": 200, "interval": 20},
}
STUDY = "postgres_backend"


def _unavailable(reason: str):
    """A missing prerequisite: a failure in CI (a skip must not stand in for the feature there), a skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{reason} (CI=true: .ci/run installs it with scripts/ensure_postgres.sh)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path:
    """The newest Debian PostgreSQL's bin folder (`/usr/lib/postgresql/<major>/bin`)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        _unavailable("PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/initdb)")
    return Path(found[-1]).parent


@pytest.fixture
def postgres():
    """A fresh PostgreSQL on 127.0.0.1 (trust authentication, no other listener) with an empty database `mlflow`;
    yields its libpq URI. The server refuses to run as root, so as root it runs as the `postgres` user, in a
    folder of its own under the system temp folder (pytest's tmp_path is root's alone, mode 0700)."""
    try:
        import psycopg2
    except ImportError:
        _unavailable("psycopg2 is not installed (pip install -e '.[dev]')")
    bin_dir = _postgres_bin()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="mgm-postgres-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            _unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def pg(*args: str) -> None:
        done = subprocess.run([*as_user, *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"

    started = False
    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
        started = True
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        # CREATE DATABASE refuses to run inside a transaction: autocommit, and no `with connection:` (since
        # psycopg2 2.9 it opens a transaction even in autocommit mode; seen here as ActiveSqlTransaction).
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("CREATE DATABASE mlflow")
        finally:
            connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        try:
            if started:
                pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """`mlflow server` on `postgres`, artifacts served from tmp_path, bound to 127.0.0.1; yields its http URI once
    /health answers."""
    # `+psycopg2`: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3 (`No module named 'psycopg'` with only
    # psycopg2 installed; seen with SQLAlchemy 2.1.9).
    backend = postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = tmp_path / "mlflow-server.log"
    with log.open("w") as out:
        # A session of its own: the server's workers go down with it (killpg below, this process group only).
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # the first start creates MLflow's schema in PostgreSQL (its migrations)
        while True:
            assert server.poll() is None, f"mlflow server exited {server.returncode}:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server did not answer /health:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(server)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to `process`'s own process group (a server and its workers), SIGKILL after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:  # the whole group is gone already
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_sweep_against_an_mlflow_server_on_postgresql_lands_one_parent_and_a_child_per_trial(
    postgres, mlflow_server, tmp_path
):
    import psycopg2

    space = {
        "name": STUDY,
        "base": BASE,
        "metric": "kl/nfe-1",
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "space": {"train.optimizer.lr": {"grid": [1.0e-3, 2.0e-3]}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MGM_STUDIES_CHECKPOINTS": str(tmp_path / "checkpoints")}
    done = run_cli("sweep", "space.yaml", "--quiet", "--storage", str(tmp_path / "ray"), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("mgm.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mgm.kind") == "trial"]
    assert len(runs) == 3 and len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials/finished"] == 2
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mgm.status"] == "finished"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "kl/nfe-1" in child.data.metrics
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == list(range(1, 41))

    # The runs are rows of PostgreSQL's `runs` table, not of some other store the server fell back to.
    connection = psycopg2.connect(postgres)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
            assert dict(cursor.fetchall()) == {"FINISHED": 3}
    finally:
        connection.close()
