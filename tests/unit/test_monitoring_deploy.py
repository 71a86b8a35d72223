"""What Prometheus and Grafana are given (deploy/prometheus.yml, deploy/grafana, docker-compose.yml) agrees
with the services: each one is scraped where it serves, and every series the dashboard asks for is one the
code exports. There is no Docker engine here: the files are read as Compose, Prometheus and Grafana read
them."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from shared.messaging import Topology
from shared.settings import Settings
from tools.healthcheck import PORT_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "maildash.yml").read_text())
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Where each service listens inside its container: the `MAILDASH_*_HOST` setting its port goes with.
HOST_SETTINGS = {"api": "api_host", "tracker": "tracker_host"}
# Importing a service's composition root defines its metrics.
SERVICE_MODULES = [
    f"services.{name}.main" for name in ("api", "scheduler", "sender", "tracker", "tracker.inbox")
]
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
SERIES = re.compile(r"\b(maildash_[a-z_]+)")
QUEUE = re.compile(r'queue="([^"]+)"')


def mounts(service: str) -> dict[str, Path]:
    """Container path → the file or folder of this repository mounted there."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def mounted(service: str, path: str) -> Path:
    """The repository's file that `service` reads at `path`."""
    for target, source in mounts(service).items():
        if path == target or path.startswith(f"{target}/"):
            return source / PurePosixPath(path).relative_to(target)
    raise AssertionError(f"{service} has nothing mounted at {path}")


def exported() -> set[str]:
    """Every series name the services' code defines, once their modules are imported."""
    for module in SERVICE_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_prometheus_scrapes_every_service_on_its_port_with_every_replica() -> None:
    assert mounted("prometheus", "/etc/prometheus/prometheus.yml") == ROOT / "deploy" / "prometheus.yml"
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert set(jobs) == set(PORT_SETTINGS)
    defaults = Settings()
    for name, port_setting in PORT_SETTINGS.items():
        [discovery] = jobs[name]["dns_sd_configs"]  # one A record per replica of a scaled service
        assert (discovery["names"], discovery["type"]) == ([name], "A"), name
        assert discovery["port"] == getattr(defaults, port_setting), name
        environment = SERVICES[name]["environment"]
        assert f"MAILDASH_{port_setting.upper()}" not in environment, name  # it listens on the default
        host = HOST_SETTINGS.get(name, "worker_host")
        assert environment[f"MAILDASH_{host.upper()}"] == "0.0.0.0", name  # reachable from Prometheus


def test_grafana_is_given_prometheus_and_the_dashboards() -> None:
    [source] = DATASOURCES["datasources"]
    prometheus_port = int(SERVICES["prometheus"]["ports"][0].rsplit(":", 1)[1])
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    assert mounted("grafana", "/etc/grafana/provisioning/datasources/prometheus.yml").exists()
    assert mounted("grafana", "/etc/grafana/provisioning/dashboards/maildash.yml").exists()
    [provider] = PROVIDERS["providers"]
    assert sorted(mounted("grafana", provider["options"]["path"]).glob("*.json")) == DASHBOARDS
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounted("grafana", home) in DASHBOARDS
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] != "admin"
    for service in ("grafana", "prometheus"):
        assert all(port.startswith("127.0.0.1:") for port in SERVICES[service]["ports"]), service


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_series_a_dashboard_asks_for_is_exported(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    [source] = DATASOURCES["datasources"]
    known, queues = exported(), {queue.name.split(".", 1)[1] for queue in Topology("p").all_queues()}
    queues.add(Topology("p").dead_letters.name.split(".", 1)[1])
    asked = expressions(dashboard)
    assert asked
    for expression in asked:
        assert set(SERIES.findall(expression)) <= known, expression
        assert set(QUEUE.findall(expression)) <= queues, expression
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    assert {"maildash_sender_slot_lateness_seconds_bucket", "maildash_sender_outcomes_total"} <= {
        name for expression in asked for name in SERIES.findall(expression)
    }
