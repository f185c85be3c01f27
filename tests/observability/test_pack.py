"""docs/observability/: the alert rules pass promtool (syntax and unit tests), the dashboard is an
importable Grafana document, and every metric both use is served by a real running guard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.guard import GuardProcess
from tests.support.redis_servers import RedisServer, free_tcp_port

PACK = Path(__file__).resolve().parents[2] / "docs" / "observability"
RULES = PACK / "alerts.yml"
DASHBOARD = PACK / "grafana-dashboard.json"
METRIC = re.compile(r"\b((?:npv_guard|process|python)_[a-z_]+)\b")
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself, not by the guard
ALERTS = {"NpvGuardDown", "NpvGuardAriDisconnected", "NpvGuardJournalBacklog", "NpvGuardStateUnavailable",
          "NpvGuardRefusalLost", "NpvGuardRejectionRateJump"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed (scripts/bootstrap installs Debian's prometheus package)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120, check=False, cwd=PACK)


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", "alerts-test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PACK / "alerts-test.yml").read_text()))
    assert tested == set(rule_expressions()) == ALERTS  # every alert has its test


def test_the_dashboard_is_importable_with_the_datasource_as_a_variable() -> None:
    board = dashboard()
    assert board["uid"] == "npv-guard" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


def served_metric_names(exposition: str) -> set[str]:
    """Sample names, plus the families declared without a sample yet (labelled, never incremented)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.mark.redis
def test_every_metric_of_the_pack_is_served_by_a_running_guard(redis_server: RedisServer) -> None:
    # An ARI-mode guard whose Asterisk is not there: it serves /metrics and reports ARI down.
    guard = GuardProcess(
        redis_url=redis_server.url, carrier_port=free_tcp_port(), key_prefix="obs-pack",
        ari={"url": f"http://127.0.0.1:{free_tcp_port()}", "reconnect_max_s": 1},
    )  # fmt: skip
    try:
        guard.spawn("run", "ARI unavailable", 20)
        deadline, metrics = time.monotonic() + 10, ""
        while time.monotonic() < deadline and "npv_guard_ari_connected 0.0" not in metrics:
            metrics = guard.http("/metrics")[1]
            time.sleep(0.1)
    finally:
        guard.stop()
    assert "npv_guard_ari_connected 0.0" in metrics
    assert 'npv_guard_build_info{version="' in metrics
    served = served_metric_names(metrics)
    used = {name for expr in [*rule_expressions().values(), *dashboard_expressions()] for name in METRIC.findall(expr)}
    assert used, "no metric found in the pack"
    assert sorted(used - served) == []
    assert {"process_cpu_seconds_total", "python_gc_collections_total", "python_info"} <= served
