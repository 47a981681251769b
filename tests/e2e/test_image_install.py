"""The daemon works with nothing but the image's dependencies (requirements-image.txt): no chromadb
package at all (it talks Chroma's HTTP API itself) and no pgserver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_collection

CLIENT_VENV = Path(os.environ.get("CHROMA_IMAGE_VENV", Path.home() / ".cache" / "chroma-backup-image-venv"))


def client_python() -> Path:
    """A virtual environment with requirements-image.txt (built once, cached outside the repo)."""
    python = CLIENT_VENV / "bin" / "python"
    stamp = CLIENT_VENV / "requirements.stamp"
    wanted = (ROOT / "requirements-image.txt").read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(CLIENT_VENV)], check=True, capture_output=True)
    install = subprocess.run(
        [
            str(CLIENT_VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements-image.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    stamp.write_text(wanted)
    return python


def run_with(python, args, env, cwd):
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [str(python), str(ROOT / "main.py"), *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def http_only():
    python = client_python()
    packages = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(packages.stdout)}
    assert not names & {"chromadb", "chromadb-client", "pgserver"}, names
    return python


def test_the_image_install_backs_up_checks_restores_and_verifies(http_only, env, tmp_path, client, name):
    make_collection(client, name, 300, space="cosine")
    backup = run_with(http_only, ["backup", "--collection", name, "--json"], env, tmp_path)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)[0]["records"] == 300
    assert run_with(http_only, ["health", "--collection", name], env, tmp_path).returncode == 0
    restore = run_with(http_only, ["restore", "--collection", name, "--json"], env, tmp_path)
    assert restore.returncode == 0 and json.loads(restore.stdout)["verified"], restore.stderr
    verify = run_with(http_only, ["verify", "--collection", name, "--target", name + "_restored"], env, tmp_path)
    assert verify.returncode == 0, verify.stdout


def test_without_pgserver_a_missing_db_host_is_a_clear_configuration_error(http_only, chroma_server, tmp_path):
    result = run_with(http_only, ["snapshots"], {"CHROMADB_PORT": str(chroma_server.port)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: DB_HOST: expected a PostgreSQL host (or DATABASE_URL): this installation has no embedded "
        "PostgreSQL (pgserver is not installed)"
    )
