"""deploy/: the compose and Kubernetes files parse, run the repository's own collector configs (mounted or
generated from collector/, not copied), and those configs pass `validate` of the real binaries under
exactly the environment each deployment sets. No Docker or cluster is needed (none runs here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.stack.toolchain import VERSIONS, ensure_binary

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR_DIR = ROOT / "collector"
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
K8S_DIR = DEPLOY / "kubernetes"

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib"
JAEGER_IMAGE = "jaegertracing/jaeger"
ALERTMANAGER_IMAGE = "prom/alertmanager"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)")
# Read by the Go runtime of the collector and Jaeger, or by Jaeger's own tracing SDK: not by their configs.
PROCESS_ENV = {"GOMEMLIMIT", "GOMAXPROCS", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"}
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet"}


def jaeger_v2_tag(module_version: str) -> str:
    """Each Jaeger release has two tags, v1.N.p and v2.(N-63).p (CHANGELOG: "v1.76.0 / v2.13.0"); the
    toolchain builds the v1 module tag, the official image carries the v2 number."""
    major, minor, patch = (int(part) for part in module_version.lstrip("v").split("."))
    assert major == 1, module_version
    return f"2.{minor - 63}.{patch}"


EXPECTED_TAGS = {
    COLLECTOR_IMAGE: VERSIONS["otelcol"].lstrip("v"),
    ALERTMANAGER_IMAGE: VERSIONS["alertmanager"],
    JAEGER_IMAGE: jaeger_v2_tag(VERSIONS["jaeger"]),
}


# --------------------------------------------------------------------------------------------- model


@dataclass
class Container:
    """One container of compose or Kubernetes, with the host files its `--config` flags name."""

    where: str
    image: str
    args: list[str]
    env: dict[str, str]
    mounts: dict[str, Path | None] = field(default_factory=dict)  # file in container → host file

    @property
    def binary(self) -> str | None:
        for prefix, binary in ((COLLECTOR_IMAGE, "otelcol"), (JAEGER_IMAGE, "jaeger")):
            if self.image.startswith(prefix + ":"):
                return binary
        return None

    def config_paths(self) -> list[str]:
        paths = []
        for index, arg in enumerate(self.args):
            if arg.startswith("--config="):
                paths.append(arg.removeprefix("--config="))
            elif arg == "--config":
                paths.append(self.args[index + 1])
        return paths

    def config_files(self) -> list[Path]:
        files = []
        for path in self.config_paths():
            host_file = self.mounts.get(path)
            assert host_file is not None, f"{self.where}: --config {path} is not a file mounted into it"
            files.append(host_file)
        return files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def compose_containers() -> dict[str, Container]:
    containers = {}
    for name, service in compose()["services"].items():
        mounts: dict[str, Path | None] = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):  # a bind mount, not a named volume
                mounts[target] = (COMPOSE_DIR / source).resolve()
        command = service.get("command", [])
        containers[name] = Container(
            f"compose service {name}",
            service.get("image", ""),
            command.split() if isinstance(command, str) else list(command),
            compose_env(service),
            mounts,
        )
    return containers


def kustomization() -> dict[str, Any]:
    return load_yaml(K8S_DIR / "kustomization.yaml")


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for resource in kustomization()["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S_DIR / resource).read_text()) if doc]
    return docs


def generated_configmaps() -> dict[str, dict[str, Path]]:
    """configMapGenerator: ConfigMap name → {key: host file}."""
    generated = {}
    for generator in kustomization().get("configMapGenerator", []):
        files = {}
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=")
            source_path = (K8S_DIR / source).resolve()
            files[key or source_path.name] = source_path
        generated[generator["name"]] = files
    return generated


def k8s_containers() -> dict[str, Container]:
    configmaps = generated_configmaps()
    containers = {}
    for doc in k8s_documents():
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            mounts: dict[str, Path | None] = {}
            for mount in container.get("volumeMounts", []):
                configmap = volumes[mount["name"]].get("configMap")
                if configmap is None:
                    continue
                assert configmap["name"] in configmaps, f"ConfigMap {configmap['name']} is not generated"
                for key, source in configmaps[configmap["name"]].items():
                    mounts[str(PurePosixPath(mount["mountPath"]) / key)] = source
            name = f"{doc['metadata']['name']}/{container['name']}"
            containers[name] = Container(
                f"{doc['kind']} {name}",
                container["image"],
                [*container.get("command", []), *container.get("args", [])],
                {item["name"]: str(item["value"]) for item in container.get("env", []) if "value" in item},
                mounts,
            )
    return containers


def all_containers() -> dict[str, Container]:
    return {
        **{f"compose:{name}": c for name, c in compose_containers().items()},
        **{f"k8s:{name}": c for name, c in k8s_containers().items()},
    }


def config_containers(binary: str) -> list[tuple[str, Container]]:
    return [(name, c) for name, c in all_containers().items() if c.binary == binary]


def config_params(binary: str) -> list[Any]:
    return [pytest.param(container, id=name) for name, container in config_containers(binary)]


@cache
def env_names_read(path: Path) -> frozenset[str]:
    return frozenset(ENV_REFERENCE.findall(path.read_text()))


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def validate(binary: str, container: Container) -> None:
    files = container.config_files()
    assert files, f"{container.where} runs no --config file"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    argv = [str(ensure_binary(binary)), "validate"]
    for config in files:
        argv += ["--config", str(config)]
    result = subprocess.run(argv, env={**env, **container.env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{container.where}: {' '.join(argv)}\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(doc, dict) for doc in docs), f"{path}: empty or non-mapping document"


def test_compose_has_the_whole_stack() -> None:
    services = compose()["services"]
    expected = {"app", "collector", "analyzer", "jaeger", "alertmanager", "prometheus", "grafana"}
    assert expected <= services.keys()
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s healthcheck"


@pytest.mark.parametrize("name", ["compose", "kubernetes"])
def test_image_tags_match_the_tested_versions(name: str) -> None:
    containers = compose_containers() if name == "compose" else k8s_containers()
    images = {c.image for c in containers.values()}
    for image, tag in EXPECTED_TAGS.items():
        found = {i for i in images if i.startswith(image + ":")}
        assert found, f"{name}: no {image} image"
        assert found <= {f"{image}:{tag}"}, f"{name}: {found} but the tests run {image}:{tag}"


def test_compose_mounts_the_repository_configs_not_copies() -> None:
    containers = compose_containers()
    assert containers["collector"].config_files() == [COLLECTOR_DIR / "gateway.yaml"]
    assert containers["jaeger"].config_files() == [COLLECTOR_DIR / "jaeger.yaml"]
    alertmanager = containers["alertmanager"]
    config_flag = next(arg for arg in alertmanager.args if arg.startswith("--config.file="))
    assert (
        alertmanager.mounts[config_flag.removeprefix("--config.file=")] == COLLECTOR_DIR / "alertmanager.yml"
    )
    # The Prometheus and Grafana files it mounts exist.
    for container in containers.values():
        for host_file in container.mounts.values():
            assert host_file is not None and host_file.exists(), (
                f"{container.where} mounts missing {host_file}"
            )


def test_no_collector_config_is_copied_under_deploy() -> None:
    originals = {path.read_text().strip(): path for path in COLLECTOR_DIR.glob("*.y*ml")}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert path.read_text(errors="replace").strip() not in originals, (
                f"{path} copies a collector config"
            )


def test_kubernetes_configmaps_are_generated_from_the_repository_configs() -> None:
    generated = generated_configmaps()
    sources = {source for files in generated.values() for source in files.values()}
    for name in ("agent.yaml", "gateway.yaml", "jaeger.yaml", "alertmanager.yml"):
        assert COLLECTOR_DIR / name in sources, f"no ConfigMap generated from collector/{name}"
    assert all(source.is_file() for source in sources)
    containers = k8s_containers()
    assert containers["otel-perf-agent/collector"].config_files() == [
        COLLECTOR_DIR / "agent.yaml",
        K8S_DIR / "collector-agent-k8s.yaml",
    ]
    assert containers["otel-perf-gateway/collector"].config_files() == [COLLECTOR_DIR / "gateway.yaml"]
    assert containers["otel-perf-jaeger/jaeger"].config_files() == [COLLECTOR_DIR / "jaeger.yaml"]


def test_kubernetes_objects_live_in_the_otel_perf_namespace() -> None:
    assert kustomization()["namespace"] == "otel-perf"
    docs = k8s_documents()
    assert {"Namespace", "DaemonSet", "Deployment", "Service"} <= {doc["kind"] for doc in docs}
    for doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc
        assert doc["metadata"].get("namespace", "otel-perf") == "otel-perf"
    namespaces = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace"]
    assert namespaces == ["otel-perf"]


@pytest.mark.parametrize("container", config_params("otelcol"))
def test_collector_configs_validate_with_the_deployment_env(container: Container) -> None:
    validate("otelcol", container)


@pytest.mark.parametrize("container", config_params("jaeger"))
def test_jaeger_config_validates_with_the_deployment_env(container: Container) -> None:
    validate("jaeger", container)


def test_there_are_collectors_to_validate() -> None:
    assert {name for name, _ in config_containers("otelcol")} == {
        "compose:collector",
        "k8s:otel-perf-agent/collector",
        "k8s:otel-perf-gateway/collector",
    }
    assert {name for name, _ in config_containers("jaeger")} == {
        "compose:jaeger",
        "k8s:otel-perf-jaeger/jaeger",
    }


@pytest.mark.parametrize("binary", ["otelcol", "jaeger"])
def test_every_env_var_set_for_a_collector_is_read_by_its_configs(binary: str) -> None:
    for _, container in config_containers(binary):
        read = set().union(*(env_names_read(path) for path in container.config_files()))
        unread = set(container.env) - read - PROCESS_ENV
        assert not unread, f"{container.where} sets {sorted(unread)}, which its configs never read"


def test_addresses_set_in_the_environment_are_well_formed() -> None:
    """`validate` builds components but binds nothing: a listen address like 0.0.0.0:88a9 passes it."""
    host_port = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")
    for container in all_containers().values():
        for name, value in container.env.items():
            if name.endswith("_ENDPOINT") and name != "OTEL_EXPORTER_OTLP_ENDPOINT":
                assert host_port.match(value), f"{container.where}: {name}={value}"
            elif name.endswith(("_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")):
                url = httpx.URL(value)
                assert url.scheme in {"http", "https"} and url.host and url.port, f"{container.where}: {name}"
            elif name.endswith("_PORT"):
                assert value.isdigit(), f"{container.where}: {name}={value}"
            elif name in {"OTEL_PERF_ANALYZERS", "OTEL_PERF_GATEWAYS"}:
                hosts = yaml.safe_load(value)
                assert isinstance(hosts, list) and hosts, f"{container.where}: {name}={value}"
                assert all(host_port.match(host) for host in hosts), f"{container.where}: {name}={value}"


def test_analyzer_env_vars_are_analyzer_settings() -> None:
    known = {f"OTEL_PERF_ANALYZER_{name.upper()}" for name in AnalyzerSettings.model_fields}
    analyzers = [c for c in all_containers().values() if c.args[-2:] == ["otel-perf", "analyzer"]]
    assert len(analyzers) == 2
    for container in analyzers:
        names = {name for name in container.env if name.startswith("OTEL_PERF_ANALYZER_")}
        assert names <= known, f"{container.where}: unknown settings {sorted(names - known)}"


def test_compose_services_listen_on_all_interfaces_and_find_each_other() -> None:
    containers = compose_containers()
    collector, analyzer = containers["collector"].env, containers["analyzer"].env
    jaeger, app = containers["jaeger"].env, containers["app"].env
    listen = [
        collector["OTEL_PERF_COLLECTOR_GRPC_ENDPOINT"],
        collector["OTEL_PERF_COLLECTOR_HTTP_ENDPOINT"],
        collector["OTEL_PERF_COLLECTOR_ANALYZED_ENDPOINT"],
        collector["OTEL_PERF_COLLECTOR_HEALTH_ENDPOINT"],
        collector["OTEL_PERF_PROMETHEUS_ENDPOINT"],
        analyzer["OTEL_PERF_ANALYZER_GRPC_ENDPOINT"],
        analyzer["OTEL_PERF_ANALYZER_HTTP_ENDPOINT"],
        jaeger["OTEL_PERF_JAEGER_OTLP_ENDPOINT"],
        jaeger["OTEL_PERF_JAEGER_QUERY_ENDPOINT"],
    ]
    assert all(address.startswith("0.0.0.0:") for address in listen), listen
    assert collector["OTEL_PERF_COLLECTOR_TELEMETRY_HOST"] == "0.0.0.0"
    assert "--web.listen-address=0.0.0.0:9093" in containers["alertmanager"].args

    analyzer_grpc = port(analyzer["OTEL_PERF_ANALYZER_GRPC_ENDPOINT"])
    assert yaml.safe_load(collector["OTEL_PERF_ANALYZERS"]) == [f"analyzer:{analyzer_grpc}"]
    analyzed = port(collector["OTEL_PERF_COLLECTOR_ANALYZED_ENDPOINT"])
    assert analyzer["OTEL_PERF_ANALYZER_EXPORT_ENDPOINT"] == f"collector:{analyzed}"
    assert (
        collector["OTEL_PERF_JAEGER_OTLP_ENDPOINT"]
        == f"jaeger:{port(jaeger['OTEL_PERF_JAEGER_OTLP_ENDPOINT'])}"
    )
    assert collector["OTEL_PERF_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert (
        app["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == f"http://collector:{port(collector['OTEL_PERF_COLLECTOR_GRPC_ENDPOINT'])}"
    )
    assert {"OTEL_SERVICE_NAME", "PORT"} <= app.keys()
    for name in ("OTEL_PERF_COLLECTOR_STORAGE_DIR", "OTEL_PERF_ALERT_RECORDS_FILE"):
        assert any(
            collector[name].startswith(target + "/") and not is_bind
            for target, is_bind in _mounts(compose()["services"]["collector"]).items()
        ), f"{name} is not on a named volume"

    prometheus = load_yaml(COMPOSE_DIR / "prometheus.yml")
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {
        f"collector:{port(collector['OTEL_PERF_PROMETHEUS_ENDPOINT'])}",
        f"collector:{collector['OTEL_PERF_COLLECTOR_TELEMETRY_PORT']}",
        f"analyzer:{port(analyzer['OTEL_PERF_ANALYZER_HTTP_ENDPOINT'])}",
    } <= targets


def test_grafana_provisioning_is_wired() -> None:
    grafana = COMPOSE_DIR / "grafana"
    datasources = load_yaml(grafana / "provisioning/datasources/otel-perf.yaml")["datasources"]
    by_uid = {source["uid"]: source for source in datasources}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    mounts = compose_containers()["grafana"].mounts
    for provider in load_yaml(grafana / "provisioning/dashboards/otel-perf.yaml")["providers"]:
        directory = mounts[provider["options"]["path"]]
        assert directory is not None
        dashboards = sorted(directory.glob("*.json"))
        assert dashboards, f"no dashboards in {directory}"
        for path in dashboards:
            for panel in json.loads(path.read_text())["panels"]:
                if panel["type"] == "row":  # a heading; its panels follow it at the top level
                    assert not panel.get("panels"), f"{path.name}: {panel['title']}: keep rows expanded"
                    continue
                assert panel["datasource"]["uid"] in by_uid, f"{path.name}: {panel['title']}"
                assert all(target["expr"] for target in panel["targets"])
    # The alerts panel's source: the compose Alertmanager (tests/test_dashboards.py checks the queries).
    services = compose()["services"]
    alertmanager = httpx.URL(by_uid["alertmanager"]["url"])
    assert by_uid["alertmanager"]["type"] == "alertmanager" and alertmanager.host in services
    assert f"--web.listen-address=0.0.0.0:{alertmanager.port}" in services[alertmanager.host]["command"]


def _mounts(service: dict[str, Any]) -> dict[str, bool]:
    """Container path → whether it is a bind mount (False: a named volume)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source.startswith((".", "/"))
    return mounts


