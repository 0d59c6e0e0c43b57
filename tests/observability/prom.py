"""A real Prometheus server (Debian's `prometheus` package) scraping local processes."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.processes import free_port


class Prometheus:
    """Scrapes `targets` (job name -> ports on 127.0.0.1) every `scrape_interval`."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Mapping[str, Sequence[int]],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [
                    {"targets": [f"127.0.0.1:{port}" for port in ports]}]}
                for job, ports in targets.items()
            ],
        }  # fmt: skip
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in close())
        self._log_path = workdir / "prometheus.log"
        self._proc = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {timeout_s}s:\n{self.log()}")

    def wait_scraping(self, jobs: int, timeout_s: float = 30) -> None:
        """Until every one of `jobs` targets has been scraped at least twice. Ready is not
        enough: Prometheus hands new targets to its scrapers only every few seconds, so a
        run started at ready loses its first seconds of samples (and rate() reads low)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = self.finite_values("count_over_time(up[1h])")
            if len(counts) >= jobs and min(counts) >= 2:
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus scraped too little within {timeout_s}s:\n{self.log()}")

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now (scalars come back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def finite_values(self, expr: str) -> list[float]:
        values = [float(sample["value"][1]) for sample in self.query(expr)]
        return [value for value in values if math.isfinite(value)]

    def targets_up(self) -> dict[str, str]:
        active = self.api("targets")["activeTargets"]
        return {target["scrapeUrl"]: target["health"] for target in active}

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._log.close()
