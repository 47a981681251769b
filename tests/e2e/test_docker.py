"""The Docker path, run for real in a private engine (tests/e2e/docker_harness.py): the project's image
built from its Dockerfile unchanged, run with --env-file from .env.example until healthy, and the
compose stack from the project's compose file: backup, auto-restore, stop, start, down.

Opt-in: ``pytest -m system`` (it changes the machine: installs Debian packages, starts a private dockerd, debootstraps a base image).  Needs root; CI runs it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import docker_harness as harness
import numpy as np
import pytest
import requests
from conftest import ROOT, free_port, wait_for


def wait(predicate, timeout, what):
    return wait_for(predicate, timeout=timeout, interval=1.0, what=what)


pytestmark = pytest.mark.system
IMAGE = "chroma-backup:test"
IMAGE_LIMIT_BYTES = 300 * 1000 * 1000


@pytest.fixture(scope="module")
def engine():
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the Docker test starts dockerd and needs root")
        pytest.skip("the Docker test starts dockerd and needs root")
    harness.install_tools()
    bridges = harness._bridges()
    with harness.Engine() as running:
        running.load_or_build()
        yield running
    root = str(running.root)
    assert not Path(root).exists() and not harness._mounts_under(Path(root)), "the engine left files or mounts"
    assert harness._bridges() <= bridges, "the engine left a bridge behind"


@pytest.fixture(scope="module")
def image(engine):
    # The project's Dockerfile, unchanged; --network host only because this private engine has no
    # route to the package index through its bridge.
    engine.docker("build", "--network", "host", "-t", IMAGE, str(ROOT), timeout=1800)
    return IMAGE


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return dict(pairs)


def health(engine, container: str) -> str:
    return engine.docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).stdout.strip()


def test_the_image_is_lean_runs_as_non_root_and_carries_no_secrets(engine, image):
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(f"image size: {size / 1e6:.0f} MB")
    assert size < IMAGE_LIMIT_BYTES, f"{size / 1e6:.0f} MB"
    assert engine.docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip() == "10001"
    listing = engine.docker("run", "--rm", "--entrypoint", "sh", image, "-c", "ls -a /app; pip list 2>/dev/null").stdout
    for unwanted in (".env", ".git", ".venv", "data/postgres", "bench", "tests", "pgserver"):
        assert unwanted not in listing.split(), unwanted
    assert "chromadb" not in listing  # the daemon talks HTTP itself: no Chroma package at all


def test_the_image_becomes_healthy_with_an_env_file_made_from_env_example(engine, image, tmp_path):
    net = "cbt" + uuid.uuid4().hex[:6]
    values = env_example()
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.example").read_text())  # as an operator would: cp .env.example .env
    engine.docker("network", "create", net)
    started = []
    try:
        started.append(
            engine.docker(
                "run",
                "-d",
                "--network",
                net,
                "--network-alias",
                "postgres",
                "-e",
                f"POSTGRES_PASSWORD={values['DB_PASSWORD']}",
                "-e",
                f"POSTGRES_DB={values['DB_NAME']}",
                "postgres:16",
            ).stdout.strip()
        )
        started.append(
            engine.docker(
                "run", "-d", "--network", net, "--network-alias", "chroma", "chromadb/chroma:1.5.9"
            ).stdout.strip()
        )
        app = engine.docker("run", "-d", "--network", net, "--env-file", str(env_file), image).stdout.strip()
        started.append(app)
        wait(lambda: health(engine, app) == "healthy", 150, "the container to become healthy")
        logs = engine.docker("logs", app).stderr + engine.docker("logs", app).stdout
        assert "daemon started" in logs and "Traceback" not in logs
        assert values["DB_PASSWORD"] not in logs
    finally:
        for container in started:
            engine.docker("rm", "-f", "-v", container, check=False)
        engine.docker("network", "rm", net, check=False)


def test_the_compose_stack_backs_up_recovers_stops_cleanly_and_keeps_its_catalog(engine, image, tmp_path, request):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    project = "cbt" + uuid.uuid4().hex[:6]
    workdir = tmp_path / "project"
    workdir.mkdir()
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore"):
        shutil.copy(ROOT / name, workdir / name)
    shutil.copytree(ROOT / "deploy", workdir / "deploy")
    chroma_port, http_port = free_port(), free_port()
    # The operator's .env: .env.example with free host ports and a fast schedule for the test.
    (workdir / ".env").write_text(
        (ROOT / ".env.example").read_text()
        + "\n".join(
            [
                f"CHROMA_PUBLISHED_PORT={chroma_port}",
                f"HTTP_PORT={http_port}",
                "EXPORT_INTERVAL_MINUTES=0.1",
                "HEALTH_CHECK_INTERVAL_MINUTES=0.1",
                "HEALTH_CONFIRM_SECONDS=1",
                "",
            ]
        )
    )
    # The app service's image is the one built from the Dockerfile above (compose v1 names it so).
    engine.docker("tag", image, f"{project}_app")
    request.addfinalizer(lambda: engine.compose(workdir, project, "down", "-v", check=False))
    engine.compose(workdir, project, "up", "-d", "--no-build")

    app = engine.compose(workdir, project, "ps", "-q", "app").stdout.strip()
    wait(lambda: health(engine, app) == "healthy", 150, "the app to become healthy")
    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma_port, settings=ChromaSettings(anonymized_telemetry=False)
    )
    name = "docs" + uuid.uuid4().hex[:6]
    col = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    col.add(ids=[f"d{i}" for i in range(300)], embeddings=np.random.default_rng(3).normal(size=(300, 16)).astype("f4"))

    api = f"http://127.0.0.1:{http_port}"

    def snapshots():
        try:
            return [
                s
                for s in requests.get(f"{api}/api/v1/collections/{name}/snapshots", timeout=5).json()
                if s.get("status") == "complete"
            ]
        except (requests.RequestException, ValueError):
            return []

    first = wait(snapshots, 120, "a backup of the new collection")
    assert first[0]["records"] == 300

    client.delete_collection(name)
    wait(lambda: name + "_restored" in [c.name for c in client.list_collections()], 120, "the automatic restore")
    restored = client.get_collection(name + "_restored", embedding_function=None)
    assert restored.count() == 300

    started = time.monotonic()
    engine.compose(workdir, project, "stop", "app")
    assert time.monotonic() - started < 10
    assert engine.docker("inspect", "-f", "{{.State.ExitCode}}", app).stdout.strip() == "0"
    logs = engine.docker("logs", app).stdout + engine.docker("logs", app).stderr
    assert "daemon stopped" in logs and env_example()["DB_PASSWORD"] not in logs

    engine.compose(workdir, project, "up", "-d", "--no-build")
    wait(lambda: health(engine, app) == "healthy", 150, "the app to be healthy again")
    again = wait(snapshots, 60, "the catalog after the restart")
    assert {s["snapshot_id"] for s in first} <= {s["snapshot_id"] for s in again}  # the named volume kept it

    engine.compose(workdir, project, "down", "-v")
    volumes = engine.docker("volume", "ls", "-q").stdout.split()
    assert not [v for v in volumes if v.startswith(project)]
    assert engine.docker("ps", "-a", "-q", "--filter", f"name={project}").stdout.strip() == ""
