from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.support import System, finish_deleting_vhosts, private_vhost


@pytest.fixture(scope="session", autouse=True)
def _vhosts_deleted() -> Iterator[None]:
    yield
    finish_deleting_vhosts()


@pytest.fixture
def vhost_url() -> Iterator[str]:
    """A private vhost for one test."""
    with private_vhost() as url:
        yield url


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The five programs (two workers) on a private vhost, shared by one module's
    tests; tests that kill or restart processes build their own System."""
    with private_vhost() as url:
        running = System(url, tmp_path_factory.mktemp("system"), workers=2)
        try:
            yield running.start()
        finally:
            running.stop()


@pytest.fixture
def gateway(system: System, request: pytest.FixtureRequest) -> Iterator[pb_grpc.GatewayStub]:
    with grpc.insecure_channel(system.gateway_address) as channel:
        yield pb_grpc.GatewayStub(channel)
    show_logs_if_failed(request, system)


def show_logs_if_failed(request: pytest.FixtureRequest, system: System) -> None:
    """Process logs go into the failure report, where they explain the most."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(system.logs())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Remember each phase's outcome so fixtures can print process logs on failure."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())
