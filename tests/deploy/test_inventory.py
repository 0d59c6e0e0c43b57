"""Every file under deploy/ is checked by a real tool or a test; a new file must say which."""

from __future__ import annotations

import subprocess

from tests.deploy.tools import DEPLOY, ROOT

# path (relative to deploy/) or directory prefix -> what validates it
CHECKED_BY = {
    "hookline.env.example": "tests/test_deploy.py (every variable is a setting and parses)",
    "prometheus/prometheus.yml": "promtool check config",
    "prometheus/rules/": "promtool check rules, and against a live Prometheus",
    "prometheus/tests/": "promtool test rules",
    "grafana/dashboards/hookline-overview.json": "every query run against a real Prometheus",
    "grafana/build_dashboard.py": "ruff, mypy; its output equals the committed JSON",
    "grafana/provisioning/": "tests/deploy/test_grafana.py, test_compose.py",
    "docker/Dockerfile": "Docker's own Dockerfile parser (the `dockerfile` package)",
    "docker/Dockerfile.dockerignore": "tests/deploy/test_compose.py (COPY sources let through)",
    "compose.yaml": "docker-compose config",
    "rabbitmq/enabled_plugins": "erl file:consult (as RabbitMQ reads it); both plugins",
    "k8s/base/": "kubectl kustomize, kubernetes-validate --strict",
    "k8s/overlays/": "kubectl kustomize, kubernetes-validate --strict",
    "k8s/build_prometheusrule.py": "ruff, mypy; its output equals the committed rule",
}


def test_every_file_under_deploy_has_a_checker() -> None:
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    on_disk = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    files = {path.removeprefix("deploy/") for path in tracked} | {
        path for path in on_disk if "__pycache__" not in path
    }
    unchecked = [f for f in sorted(files) if not any(
        f == key or (key.endswith("/") and f.startswith(key)) for key in CHECKED_BY)]  # fmt: skip
    assert not unchecked, f"say in CHECKED_BY what validates: {unchecked}"
