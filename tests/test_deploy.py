"""The deployment files agree with the apps they deploy.

``deploy/k8s/pipeline.yaml`` and ``deploy/Dockerfile`` name ports, probe paths, Services and
DNS names; every one of them must be one the example pipeline's apps, configured as the pods
configure them, actually serve. The apps are loaded with the ConfigMap's system.toml and the
image's environment, checked, and then run for real to answer the probes."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from zmqapp import App
from zmqapp._discovery import locate_app
from zmqapp.dns import parse_dns_endpoint
from zmqapp.testing import AppThread, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pipeline.yaml").read_text()) if d]


def image_environment() -> dict[str, str]:
    """The ENV of deploy/Dockerfile."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for name, value in re.findall(r'(\w+)="([^"]*)"', line):
                env[name] = value
    return env


def load_pod_app(deployment: dict[str, Any], config: Path) -> App:
    """The app a Deployment's container runs, configured as in the pod."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    path = args[args.index("--app") + 1]
    assert path.startswith("pipeline/"), path
    app = locate_app(str(ROOT / "examples" / path))
    env = {**image_environment(), "ZMQAPP_CONFIG": str(config)}
    app.config.load_sources(app.name, channels=app.channels, environ=env)
    app.apply_config()
    return app


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    docs = documents()
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    config = tmp_path_factory.mktemp("config") / "system.toml"
    config.write_text(config_map["data"]["system.toml"])
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    apps = {name: load_pod_app(d, config) for name, d in deployments.items()}
    return {"deployments": deployments, "services": services, "apps": apps}


def http_port(app: App) -> int:
    return int(str(app.config["HTTP"]).rsplit(":", 1)[1])


def test_probes_metrics_and_grace_period_match_each_app(deployed: dict[str, Any]) -> None:
    for name, deployment in deployed["deployments"].items():
        app = deployed["apps"][name]
        pod = deployment["spec"]["template"]
        [container] = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == http_port(app), name
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(http_port(app))
        assert annotations["prometheus.io/path"] == "/metrics"
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(app.config["SHUTDOWN_TIMEOUT"]), name


def test_every_container_port_is_a_bound_channel(deployed: dict[str, Any]) -> None:
    for name, deployment in deployed["deployments"].items():
        app = deployed["apps"][name]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        bound = {
            channel.name: int(endpoint.address.rsplit(":", 1)[1])
            for channel in app.channels.values()
            for endpoint in channel.endpoints
            if endpoint.bind
        }
        named = {p["name"]: p["containerPort"] for p in container["ports"] if p["name"] != "http"}
        assert named == bound, name  # every bound channel has its port, and nothing else


def test_services_and_dns_names_meet(deployed: dict[str, Any]) -> None:
    services = deployed["services"]
    for service_name, service in services.items():
        assert service["spec"]["clusterIP"] == "None", "headless: DNS lists every pod"
        app_name = service["spec"]["selector"]["app"]
        [container] = deployed["deployments"][app_name]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], service_name
    dns_targets = set()
    for app in deployed["apps"].values():
        for channel in app.channels.values():
            for endpoint in channel.endpoints:
                parsed = parse_dns_endpoint(endpoint.address)
                if parsed is not None:
                    dns_targets.add(parsed)
    published = {
        (name, port["port"]) for name, s in services.items() for port in s["spec"]["ports"]
    }
    assert dns_targets and dns_targets <= published


def test_the_image_copies_what_exists(deployed: dict[str, Any]) -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
    assert '"zmqapp", "run"' in text


@pytest.mark.timeout(60)
def test_each_pod_app_answers_its_probes(deployed: dict[str, Any], tmp_path: Path) -> None:
    """Run each app as configured, moved to this machine (HTTP on a free port, sockets on
    127.0.0.1), and ask the paths the manifests name."""
    for name, app in deployed["apps"].items():
        app.config["HTTP"] = "127.0.0.1:0"
        app.config["LOG_FORMAT"] = "text"
        app.config["CHANNELS"] = {
            channel.name: {"endpoint": "@tcp://127.0.0.1:*" if any(
                e.bind for e in channel.endpoints) else f"ipc://{tmp_path}/{name}-{channel.name}"}
            for channel in app.channels.values()
        }  # fmt: skip
        pod = deployed["deployments"][name]["spec"]["template"]
        [container] = pod["spec"]["containers"]
        paths = {
            container["livenessProbe"]["httpGet"]["path"],
            container["readinessProbe"]["httpGet"]["path"],
            pod["metadata"]["annotations"]["prometheus.io/path"],
        }
        with AppThread(app):
            assert app.runtime is not None and app.runtime.http is not None
            base = app.runtime.http.url
            for path in sorted(paths):

                def ok(url: str = base + path) -> bool:
                    try:
                        with urllib.request.urlopen(url, timeout=5) as response:
                            return bool(response.status == 200)
                    except OSError:
                        return False

                wait_for(ok, timeout=10)