def test_kubernetes_two_tier_wiring() -> None:
    containers = k8s_containers()
    agent = containers["otel-perf-agent/collector"].env
    gateway = containers["otel-perf-gateway/collector"].env
    analyzer = containers["otel-perf-gateway/analyzer"].env
    jaeger = containers["otel-perf-jaeger/jaeger"].env
    services = {doc["metadata"]["name"]: doc["spec"] for doc in k8s_documents() if doc["kind"] == "Service"}

    # Agents → every gateway pod through the headless Service (DNS resolver of the k8s overlay).
    headless = services[agent["OTEL_PERF_GATEWAYS_DNS_NAME"]]
    assert headless["clusterIP"] == "None"
    overlay = load_yaml(K8S_DIR / "collector-agent-k8s.yaml")["exporters"]
    for exporter in overlay.values():
        assert exporter["resolver"]["static"] is None
        assert int(exporter["resolver"]["dns"]["port"]) == port(gateway["OTEL_PERF_COLLECTOR_GRPC_ENDPOINT"])
    assert {p["port"] for p in headless["ports"]} == {port(gateway["OTEL_PERF_COLLECTOR_GRPC_ENDPOINT"])}

    # Gateway ⇄ its own analyzer sidecar, on the pod's loopback.
    assert yaml.safe_load(gateway["OTEL_PERF_ANALYZERS"]) == [analyzer["OTEL_PERF_ANALYZER_GRPC_ENDPOINT"]]
    assert analyzer["OTEL_PERF_ANALYZER_GRPC_ENDPOINT"].startswith("127.0.0.1:")
    assert analyzer["OTEL_PERF_ANALYZER_EXPORT_ENDPOINT"] == gateway["OTEL_PERF_COLLECTOR_ANALYZED_ENDPOINT"]

    # Gateway → Jaeger and Alertmanager Services.
    jaeger_host, jaeger_port = gateway["OTEL_PERF_JAEGER_OTLP_ENDPOINT"].rsplit(":", 1)
    assert int(jaeger_port) in {p["port"] for p in services[jaeger_host]["ports"]}
    assert port(jaeger["OTEL_PERF_JAEGER_OTLP_ENDPOINT"]) == int(jaeger_port)
    alertmanager = httpx.URL(gateway["OTEL_PERF_ALERTMANAGER_URL"])
    assert alertmanager.port in {p["port"] for p in services[alertmanager.host]["ports"]}

    # Everything reached from outside its pod listens on all interfaces.
    for env, names in (
        (agent, ["OTEL_PERF_COLLECTOR_GRPC_ENDPOINT", "OTEL_PERF_COLLECTOR_HEALTH_ENDPOINT"]),
        (
            gateway,
            [
                "OTEL_PERF_COLLECTOR_GRPC_ENDPOINT",
                "OTEL_PERF_COLLECTOR_HEALTH_ENDPOINT",
                "OTEL_PERF_PROMETHEUS_ENDPOINT",
            ],
        ),
        (analyzer, ["OTEL_PERF_ANALYZER_HTTP_ENDPOINT"]),
        (jaeger, ["OTEL_PERF_JAEGER_OTLP_ENDPOINT", "OTEL_PERF_JAEGER_QUERY_ENDPOINT"]),
    ):
        for name in names:
            assert env[name].startswith("0.0.0.0:"), f"{name}={env[name]}"

    # The analyzer image is the one kustomize's `images` rewrites.
    assert containers["otel-perf-gateway/analyzer"].image in {
        image["name"] for image in kustomization()["images"]
    }


