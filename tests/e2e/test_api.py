"""The daemon's HTTP server against a running daemon: API behaviour, auth, the generated OpenAPI
document (schemathesis), and the status page rendered in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import requests
from conftest import DaemonProcess, free_port, make_collection, wait_for

TOKEN = "api-s3cret-token-123"


class Api:
    def __init__(self, port: int, daemon: DaemonProcess):
        self.url = f"http://127.0.0.1:{port}"
        self.daemon = daemon

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=10, **kw)

    def post(self, path, json=None, token=TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, json=json, headers=headers, timeout=10)

    def delete(self, path, token=TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.delete(self.url + path, headers=headers, timeout=10)

    def finish(self, task_id, timeout=120):
        def done():
            task = self.get(f"/api/v1/tasks/{task_id}").json()
            return task if task["state"] in ("complete", "failed", "cancelled") else None

        return wait_for(done, timeout=timeout, what=f"task {task_id}")


def start_api(env, tmp_path, extra=None) -> Api:
    port = free_port()
    daemon = DaemonProcess(
        {
            **env,
            "HTTP_PORT": str(port),
            "API_TOKEN": TOKEN,
            "EXPORT_INTERVAL_MINUTES": "60",
            "HEALTH_CHECK_INTERVAL_MINUTES": "60",
            **(extra or {}),
        },
        tmp_path,
    )
    api = Api(port, daemon)

    def up():
        try:
            return api.get("/healthz").status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, what="the HTTP server")
    return api


@pytest.fixture
def api(env, tmp_path, client, name):
    make_collection(client, name, 50)
    running = start_api({**env, "CHROMA_COLLECTION_NAME": name}, tmp_path)
    wait_for(
        lambda: any(r["last_snapshot"] for r in running.get("/api/v1/collections").json()), what="the backup at start"
    )
    wait_for(
        lambda: all(r["status"] for r in running.get("/api/v1/collections").json()), what="the health check at start"
    )
    wait_for(lambda: "job=backup done" in running.daemon.output(), what="the backup job at start (and its prune)")
    yield running
    running.daemon.kill()
    assert TOKEN not in running.daemon.output()
    assert "Traceback" not in running.daemon.output()


def test_read_only_endpoints_describe_the_collection(api, name):
    [row] = api.get("/api/v1/collections").json()
    assert (row["collection"], row["status"], row["records"]) == (name, "ok", 50)
    assert row["since"] and row["next_backup"] and row["next_check"]
    snaps = api.get(f"/api/v1/collections/{name}/snapshots").json()
    assert snaps[0]["records"] == 50 and snaps[0]["health"] == "ok"
    assert api.get("/api/v1/restores").json() == []
    assert api.get("/api/v1/health/history", params={"collection": name}).json()[0]["status"] == "ok"
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and "chroma_backup_last_success_timestamp_seconds" in metrics.text


def test_posts_need_the_bearer_token(api):
    missing = api.post("/api/v1/backups", token=None)
    assert missing.status_code == 401 and missing.json() == {
        "error": "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)"
    }
    assert api.post("/api/v1/backups", token="wrong").status_code == 401


def test_posts_are_refused_while_api_token_is_empty(env, tmp_path, client, name):
    make_collection(client, name, 5)
    api = start_api({**env, "CHROMA_COLLECTION_NAME": name}, tmp_path, {"API_TOKEN": ""})
    try:
        refused = api.post("/api/v1/backups")
        assert refused.status_code == 403
        assert refused.json() == {"error": "POST endpoints are disabled: set API_TOKEN to enable them"}
    finally:
        api.daemon.kill()


def test_a_backup_over_http_runs_as_a_task_and_its_snapshot_is_listed(api, name):
    before = len(api.get(f"/api/v1/collections/{name}/snapshots").json())
    accepted = api.post("/api/v1/backups", json={"collections": [name]})
    assert accepted.status_code == 202
    task = api.finish(accepted.json()["task_id"])
    assert task["state"] == "complete", task["error"]
    assert task["result"][0]["status"] == "complete" and task["records_done"] == 50
    snaps = api.get(f"/api/v1/collections/{name}/snapshots").json()
    assert len(snaps) == before + 1 and snaps[0]["snapshot_id"] == task["result"][0]["snapshot_id"]


def test_a_restore_over_http_into_a_new_name_is_verified(api, client, name):
    accepted = api.post("/api/v1/restores", json={"collection": name, "target": name + "-http"})
    assert accepted.status_code == 202, accepted.text
    task = api.finish(accepted.json()["task_id"])
    assert task["state"] == "complete", task["error"]
    assert task["result"]["verified"] is True and task["records_total"] == 50 and task["records_done"] == 50
    assert client.get_collection(name + "-http", embedding_function=None).count() == 50
    assert api.get("/api/v1/restores").json()[0]["target"] == name + "-http"


def test_a_whole_server_restore_over_http_is_a_task_with_its_plan_and_outcomes(api, client, name):
    client.delete_collection(name)
    accepted = api.post("/api/v1/server-restores", json={"collections": [name]})
    assert accepted.status_code == 202, accepted.text
    task = api.finish(accepted.json()["task_id"])
    assert task["state"] == "complete", task["error"]
    assert task["result"]["summary"]["restored"] == 1 and task["records_total"] == 50 and task["records_done"] == 50
    assert [(c["collection"], c["outcome"]) for c in task["result"]["collections"]] == [(name, "restored")]
    assert client.get_collection(name, embedding_function=None).count() == 50

    again = api.finish(
        api.post("/api/v1/server-restores", json={"collections": [name], "dry_run": True}).json()["task_id"]
    )
    assert again["state"] == "complete" and again["result"]["collections"][0]["action"] == "already_restored"
    refused = api.post("/api/v1/server-restores", json={"overwrite": True, "skip_existing": True})
    assert refused.status_code == 400 and refused.json() == {"error": "give overwrite or skip_existing, not both"}


def test_diff_over_http_streams_every_change_and_the_summary(api, client, name):
    collection = client.get_collection(name, embedding_function=None)
    collection.delete(ids=["r1"])
    collection.update(ids=["r2"], metadatas=[{"i": -2}])
    answer = api.get(f"/api/v1/collections/{name}/diff")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted((c["id"], c["change"], c["parts"]) for c in body["changes"]) == [
        ("r1", "deleted", []),
        ("r2", "updated", ["metadata"]),
    ]
    assert (body["summary"]["deleted"], body["summary"]["updated"], body["summary"]["unchanged"]) == (1, 1, 48)
    summary_only = api.get(f"/api/v1/collections/{name}/diff", params={"ids": "false"}).json()
    assert summary_only["changes"] == [] and summary_only["summary"]["deleted"] == 1
    assert api.get("/api/v1/collections/nosuch/diff").status_code == 404
    assert api.get(f"/api/v1/collections/{name}/diff", params={"to": "x"}).status_code == 422


def test_a_restore_of_a_busy_collection_answers_409(api, settings, name):
    from chroma_backup.postgres import Database

    holder = Database(settings)
    try:
        with holder.locks.collection_lock("default_tenant", "default_database", name):
            busy = api.post("/api/v1/restores", json={"collection": name, "target": name + "-busy"})
    finally:
        holder.close()
    assert busy.status_code == 409
    assert busy.json() == {"error": f"collection '{name}' is busy: another backup or restore of it is running"}


def test_errors_are_json_with_the_right_status(api, name):
    assert api.get("/api/v1/tasks/nope").status_code == 404
    missing = api.post("/api/v1/restores", json={"collection": "nosuch" + name})
    assert missing.status_code == 404 and missing.json()["error"].startswith("no backups of collection")
    bad = api.post("/api/v1/restores", json={"collection": name, "snapshot": "x"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("invalid request: body.snapshot")
    too_small = api.get("/api/v1/restores", params={"limit": 0})
    assert too_small.status_code == 422 and too_small.json()["error"].startswith("invalid request: query.limit")


def test_the_generated_openapi_document_holds_under_schemathesis(api, tmp_path):
    schemathesis = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert schemathesis, "schemathesis is in requirements-dev.txt"
    for headers in ([], ["-H", "Authorization: Bearer wrong-token"]):
        result = subprocess.run(
            [
                schemathesis,
                "run",
                api.url + "/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance",
                "--max-examples",
                "15",
                "--request-timeout",
                "10",
                *headers,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-4000:]
        assert TOKEN not in result.stdout


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None and not os.environ.get("CI"), reason="Debian's chromium is not installed")
def test_the_status_page_renders_each_collection_and_its_health_in_chromium(env, tmp_path, client, name):
    from conftest import run_cli

    assert chromium(), ".ci/run installs Debian's chromium"
    gone = name + "-gone"
    make_collection(client, name, 20)
    make_collection(client, gone, 5)
    assert run_cli(["backup", "--collection", gone], env, cwd=tmp_path).returncode == 0
    client.delete_collection(gone)
    api = start_api({**env, "CHROMA_COLLECTION_NAME": f"{name},{gone}", "AUTO_RESTORE": "false"}, tmp_path)
    try:
        wait_for(lambda: all(r["status"] for r in api.get("/api/v1/collections").json()), what="the health check")
        result = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--dump-dom",
                f"--user-data-dir={tmp_path / 'chromium'}",
                api.url + "/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        dom = result.stdout
        assert f'data-collection="{name}" data-status="ok"' in dom, dom[:3000]
        assert f'data-collection="{gone}" data-status="missing"' in dom
        assert '<span class="badge ok">ok</span>' in dom and '<span class="badge missing">missing</span>' in dom
        assert 'href="/api/v1/collections"' in dom and 'http-equiv="refresh"' in dom
    finally:
        api.daemon.kill()
