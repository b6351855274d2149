"""``kvwatch dashboards push`` and ``export``.

No Grafana server can be installed on this machine, so the push runs against
a local HTTP server that answers the Grafana HTTP API calls it makes the way
Grafana documents them (folders, dashboards/db, datasources) and records them.
The client under test is the real grafana-client library.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent import __version__
from tests.support.harness import REPO, free_port, kvwatch
from tests.support.stand_ins import TOKEN, FakeGrafana


@pytest.fixture
def grafana():
    fake = FakeGrafana()
    yield fake
    fake.close()


def dashboards(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return kvwatch("dashboards", *args, env=env, timeout=60)


def token_file(tmp_path: Path, token: str = TOKEN) -> str:
    path = tmp_path / "grafana-token"
    path.write_text(token + "\n")
    return str(path)


def shipped(name: str = "kvwatch-overview.json") -> dict:
    return json.loads((REPO / "dashboards" / name).read_text())


def test_push_creates_the_folder_once_and_overwrites_by_uid(grafana: FakeGrafana, tmp_path: Path) -> None:
    for _ in range(2):
        result = dashboards("push", "--grafana-url", grafana.url, "--token-file", token_file(tmp_path))
        assert result.returncode == 0, result.stderr
    folder_posts = [c for c in grafana.calls if c[:2] == ("POST", "/api/folders")]
    assert folder_posts == [("POST", "/api/folders", {"title": "kvwatch", "uid": "kvwatch"})]
    saves = [c[2] for c in grafana.calls if c[:2] == ("POST", "/api/dashboards/db")]
    assert len(saves) == 4  # both dashboards, twice
    for save in saves:
        assert save["overwrite"] is True and save["folderUid"] == "kvwatch"
        assert save["message"] == f"kvwatch {__version__}"
        # As shipped: uid fixed, no id, datasource a variable.
        assert save["dashboard"] == shipped(save["dashboard"]["uid"] + ".json")
    for uid in ("kvwatch-overview", "kvwatch-fleet"):
        stored = grafana.dashboards[uid]
        assert stored["version"] == 2 and stored["folderUid"] == "kvwatch"
        assert uid in result.stdout


def test_push_into_an_existing_folder_by_title(grafana: FakeGrafana, tmp_path: Path) -> None:
    result = dashboards(
        "push", "--grafana-url", grafana.url, "--token-file", token_file(tmp_path), "--folder", "Other team"
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in grafana.calls if c[:2] == ("POST", "/api/folders")]
    assert grafana.dashboards["kvwatch-overview"]["folderUid"] == "general-x"


def test_push_with_the_datasource_creates_then_updates_it(grafana: FakeGrafana, tmp_path: Path) -> None:
    args = ["push", "--grafana-url", grafana.url, "--token-file", token_file(tmp_path)]
    args += ["--prometheus-url", "http://prometheus:9090", "--trace-datasource", "tempo"]
    assert dashboards(*args).returncode == 0
    assert dashboards(*args).returncode == 0
    methods = [c[0] for c in grafana.calls if c[1].startswith("/api/datasources")]
    assert methods == ["GET", "POST", "GET", "PUT"]
    datasource = grafana.datasources["kvwatch-prometheus"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert datasource["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "tempo"}]
    variables = grafana.dashboards["kvwatch-overview"]["dashboard"]["templating"]["list"]
    assert variables[0]["current"]["value"] == "kvwatch-prometheus"


def test_a_bad_token_is_named(grafana: FakeGrafana, tmp_path: Path) -> None:
    result = dashboards("push", "--grafana-url", grafana.url, "--token-file", token_file(tmp_path, "wrong"))
    assert result.returncode == 1
    assert "refused the credentials (401)" in result.stderr and "wrong" not in result.stderr


def test_a_token_without_write_permission_is_named(tmp_path: Path) -> None:
    readonly = FakeGrafana(writable=False)
    try:
        result = dashboards("push", "--grafana-url", readonly.url, "--token-file", token_file(tmp_path))
    finally:
        readonly.close()
    assert result.returncode == 1
    assert "may not write here (403)" in result.stderr and "folder 'kvwatch'" in result.stderr


def test_an_unreachable_grafana_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = dashboards("push", "--grafana-url", url, "--token-file", token_file(tmp_path), "--timeout", "3")
    assert result.returncode == 1
    assert f"cannot reach Grafana at {url}" in result.stderr


def test_a_missing_token_file_is_a_usage_error(grafana: FakeGrafana, tmp_path: Path) -> None:
    result = dashboards("push", "--grafana-url", grafana.url, "--token-file", str(tmp_path / "nope"))
    assert result.returncode == 2 and "--token-file" in result.stderr
    assert not grafana.calls


def test_the_token_can_come_from_the_environment(grafana: FakeGrafana) -> None:
    import os

    result = dashboards("push", "--grafana-url", grafana.url, env={**os.environ, "GRAFANA_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr


def test_export_writes_everything_and_presets_the_datasource(tmp_path: Path) -> None:
    result = dashboards("export", str(tmp_path / "out"), "--datasource", "P1809F7CD0C75ACF3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "alerts.yml",
        "kvwatch-fleet.json",
        "kvwatch-overview.json",
        "provisioning/dashboards.yaml",
        "provisioning/datasources.yaml",
    ]
    dashboard = json.loads((out / "kvwatch-overview.json").read_text())
    assert dashboard["templating"]["list"][0]["current"]["value"] == "P1809F7CD0C75ACF3"
    assert (out / "alerts.yml").read_text() == (REPO / "dashboards" / "alerts.yml").read_text()


def test_the_files_ship_in_the_wheel_and_work_from_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob(f"kvwatch-{__version__}-*.whl")  # the version pyproject.toml reads from the code
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "kvwatch-overview.json",
        "kvwatch-fleet.json",
        "alerts.yml",
        "provisioning/dashboards.yaml",
        "provisioning/datasources.yaml",
    ):
        assert f"dashboards/{name}" in names
    # The installed code, imported from the wheel alone, finds its files there.
    result = subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; raise SystemExit(main(['dashboards', 'export', 'out']))"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(wheel), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "kvwatch-overview.json").read_text())["uid"] == "kvwatch-overview"
