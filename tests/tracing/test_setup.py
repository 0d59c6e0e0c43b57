"""Tracing from the standard OTEL_* variables: off unless they name where spans go, and a
value that cannot work stops the process with one line instead of tracing wrongly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from common.errors import ConfigurationError
from common.tracing import configure
from common.tracing.environment import exporters
from common.tracing.setup import resource, sampler

ROOT = Path(__file__).resolve().parents[2]
OTEL = (
    "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_means_no_tracing() -> None:
    assert exporters({}) == []
    assert configure("router") is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console,otlp"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, []),
    ],
)
def test_the_exporters_the_variables_ask_for(environ: dict[str, str], expected: list[str]) -> None:
    assert exporters(environ) == expected


def test_an_unknown_exporter_is_refused_in_words() -> None:
    with pytest.raises(ConfigurationError, match="use otlp, console, none"):
        exporters({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_the_samplers_of_the_specification() -> None:
    assert sampler({}).get_description().startswith("ParentBased{root:AlwaysOnSampler")
    chosen = sampler(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
    )
    assert isinstance(chosen, ParentBased)
    ratio = sampler({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert isinstance(ratio, TraceIdRatioBased) and ratio.rate == 0.25
    assert sampler({"OTEL_TRACES_SAMPLER": "traceidratio"}).rate == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "must be one of always_on"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "0 to 1"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "0 to 1"),
    ],
)
def test_a_sampler_that_cannot_work_is_refused(environ: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        sampler(environ)


def test_grpc_is_refused_since_only_otlp_over_http_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        configure("dispatcher")


def test_the_service_is_named_after_the_process_unless_the_operator_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resource("dispatcher").attributes["service.name"] == "hookline-dispatcher"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=edge,deployment.environment=eu")
    assert resource("dispatcher").attributes["service.name"] == "edge"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "hooks-eu")
    found = resource("router").attributes
    assert (found["service.name"], found["deployment.environment"]) == ("hooks-eu", "eu")


def test_an_exporter_named_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    tracing = configure("api")
    assert tracing is not None
    tracing.shutdown()


def test_the_processor_given_replaces_the_exporters_and_spans_reach_it() -> None:
    memory = InMemorySpanExporter()
    tracing = configure("router", processor=SimpleSpanProcessor(memory))
    assert tracing is not None
    span = tracing.ingest(None, route="/v1/events", tenant="ten_1", events=1)
    span.end()
    (finished,) = memory.get_finished_spans()
    assert finished.name == "hookline.ingest" and finished.parent is None
    assert finished.resource.attributes["service.name"] == "hookline-router"
    tracing.shutdown()


def test_with_tracing_off_a_service_never_loads_the_sdk() -> None:
    # The API and the workers import their modules; with tracing off, configuring it
    # must not import the OpenTelemetry SDK (the exporter alone takes ~60 ms to import).
    script = (
        "import sys\n"
        "import hookline.api.app, router, dispatcher, producer\n"
        "from common.tracing import configure\n"
        "assert configure('dispatcher') is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_service_with_a_variable_that_cannot_work_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HOOKLINE_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_SAMPLER": "sometimes",
        "HOOKLINE_PROCESSES": "1", "HOOKLINE_DATABASE_URL": f"sqlite:///{tmp_path}/h.db",
    })  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "hookline", "router"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "hookline: OTEL_TRACES_SAMPLER must be one of always_on, always_off, traceidratio, "
        "parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
    ]
