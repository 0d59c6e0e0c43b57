"""deploy/compose.yaml passes `docker-compose config`; the Dockerfile parses with Docker's
own parser and builds one non-root image whose PID 1 is `hookline` itself."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile
import yaml

from common.settings import Settings
from tests.deploy.tools import DEPLOY, ROOT, require_tool, run

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HOOKLINE_SERVICES = {"migrate": "migrate", "api": "api", "router": "router",
                     "dispatcher": "dispatcher"}  # fmt: skip


@cache
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose itself resolves it (anchors, merges, defaults)."""
    compose = require_tool("docker-compose")
    output = run(compose, "-f", str(COMPOSE), "config", cwd=DEPLOY, env=with_secrets())
    config: dict[str, Any] = yaml.safe_load(output)
    return config


def with_secrets(**overrides: str) -> dict[str, str]:
    """This environment with the two secrets compose takes from it (none has a default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env |= {"HOOKLINE_ADMIN_TOKEN": "a" * 64, "HOOKLINE_SECRET_KEY": "b" * 64,
            "GRAFANA_ADMIN_PASSWORD": "c" * 32}  # fmt: skip
    return {k: v for k, v in (env | overrides).items() if v}


def test_compose_refuses_to_start_without_the_secrets_and_passes_them_through() -> None:
    compose = require_tool("docker-compose")
    for missing in ("HOOKLINE_ADMIN_TOKEN", "HOOKLINE_SECRET_KEY", "GRAFANA_ADMIN_PASSWORD"):
        result = subprocess.run(
            [compose, "-f", str(COMPOSE), "config"], cwd=DEPLOY, capture_output=True,
            text=True, timeout=120, env=with_secrets(**{missing: ""}),
        )  # fmt: skip
        assert result.returncode != 0
        assert f"export {missing}" in result.stdout + result.stderr
    for service in ("api", "dispatcher"):
        env = resolved()["services"][service]["environment"]
        assert (env["HOOKLINE_ADMIN_TOKEN"], env["HOOKLINE_SECRET_KEY"]) == ("a" * 64, "b" * 64)


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path, from the short (`a:b:ro`) or the long volume syntax."""
    mounts = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[str(target)] = str(source)
    return mounts


def test_docker_compose_accepts_the_file_and_runs_the_whole_stack() -> None:
    services = resolved()["services"]
    assert set(services) == {"rabbitmq", "postgres", "migrate", "api", "router", "dispatcher",
                             "prometheus", "grafana"}  # fmt: skip
    for name, command in HOOKLINE_SERVICES.items():
        assert services[name]["image"] == "hookline:local"
        assert services[name]["command"][0] == command
        build = services[name]["build"]
        assert Path(build["context"]) == ROOT and build["dockerfile"] == "deploy/docker/Dockerfile"
    for name in ("api", "router", "dispatcher"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_dispatchers_can_be_scaled_and_are_all_scraped() -> None:
    dispatcher = resolved()["services"]["dispatcher"]
    # --scale N needs no fixed name and no fixed host port.
    assert "container_name" not in dispatcher and "ports" not in dispatcher
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    names = jobs["hookline-dispatcher"]["dns_sd_configs"][0]["names"]
    assert names == ["dispatcher"]  # the service name resolves to every replica
    environment = dispatcher["environment"]
    assert jobs["hookline-dispatcher"]["dns_sd_configs"][0]["port"] == int(
        environment["HOOKLINE_METRICS_PORT"]
    )


def test_rabbitmq_runs_its_management_and_prometheus_plugins() -> None:
    services = resolved()["services"]
    plugins = mounts_of(services["rabbitmq"])["/etc/rabbitmq/enabled_plugins"]
    text = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert plugins.endswith("rabbitmq/enabled_plugins")
    assert "rabbitmq_management" in text and "rabbitmq_prometheus" in text


def test_the_plugins_file_is_an_erlang_term_rabbitmq_can_read() -> None:
    erl = require_tool("erl")  # RabbitMQ's own runtime reads the file with file:consult
    path = DEPLOY / "rabbitmq" / "enabled_plugins"
    script = f'{{ok, [L]}} = file:consult("{path}"), io:format("~w~n", [L]), halt().'
    output = run(erl, "-noshell", "-eval", script)
    assert output.strip() == "[rabbitmq_management,rabbitmq_prometheus]"


def test_every_hookline_service_is_healthy_only_when_its_readyz_answers() -> None:
    services = resolved()["services"]
    for name in ("api", "router", "dispatcher"):
        check = services[name]["healthcheck"]
        assert check["test"][:2] == ["CMD", "python"], name  # the image has no curl
        assert "/readyz" in check["test"][-1], name
    assert "127.0.0.1:8000/readyz" in services["api"]["healthcheck"]["test"][-1]
    assert "127.0.0.1:9100/readyz" in services["router"]["healthcheck"]["test"][-1]
    # `dispatcher --processes 2`: both processes, on 9100 and 9101, must be ready.
    assert "(9100, 9101)" in services["dispatcher"]["healthcheck"]["test"][-1]
    assert services["router"]["environment"]["HOOKLINE_METRICS_PORT"] == "9100"


def host_ips(service: dict[str, Any]) -> list[str]:
    """The host address of each published port ("" for every interface), from either
    form docker-compose renders (`127.0.0.1:3000:3000/tcp`, or a mapping)."""
    ips = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ips.append(str(port.get("host_ip", "")))
        else:
            parts = str(port).split(":")
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def test_operator_uis_listen_on_localhost_only_and_grafana_needs_a_login() -> None:
    services = resolved()["services"]
    for name in ("rabbitmq", "grafana", "prometheus"):
        ips = host_ips(services[name])
        assert ips and set(ips) == {"127.0.0.1"}, (name, ips)
    assert host_ips(services["api"]) == [""]  # the API is the public face
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "c" * 32  # from the environment
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana


def test_grafana_gets_the_provisioned_datasource_and_dashboard() -> None:
    grafana = resolved()["services"]["grafana"]
    mounts = mounts_of(grafana)
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "hookline.yaml").read_text()
    )["providers"][0]
    assert mounts[provider["options"]["path"]].endswith("grafana/dashboards")
    assert mounts["/etc/grafana/provisioning"].endswith("grafana/provisioning")


