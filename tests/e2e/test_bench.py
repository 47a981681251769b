"""The benchmark harness runs end to end on a tiny collection (the targets are checked by running
it for real, not here)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_smoke_produces_every_measurement_and_ratio(database_url, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--records",
            "300",
            "--dim",
            "8",
            "--repeat",
            "1",
            "--storage-rounds",
            "2",
            "--database-url",
            database_url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    for key in (
        "raw_read",
        "backup_full",
        "backup_nochange",
        "verify",
        "deep_check",
        "backup_churn",
        "raw_add",
        "restore",
    ):
        assert data[key]["records"] > 250 and data[key]["median_seconds"] > 0 and data[key]["peak_rss_mb"] > 0
    assert data["raw_read"]["records"] == data["backup_full"]["records"] == 300
    assert data["backup_full"]["bytes_written"] > 0
    assert set(data["ratios"]) >= {
        "backup_full/raw_read",
        "backup_nochange/raw_read",
        "restore/raw_add",
        "storage_2/storage_1",
        "nochange_bytes/full_bytes",
    }
    assert "backup_full/raw_read" in result.stdout
    assert (tmp_path / "cache" / "chroma-300x8-s42" / "chroma.sqlite3").exists()
    assert data["backup_full_baseline"]["records"] == 60 and data["ratios"]["backup_rss_growth_mb"] is not None
    assert data["build"]["build_seconds"] > 0 and data["build"]["records"] == 300


def test_bench_scale_mode_measures_what_grows_with_the_collection(database_url, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--records",
            "400",
            "--dim",
            "8",
            "--repeat",
            "1",
            "--scale",
            "--database-url",
            database_url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    for key in ("raw_read", "backup_full", "backup_nochange", "verify"):
        assert data[key]["records"] == 400 and data[key]["median_seconds"] > 0
    assert "restore" not in data and "storage" not in data
    assert data["backup_full_baseline"]["records"] == 40
    assert set(data["ratios"]) == {
        "backup_full/raw_read",
        "backup_nochange/raw_read",
        "verify/raw_read",
        "deep_check/backup_nochange",
        "nochange_bytes/full_bytes",
        "backup_rss_growth_mb",
        "backup_full/backup_full_baseline",
    }
    assert "backup_full/backup_full_baseline" in result.stdout and "<= 11.0" in result.stdout


def test_bench_server_mode_measures_a_whole_server_restore_against_chromas_own_writes(database_url, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--server",
            "--collections",
            "3",
            "--records",
            "300",
            "--dim",
            "8",
            "--repeat",
            "1",
            "--parallel",
            "1,2",
            "--database-url",
            database_url,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert [c["records"] for c in data["layout"]] == [50, 100, 150]
    assert {c["space"] for c in data["layout"]} == {"l2", "cosine", "ip"}
    for key in ("backup_all", "raw_add_p1", "restore_all_p1", "raw_add_p2", "restore_all_p2"):
        assert data[key]["records"] == 300 and data[key]["median_seconds"] > 0, key
    assert set(data["ratios"]) >= {"restore_all_p2/raw_add_p2", "raw_add_p2/raw_add_p1", "rto_p2_seconds_per_million"}
    assert "rto_p1_seconds_per_million" in result.stdout
