"""Deployment files, checked statically (no Docker engine here) and kept in line with the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from chroma_backup.settings import documented

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SETTINGS = documented()
README = (ROOT / "README.md").read_text()


def env_example_values() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_every_setting_is_declared_once_with_its_variable_default_and_help():
    names = [entry.env for entry in SETTINGS]
    assert len(names) == len(set(names))
    for entry in SETTINGS:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", entry.env) and entry.help and not entry.help.endswith(".")


def test_env_example_documents_every_setting_with_its_default():
    values = env_example_values()
    assert set(values) == {entry.env for entry in SETTINGS}
    for entry in SETTINGS:
        assert f"(default: {entry.default or 'empty'})\n{entry.env}=" in ENV_EXAMPLE, entry.env


def test_readme_table_lists_every_setting():
    for entry in SETTINGS:
        assert re.search(rf"^\| `{entry.env}` \| `?{re.escape(entry.default)}`? *\|", README, re.M), entry.env


def test_the_documented_defaults_are_the_defaults():
    from chroma_backup.settings import Settings, load_settings

    loaded = load_settings({}, env_file=None)
    assert loaded == Settings(http_host=loaded.http_host)  # the parsers' defaults are the fields'


def test_env_example_matches_the_compose_service_names():
    values = env_example_values()
    assert values["DB_HOST"] == "postgres" and "postgres" in COMPOSE["services"]
    assert values["CHROMADB_HOST"] == "chroma" and "chroma" in COMPOSE["services"]
    assert values["CHROMADB_PORT"] == "8000"


def test_compose_postgres_service():
    pg = COMPOSE["services"]["postgres"]
    assert pg["image"] == "postgres:16"
    assert any(v.split(":")[0] in COMPOSE["volumes"] and v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_compose_chroma_matches_the_client_version():
    pinned = re.search(r"^chromadb==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    chroma = COMPOSE["services"]["chroma"]
    assert chroma["image"] == f"chromadb/chroma:{pinned}"
    assert any(v.endswith(":/data") and v.split(":")[0] in COMPOSE["volumes"] for v in chroma["volumes"])
    assert "/api/v2/heartbeat" in " ".join(chroma["healthcheck"]["test"])


def test_compose_app_service():
    app = COMPOSE["services"]["app"]
    assert app["build"] == "."
    assert app["env_file"] == ".env"
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "chroma": {"condition": "service_healthy"},
    }
    assert app["restart"] == "unless-stopped"
    grace = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert grace and int(grace.group(1)) > 10  # the daemon's shutdown grace is 8 s after the current batch
    assert app["ports"] == ["127.0.0.1:${HTTP_PORT:-9464}:${HTTP_PORT:-9464}"]
    assert env_example_values()["HTTP_PORT"] == "9464"
    assert app["environment"]["HTTP_HOST"] == "0.0.0.0"
    assert "HEARTBEAT_FILE" not in app["environment"]  # the image's HEALTHCHECK must follow the daemon's default


def test_compose_publishes_every_port_on_loopback_only():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_compose_monitoring_profile_is_pinned_and_loads_the_bundle():
    services = COMPOSE["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        _, _, tag = services[name]["image"].partition(":")
        assert tag and tag != "latest" and re.match(r"v?\d+\.\d+\.\d+$", tag), services[name]["image"]
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in (
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/provisioning",
        "deploy/grafana/dashboards",
    ):
        assert "./" + path in mounts and (ROOT / path).exists()
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["app:9464"]


def test_the_grafana_dashboard_only_uses_metrics_the_daemon_exports():
    import json

    from chroma_backup.service.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {name + "_total" for name in exported}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/chroma-backup.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"chroma_backup_\w+", target["expr"])
    }
    assert used and used <= exported, used - exported
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert set(re.findall(r"chroma_backup_\w+", rules)) <= exported


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool (Debian package prometheus) not installed",
)
def test_the_alert_rules_pass_promtool_unit_tests():
    assert shutil.which("promtool"), ".ci/run installs Debian's prometheus package"
    check = subprocess.run(
        ["promtool", "check", "rules", "alerts.yml"], cwd=ROOT / "deploy/prometheus", capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=ROOT / "deploy/prometheus", capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_image_healthcheck_follows_the_daemons_own_heartbeat_default(tmp_path):
    command = re.search(r'HEALTHCHECK .*\n\s+CMD \["python", "-c", "(.*)"\]', DOCKERFILE).group(1)
    (tmp_path / "heartbeat").write_text("1\n")
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path), "HEARTBEAT_FILE": ""}  # as --env-file .env.example
    assert subprocess.run([sys.executable, "-c", command], env=env).returncode == 0
    os.utime(tmp_path / "heartbeat", (time.time() - 300, time.time() - 300))
    assert subprocess.run([sys.executable, "-c", command], env=env).returncode == 1


def test_dockerfile():
    lines = [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copy_req = lines.index("COPY requirements-image.txt ./")
    install = lines.index("RUN pip install --no-compile -r requirements-image.txt")
    copy_code = lines.index("COPY --chown=app:app main.py ./")
    assert "COPY --chown=app:app chroma_backup ./chroma_backup" in lines
    assert copy_req < install < copy_code  # dependencies in their own cached layer
    assert "USER app" in lines and lines.index("USER app") > install
    assert 'ENTRYPOINT ["python", "main.py"]' in lines and 'CMD ["run"]' in lines
    assert "PYTHONUNBUFFERED=1" in DOCKERFILE
    assert re.search(r"HEALTHCHECK .*\n\s+CMD .*HEARTBEAT_FILE", DOCKERFILE)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_docker_compose_config_is_valid(tmp_path):
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    for profile in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            ["docker-compose", "-f", "docker-compose.yml", *profile, "config", "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


def test_the_demo_runs_the_whole_loop_in_under_a_minute(tmp_path):
    started = time.monotonic()
    result = run_cli(["demo", "--records", "2000"], {}, cwd=tmp_path, timeout=180)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status=missing, recovery=restored -> demo_docs_restored" in result.stdout
    assert "identical=True, 2010 records, space cosine" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].endswith("verified identical")
    workdir = re.search(r"working in (\S+)", result.stdout).group(1)
    assert not Path(workdir).exists()
    assert seconds < 60