def test_the_compose_environment_names_only_real_settings() -> None:
    fields = {f"HOOKLINE_{name.upper()}" for name in Settings.model_fields}
    for name in HOOKLINE_SERVICES:
        env = resolved()["services"][name]["environment"]
        assert set(env) <= fields, set(env) - fields


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def test_the_image_runs_hookline_as_pid_1_without_a_shell() -> None:
    final = instructions()
    last_from = max(i for i, c in enumerate(final) if c.cmd == "FROM")
    stage = final[last_from:]
    [entrypoint] = [c for c in stage if c.cmd == "ENTRYPOINT"]
    [command] = [c for c in stage if c.cmd == "CMD"]
    # Exec (JSON) form: no `/bin/sh -c` between the container runtime and hookline.
    assert entrypoint.json and entrypoint.value == ("hookline",)
    assert command.json and command.value[0] == "api"
    assert [c.value for c in stage if c.cmd == "STOPSIGNAL"] == [("SIGTERM",)]


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [c.value[0] for c in instructions() if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_every_copied_path_exists_and_is_let_through_the_ignore_file() -> None:
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    for copy in (c for c in instructions() if c.cmd == "COPY" and not c.flags):
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded from the context"


def test_every_dispatcher_process_in_compose_is_scraped() -> None:
    """`dispatcher --processes N` serves /metrics on 9100 ... 9100+N-1: Prometheus must
    scrape each, and the others run one process (the default would count host cores)."""
    services = resolved()["services"]
    command = services["dispatcher"]["command"]
    processes = int(command[command.index("--processes") + 1])
    assert services["router"]["environment"]["HOOKLINE_PROCESSES"] == "1"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "hookline-dispatcher"]
    ports = sorted(sd["port"] for sd in job["dns_sd_configs"])
    assert ports == list(range(9100, 9100 + processes))


def test_the_base_image_is_pinned_by_tag_and_digest() -> None:
    """A moved tag must not change what a rebuild gets: every stage starts from the one
    `PYTHON_IMAGE`, a patch-level tag with the sha256 digest of its image index."""
    commands = instructions()
    args = [c.value[0] for c in commands if c.cmd == "ARG"]
    [image] = [arg.removeprefix("PYTHON_IMAGE=") for arg in args if arg.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    assert {c.value[0] for c in commands if c.cmd == "FROM"} == {"${PYTHON_IMAGE}"}