def test_kubernetes_containers_have_resources_and_probes() -> None:
    for doc in k8s_documents():
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert (
            doc["spec"]["selector"]["matchLabels"].items()
            <= doc["spec"]["template"]["metadata"]["labels"].items()
        )
        for container in pod["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), f"{where}: no {kind}"
            port_names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                check = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                assert check, f"{where}: no {probe}"
                assert check["port"] in port_names or check["port"] in port_names.values(), (
                    f"{where}: {probe}"
                )
    containers = k8s_containers()
    for name in ("otel-perf-agent/collector", "otel-perf-gateway/collector"):
        env = containers[name].env
        assert port(env["OTEL_PERF_COLLECTOR_HEALTH_ENDPOINT"]) == 13133
    gateway = next(
        doc
        for doc in k8s_documents()
        if doc["metadata"]["name"] == "otel-perf-gateway" and doc["kind"] == "Deployment"
    )
    analyzer = next(c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "analyzer")
    assert analyzer["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert analyzer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["spec"]["replicas"] >= 2


def test_demo_image_installs_the_repository_and_runs_the_shop_under_the_launcher() -> None:
    services = compose()["services"]
    build = services["app"]["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    # One image for the analyzer and the demo shop: the core plus both extras.
    assert re.search(r'^RUN pip install "/tmp/otel-perf-src\[analyzer,demo\]"', dockerfile, re.M)
    assert re.search(r"^COPY otel_perf/demo/app\.py /app/main\.py$", dockerfile, re.M)
    assert services["app"]["command"] == ["opentelemetry-instrument", "python", "main.py"]
    assert services["analyzer"]["command"] == ["otel-perf", "analyzer"]
    assert services["analyzer"]["image"] == services["app"]["image"]


def test_demo_launcher_serves_the_shop_on_the_configured_address(tmp_path: Path) -> None:
    """The shop as the image runs it (main.py, HOST from the environment) under `opentelemetry-instrument`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    shutil.copy(ROOT / "otel_perf" / "demo" / "app.py", tmp_path / "main.py")
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
        "HOST": "127.0.0.1",
        "PORT": str(free_port),
        "OTEL_SERVICE_NAME": "demo-shop",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(
        [str(launcher), sys.executable, "main.py"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{free_port}/orders/eager", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_alertmanager_templates_sit_beside_its_config_everywhere() -> None:
    """collector/alertmanager.yml names its templates relative to itself (Alertmanager reads them
    beside the config file): compose and Kubernetes put each next to it, and the package ships it."""
    templates = load_yaml(COLLECTOR_DIR / "alertmanager.yml")["templates"]
    assert templates == ["alertmanager.tmpl"]
    for name in templates:
        assert not PurePosixPath(name).is_absolute() and (COLLECTOR_DIR / name).is_file()

    def beside(container: Container) -> None:
        config_flag = next(arg for arg in container.args if arg.startswith("--config.file="))
        config = PurePosixPath(config_flag.removeprefix("--config.file="))
        assert container.mounts[str(config)] == COLLECTOR_DIR / "alertmanager.yml", container.where
        for name in templates:
            assert container.mounts.get(str(config.parent / name)) == COLLECTOR_DIR / name, (
                f"{container.where}: {name} is not mounted beside {config}"
            )

    beside(compose_containers()["alertmanager"])
    beside(k8s_containers()["otel-perf-alertmanager/alertmanager"])
    # An installed otel-perf (`otel-perf rig` outside a checkout) has the template too.
    line = re.search(r'^"otel_perf\.collector" = \[(.*)\]$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml: no package data for otel_perf.collector"
    globs = re.findall(r'"([^"]+)"', line.group(1))
    for name in templates:
        assert any(PurePosixPath(name).match(glob) for glob in globs), f"{name} is not package data"
