"""The cluster configs in clusters/, checked offline: every YAML parses, the launcher configs pass Ray's own schema,
the KubeRay manifests agree with each other and with MLflow's host check, the SLURM script runs (with stand-ins for
`srun` and `ray`) around a real MLflow server, and every `mgm-studies` command line in these files parses with the
real CLI and names a shipped search space."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env.runtime_env import _merge_runtime_env

from mgm_studies.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
KUBERAY = CLUSTERS / "kuberay"
SBATCH = CLUSTERS / "slurm" / "sweep.sbatch"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
SHIPPED_SPACES = {str(p.relative_to(ROOT)) for p in (ROOT / "search_spaces").rglob("*.yaml")} - {
    str(p.relative_to(ROOT)) for p in (ROOT / "search_spaces" / "teachers").rglob("*.yaml")
}
YAML_FILES = sorted(p for p in CLUSTERS.rglob("*") if p.suffix in {".yaml", ".yml"})


def _docs(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _one(path: Path) -> dict:
    (doc,) = _docs(path)
    return doc


def _commands(config: dict, key: str) -> list[str]:
    return [str(command) for command in config.get(key) or []]


def _bash_syntax_error(command: str) -> str:
    result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    return result.stderr if result.returncode else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ every file parses
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CLUSTERS)))
def test_every_yaml_file_parses_into_mappings(path):
    docs = _docs(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_the_folder_has_a_config_for_each_kind_of_site():
    names = {str(p.relative_to(CLUSTERS)) for p in YAML_FILES}
    assert {"aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names
    assert SBATCH.is_file() and (CLUSTERS / "README.md").is_file()


# ------------------------------------------------------------------ cluster launcher (AWS, GCP)
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_schema(name):
    validate_config(prepare_config(copy.deepcopy(_one(CLUSTERS / name))))


BREAKAGES = {
    "max_workers not an int": lambda c: c.update(max_workers="two"),
    "misspelt key": lambda c: c["available_node_types"]["gpu"].update(min_worker=0),
    "unknown head type": lambda c: c.update(head_node_type="nope"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
@pytest.mark.parametrize("name", LAUNCHERS)
def test_rays_schema_check_rejects_a_broken_copy(name, breakage):
    config = copy.deepcopy(_one(CLUSTERS / name))
    BREAKAGES[breakage](config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_nodes_install_and_start(name):
    config = _one(CLUSTERS / name)
    nodes = config["available_node_types"]
    head, gpu = nodes[config["head_node_type"]], nodes["gpu"]
    assert head["resources"]["CPU"] == 0  # no trial on the head
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0 and gpu["max_workers"] == 8
    setup = " && ".join(_commands(config, "setup_commands"))
    assert '"ray[default,tune,train]==2.60.0"' in setup
    assert "pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ~/mgm-studies" in setup
    assert config["file_mounts"]["/home/ubuntu/mgm-studies"] == "."
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert "export RAY_AUTH_MODE=token" in setup

    head_start = _commands(config, "head_start_ray_commands")
    (server,) = [i for i, c in enumerate(head_start) if "mlflow server" in c]
    (ray_head,) = [i for i, c in enumerate(head_start) if "ray start --head" in c]
    assert server < ray_head  # MLflow is up before the sweep driver can start
    for flag in ("--host 0.0.0.0", "--port 5000", "--backend-store-uri sqlite:////home/ubuntu/mlflow/mlflow.db"):
        assert flag in head_start[server]
    assert "--artifacts-destination" in head_start[server]
    # The driver hands its URI to the trials: the head exports its private IP, never a loopback address.
    assert "export MLFLOW_TRACKING_URI=http://$(python -c" in head_start[ray_head]
    assert "127.0.0.1:5000" not in head_start[ray_head] and "--dashboard-host=127.0.0.1" in head_start[ray_head]
    worker_start = " ".join(_commands(config, "worker_start_ray_commands"))
    assert worker_start.index("export MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000") < worker_start.index("ray start")


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_command_is_valid_bash(name):
    config = _one(CLUSTERS / name)
    keys = [k for k in config if k.endswith("_commands")]
    errors = {c: e for k in keys for c in _commands(config, k) if (e := _bash_syntax_error(c))}
    assert not errors


def test_cloud_specific_node_settings():
    aws = _one(CLUSTERS / "aws.yaml")["available_node_types"]["gpu"]["node_config"]
    assert aws["InstanceMarketOptions"]["MarketType"] == "spot"
    gcp = _one(CLUSTERS / "gcp.yaml")
    node = gcp["available_node_types"]["gpu"]["node_config"]
    assert node["guestAccelerators"][0]["acceleratorCount"] == 1
    assert node["scheduling"]["onHostMaintenance"] == "TERMINATE" and node["scheduling"]["preemptible"] is True
    assert gcp["provider"]["project_id"] == "YOUR_PROJECT_ID"


# ------------------------------------------------------------------ KubeRay
def _kinds(path: Path) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in _docs(path)}


def _pod_specs(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _ray_cluster_specs() -> dict[str, dict]:
    return {
        "raycluster": _one(KUBERAY / "raycluster.yaml")["spec"],
        "rayjob": _one(KUBERAY / "rayjob.yaml")["spec"]["rayClusterSpec"],
    }


def test_kuberay_manifests_have_the_right_kinds():
    cluster, job = _one(KUBERAY / "raycluster.yaml"), _one(KUBERAY / "rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert set(_kinds(KUBERAY / "mlflow.yaml")) == {"PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy"}
    assert _kinds(KUBERAY / "storage.yaml")["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("which", ["raycluster", "rayjob"])
def test_kuberay_cluster_spec(which):
    spec = _ray_cluster_specs()[which]
    assert spec["rayVersion"] == "2.60.0"  # a string: an unquoted 2.60 would be a float
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = spec["workerGroupSpecs"]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 8)
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    (storage,) = _docs(KUBERAY / "storage.yaml")
    for pod in _pod_specs(spec):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        assert claims == {"shared": storage["metadata"]["name"]}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["shared"] == "/mnt/shared"


def test_every_kuberay_pod_runs_the_projects_image():
    images = {
        c["image"] for spec in _ray_cluster_specs().values() for pod in _pod_specs(spec) for c in pod["containers"]
    }
    deployment = _kinds(KUBERAY / "mlflow.yaml")["Deployment"]
    images |= {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1 and "2.60.0" in images.pop()
    dockerfile = (CLUSTERS / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-\S+$", dockerfile, re.M)
    assert "torch==2.14.1 torchvision==0.29.1" in dockerfile
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        sources = [w for w in line.split() if not w.startswith("--")][:-1]
        assert all((ROOT / s).exists() for s in sources), line


def test_the_rayjob_resumes_on_retries_and_cleans_up():
    spec = _one(KUBERAY / "rayjob.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    assert "--resume" in shlex.split(spec["entrypoint"])
    assert "&&" not in spec["entrypoint"] and ";" not in spec["entrypoint"]  # pasted into the submitter's shell line


def test_the_mlflow_service_is_the_address_the_ray_pods_use_and_mlflow_accepts_it():
    mlflow = _kinds(KUBERAY / "mlflow.yaml")
    service, deployment = mlflow["Service"], mlflow["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert mlflow["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"

    job_env = yaml.safe_load(_one(KUBERAY / "rayjob.yaml")["spec"]["runtimeEnvYAML"])
    cluster_env = [
        {e["name"]: e["value"] for e in pod["containers"][0].get("env", [])}
        for pod in _pod_specs(_ray_cluster_specs()["raycluster"])
    ]
    assert job_env["env_vars"]["MLFLOW_TRACKING_URI"] == url
    assert all(env["MLFLOW_TRACKING_URI"] == url for env in cluster_env)

    (allowed,) = [
        a.split("=", 1)[1]
        for a in deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        if a.startswith("--allowed-hosts=")
    ]
    allowed = allowed.split(",")
    assert is_allowed_host_header(allowed, urlsplit(url).netloc)  # the Ray pods
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "mlflow.example.com")


def test_the_rayjob_runtime_env_merges_with_the_sweep_drivers():
    # The driver calls ray.init(runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": ...}}); Ray merges it with the
    # job's runtime env the way ray/_private/worker.py does, refusing overlapping keys without the override.
    job_env = yaml.safe_load(_one(KUBERAY / "rayjob.yaml")["spec"]["runtimeEnvYAML"])
    driver_env = {"env_vars": {"MLFLOW_TRACKING_URI": job_env["env_vars"]["MLFLOW_TRACKING_URI"]}}
    override = job_env["env_vars"].get("RAY_OVERRIDE_JOB_RUNTIME_ENV") == "1"
    merged = _merge_runtime_env(job_env, driver_env, override=override)
    assert merged is not None, "Ray would refuse the job's runtime env next to the driver's"
    assert merged["env_vars"]["MLFLOW_TRACKING_URI"] == job_env["env_vars"]["MLFLOW_TRACKING_URI"]


# ------------------------------------------------------------------ SLURM
def test_the_sbatch_script_is_valid_bash_and_requeues():
    assert not _bash_syntax_error(SBATCH.read_text())
    assert re.search(r"^#SBATCH --requeue$", SBATCH.read_text(), re.M)


STUBS = {
    # srun: drop its options, run the command (here, on one "node").
    "srun": '#!/bin/bash\nprintf "%s\\n" "$@" > "$STUB_OUT/srun.args"\n'
    'while [[ $# -gt 0 && $1 == -* ]]; do shift; done\nexec "$@"\n',
    # ray symmetric-run: record its arguments, run what follows `--` (what it does on the head node).
    "ray": '#!/bin/bash\nprintf "%s\\n" "$@" > "$STUB_OUT/ray.args"\n'
    'while [[ $# -gt 0 && $1 != -- ]]; do shift; done\nshift\nexec "$@"\n',
    # mgm-studies: record what the sweep would get, and ask the tracking server something, as a trial would.
    "mgm-studies": f"#!{sys.executable}\n"
    "import json, os, sys, urllib.request\n"
    "keys = ['MLFLOW_TRACKING_URI', 'RAY_ADDRESS', 'RAY_AUTH_MODE', 'RAY_AUTH_TOKEN']\n"
    "seen = {'argv': sys.argv[1:], 'env': {k: os.environ.get(k) for k in keys}}\n"
    "if os.environ.get('STUB_PROBE'):\n"
    "    url = os.environ['MLFLOW_TRACKING_URI'] + '/api/2.0/mlflow/experiments/search?max_results=1'\n"
    "    seen['status'] = urllib.request.urlopen(url, timeout=10).status\n"
    "json.dump(seen, open(os.environ['STUB_OUT'] + '/sweep.json', 'w'))\n",
}


def _run_sbatch(tmp_path: Path, **env: str) -> tuple[dict, list[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "home").mkdir()
    environment = {
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path / "home"),
        "STUB_OUT": str(tmp_path),
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_GPUS_PER_TASK": "1",
        "MGM_SHARED": str(tmp_path / "shared"),
        "MGM_HEAD_IP": "127.0.0.1",
        **env,
    }
    job = subprocess.Popen(
        ["bash", str(SBATCH), "search_spaces/demo.yaml", "--max-concurrent", "2"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = job.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # the script and the MLflow server it started
        raise
    assert job.returncode == 0, output
    seen = json.loads((tmp_path / "sweep.json").read_text())
    return seen, (tmp_path / "srun.args").read_text().split(), (tmp_path / "ray.args").read_text().split()


def test_the_sbatch_script_starts_mlflow_and_ray_around_the_sweep(tmp_path):
    port = _free_port()
    seen, srun, ray = _run_sbatch(tmp_path, MGM_MLFLOW_PORT=str(port), STUB_PROBE="1")

    args = build_parser().parse_args(seen["argv"])
    assert (args.verb, args.space, args.resume) == ("sweep", str(ROOT / "search_spaces/demo.yaml"), True)
    assert (args.storage, args.max_concurrent) == (str(tmp_path / "shared" / "ray_results"), 2)
    env = seen["env"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{port}" and seen["status"] == 200
    assert env["RAY_ADDRESS"] == "127.0.0.1:6379"
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64
    assert {"--cpus-per-task=2", "--gpus-per-task=1", "--kill-on-bad-exit=1"} <= set(srun)
    assert ray[:7] == ["symmetric-run", "--address", "127.0.0.1:6379", "--min-nodes", "2", "--num-cpus", "2"]
    assert (tmp_path / "shared" / "mlflow" / "mlflow.db").is_file()

    deadline = time.monotonic() + 30  # the script's EXIT trap stops the server
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, "the MLflow server outlived the job"
        time.sleep(0.5)


def test_the_sbatch_script_uses_a_site_mlflow_server_when_given_one(tmp_path):
    seen, _, _ = _run_sbatch(tmp_path, MLFLOW_TRACKING_URI="http://mlflow.site.example:5000")
    assert seen["env"]["MLFLOW_TRACKING_URI"] == "http://mlflow.site.example:5000"
    assert not (tmp_path / "shared" / "mlflow" / "server.log").exists()


# ------------------------------------------------------------------ every `mgm-studies` command line
# A command starts at a standalone `mgm-studies VERB` (not a path like ~/mgm-studies or a name like
# mgm-studies-mlflow) and ends at the end of the line, a shell separator, an inline-code backtick or a comment.
COMMAND = re.compile(r"(?<![\w./~:-])mgm-studies[ \t]+[a-z][^\n;&|`]*")


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for path in sorted(p for p in CLUSTERS.rglob("*") if p.is_file()):
        text = re.sub(r"\\\n\s*", " ", path.read_text())  # shell line continuations
        texts = [text]
        if path.suffix in {".yaml", ".yml"}:  # folded YAML scalars: their parsed strings too
            texts += [s for doc in _docs(path) for s in _strings(doc)]
        for chunk in texts:
            for match in COMMAND.finditer(chunk):
                line = re.sub(r"\s+#.*$", "", match.group(0)).strip()
                for quote in "\"'":  # the closing quote of a quoted YAML or shell string around the command
                    if line.count(quote) % 2:
                        line = line[: line.rindex(quote)] + line[line.rindex(quote) + 1 :]
                found.append((str(path.relative_to(CLUSTERS)), line.strip()))
    return sorted(set(found))


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _shell_words(line: str) -> list[str]:
    """The words the shell would pass, with variables replaced: $SPACE by a shipped space, "$@" by nothing, any
    other variable by a path."""
    words = []
    for word in shlex.split(line):
        if word == "$@":
            continue
        word = re.sub(r"\$\{?SPACE\}?", "search_spaces/demo.yaml", word)
        words.append(re.sub(r"\$\{?\w+\}?", "/shared", word))
    return words


COMMAND_LINES = _command_lines()


def test_commands_are_found_where_sweeps_are_started():
    files = {file for file, _ in COMMAND_LINES}
    assert {"kuberay/rayjob.yaml", "slurm/sweep.sbatch", "README.md"} <= files
    assert "mgm-studies" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize(("file", "line"), COMMAND_LINES, ids=[f"{f}: {line}" for f, line in COMMAND_LINES])
def test_every_command_line_parses_and_names_a_shipped_space(file, line):
    words = _shell_words(line)
    try:
        args = build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"{file}: `{line}` is not a valid mgm-studies command")
    assert callable(args.handler), f"{file}: `{line}` names no verb"
    if args.verb == "sweep":  # on a cluster: rerunnable, and results on shared storage
        assert args.resume and args.storage, f"{file}: `{line}` needs --resume and --storage"
    for word in words:
        if (at := word.find("search_spaces/")) >= 0:
            space = word[at:]
            assert space in SHIPPED_SPACES, f"{file}: {space} is not a shipped search space"
            assert (ROOT / space).is_file(), f"{file}: {space} does not exist"
