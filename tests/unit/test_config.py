"""calcmq.config: defaults, environment, flags; and logs.mask_url."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from calcmq import config
from calcmq.config import Settings
from calcmq.logs import mask_url

pytestmark = pytest.mark.unit

ENV_NAMES = [f.metadata["env"] for f in dataclasses.fields(Settings)]

CONTRACT_DEFAULTS = {
    "rabbitmq_url": "amqp://guest:guest@localhost:5672/%2F",
    "gateway_listen": "[::]:50051",
    "gateway_address": "localhost:50051",
    "calculator_listen": "[::]:50052",
    "calculator_address": "localhost:50052",
    "gateway_max_inflight": 10000,
    "worker_concurrency": 64,
    "log_level": "INFO",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No setting leaks in from the shell running the tests."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


# -- defaults ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), CONTRACT_DEFAULTS.items())
def test_default_matches_the_public_contract(name, value):
    assert getattr(Settings(), name) == value
    assert getattr(config.from_env({}), name) == value


def test_every_setting_is_named_after_its_upper_case_environment_variable():
    for f in dataclasses.fields(Settings):
        assert f.metadata["env"] == f.name.upper()
        assert f.metadata["help"]


def test_empty_environment_gives_the_defaults():
    assert config.from_env({}) == Settings()


# -- environment ----------------------------------------------------------------------------


def test_environment_overrides_defaults_with_converted_types():
    settings = config.from_env(
        {
            "RABBITMQ_URL": "amqp://u:p@broker:5673/vh",
            "GATEWAY_LISTEN": "0.0.0.0:6000",
            "CALCULATOR_ADDRESS": "calc:7000",
            "GATEWAY_MAX_INFLIGHT": "50",
            "WORKER_CONCURRENCY": "4",
            "REQUEST_TIMEOUT": "2.5",
            "LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.rabbitmq_url == "amqp://u:p@broker:5673/vh"
    assert settings.gateway_listen == "0.0.0.0:6000"
    assert settings.calculator_address == "calc:7000"
    assert settings.gateway_max_inflight == 50
    assert settings.worker_concurrency == 4
    assert settings.request_timeout == 2.5
    assert isinstance(settings.request_timeout, float)
    assert settings.log_level == "DEBUG"
    assert settings.gateway_address == "localhost:50051"  # untouched


def test_empty_environment_variable_keeps_the_default():
    assert config.from_env({"WORKER_CONCURRENCY": "", "GATEWAY_LISTEN": ""}) == Settings()


def test_unrelated_environment_variables_are_ignored():
    assert config.from_env({"PATH": "/bin", "WORKER": "3"}) == Settings()


def test_from_env_without_argument_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("WORKER_CONCURRENCY", "3")
    assert config.from_env().worker_concurrency == 3


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("WORKER_CONCURRENCY", "abc"), ("GATEWAY_MAX_INFLIGHT", "1.5"), ("MAX_ATTEMPTS", "ten"), ("REQUEST_TIMEOUT", "x")],
)
def test_a_value_of_the_wrong_type_exits_naming_the_variable(variable, raw):
    with pytest.raises(SystemExit) as info:
        config.from_env({variable: raw})
    message = str(info.value.code)
    assert message.startswith("error: ")
    assert variable in message
    assert repr(raw) in message


@pytest.mark.parametrize(
    ("variable", "raw"), [("WORKER_CONCURRENCY", "0"), ("GATEWAY_MAX_INFLIGHT", "-5"), ("RESULT_TTL", "0")]
)
def test_a_number_that_is_not_positive_exits_naming_the_variable(variable, raw):
    with pytest.raises(SystemExit) as info:
        config.from_env({variable: raw})
    assert variable in str(info.value.code)
    assert "positive" in str(info.value.code)


def test_a_nan_duration_exits_naming_the_variable():
    with pytest.raises(SystemExit) as info:
        config.from_env({"REQUEST_TIMEOUT": "nan"})
    assert "REQUEST_TIMEOUT" in str(info.value.code)


# -- flags -----------------------------------------------------------------------------------


def test_flag_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_LISTEN", "[::]:1111")
    settings = config.load("gateway", ["gateway_listen"], ["--gateway-listen", "[::]:2222"])
    assert settings.gateway_listen == "[::]:2222"


def test_environment_applies_when_the_flag_is_absent(monkeypatch):
    monkeypatch.setenv("GATEWAY_LISTEN", "[::]:1111")
    assert config.load("gateway", ["gateway_listen"], []).gateway_listen == "[::]:1111"


def test_defaults_apply_with_neither_flag_nor_environment():
    assert config.load("gateway", ["gateway_listen", "worker_concurrency"], []) == Settings()


def test_flags_are_converted_to_the_settings_type():
    settings = config.load(
        "worker", ["worker_concurrency", "retry_delay"], ["--worker-concurrency", "8", "--retry-delay", "0.5"]
    )
    assert settings.worker_concurrency == 8
    assert settings.retry_delay == 0.5


def test_every_program_accepts_log_level():
    assert config.load("calculator", ["calculator_listen"], ["--log-level", "DEBUG"]).log_level == "DEBUG"


def test_flag_with_equals_sign_is_accepted():
    assert config.load("calc", ["calculator_listen"], ["--calculator-listen=[::]:9"]).calculator_listen == "[::]:9"


def test_a_bad_int_flag_exits_naming_the_variable():
    with pytest.raises(SystemExit) as info:
        config.load("gateway", ["gateway_max_inflight"], ["--gateway-max-inflight", "lots"])
    assert "GATEWAY_MAX_INFLIGHT" in str(info.value.code)
    assert "'lots'" in str(info.value.code)


def test_a_flag_the_program_did_not_ask_for_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        config.load("calculator", ["calculator_listen"], ["--worker-concurrency", "3"])
    assert info.value.code == 2
    assert "--worker-concurrency" in capsys.readouterr().err


def test_help_lists_only_the_programs_settings(capsys):
    with pytest.raises(SystemExit) as info:
        config.load("The calculator.", ["calculator_listen"], ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--calculator-listen" in out
    assert "--log-level" in out
    assert "--gateway-listen" not in out


# -- the dataclass ---------------------------------------------------------------------------


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.worker_concurrency = 1  # type: ignore[misc]


def test_effective_ids_default_from_the_host():
    settings = Settings()
    assert settings.effective_gateway_id() == socket.gethostname()
    assert settings.effective_worker_name() == f"{socket.gethostname()}-{os.getpid()}"


def test_effective_ids_use_the_given_names():
    settings = Settings(gateway_id="gw-a", worker_name="worker-7")
    assert settings.effective_gateway_id() == "gw-a"
    assert settings.effective_worker_name() == "worker-7"


# -- logs.mask_url ---------------------------------------------------------------------------


def test_mask_url_hides_the_password():
    masked = mask_url("amqp://guest:s3cret@broker.example:5672/%2F")
    assert "s3cret" not in masked
    assert masked == "amqp://guest:***@broker.example:5672/%2F"


@pytest.mark.parametrize(
    "url",
    ["amqp://user:p%40ss@broker/vh", "amqps://user:hunter2@broker:5671/", "amqp://:pw@broker/"],
)
def test_mask_url_never_shows_the_password(url):
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    masked = mask_url(url)
    assert password not in masked
    assert "***" in masked


@pytest.mark.parametrize("url", ["amqp://broker:5672/%2F", "amqp://guest@broker/", "amqp://localhost"])
def test_mask_url_leaves_a_url_without_password_unchanged(url):
    assert mask_url(url) == url


def test_mask_url_keeps_an_ipv6_host_in_brackets():
    assert mask_url("amqp://u:secret@[::1]:5672/") == "amqp://u:***@[::1]:5672/"
