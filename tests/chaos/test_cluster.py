"""A three-node RabbitMQ cluster loses a node under load: lose nothing.

Three private nodes (their own ports, data and HOME, one shared cookie,
clustered with `join_cluster`), the five programs given all three addresses in
RABBITMQ_URL, quorum queues with a member on every node. Mid-load the node
most programs are connected to is killed with SIGKILL: its connections drop,
the queues it led elect new leaders on the survivors, and every program
reconnects to the next address. Requests that reach the gateway while it
reconnects get a clear UNAVAILABLE; every other one gets exactly one right
answer; afterwards a second load must see no error at all and both workers.
Prints `chaos cluster ...` lines (`pytest -m chaos -s`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calcmq import topology
from tests.chaos.load import StreamLoad
from tests.chaos.test_chaos import TOTAL, WORKER_ENV, assert_clean, assert_serving
from tests.conftest import show_logs_if_failed
from tests.support import PrivateBroker, System, private_cluster, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

WORKERS = 2
PROGRAMS = WORKERS + 2  # the AMQP connections: workers, dispatcher, gateway
# How long the programs may take to be back on the surviving nodes.
RECOVERY_S = 30
# How long a whole load may take, fault included (normally a few seconds).
LOAD_S = 60
# Requests sent once every program is back: no error allowed, every worker busy.
AFTER = 400


@dataclass
class Cluster:
    nodes: list[PrivateBroker]
    formed_in: float  # seconds to boot and join the nodes

    @property
    def url(self) -> str:
        """The first node's URL, then the others as bare host:port (same credentials and vhost)."""
        return ",".join([self.nodes[0].url, *(node.address for node in self.nodes[1:])])

    def number(self, node: PrivateBroker) -> int:
        return self.nodes.index(node) + 1


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    began = time.monotonic()
    with private_cluster(tmp_path / "cluster", size=3) as nodes:
        yield Cluster(nodes, time.monotonic() - began)


@pytest.fixture
def cluster_system(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(cluster.url, tmp_path, workers=WORKERS, extra_env=WORKER_ENV)
    try:
        yield system.start()
    finally:
        system.stop()
        show_logs_if_failed(request, system)


def quorum_queues(node: PrivateBroker) -> dict[str, dict[str, Any]]:
    """Each quorum queue of the default vhost as `node` sees it: members, leader, online members."""
    rows = json.loads(node.ctl("list_queues", "name", "type", "members", "leader", "online", "--formatter", "json"))
    return {row["name"]: row for row in rows if row["type"] == "quorum"}


def connections(node: PrivateBroker, nodes: list[PrivateBroker]) -> dict[str, list[str]]:
    """Client connection names by the node they are on, asked of `node`. The listing
    is cluster-wide (live nodes only); a connection's server port tells its node."""
    by_port = {n.port: n.node for n in nodes}
    rows = json.loads(node.ctl("list_connections", "port", "client_properties", "--formatter", "json"))
    found: dict[str, list[str]] = {n.node: [] for n in nodes}
    for row in rows:
        properties = {key: value for key, _, value in row["client_properties"]}
        found[by_port[row["port"]]].append(str(properties.get("connection_name", "?")))
    return found


def error_details(load: StreamLoad) -> dict[str, int]:
    """How often each error message came back, the commonest first."""
    with load.answers.lock:
        messages = Counter(r[0].error.message for r in load.answers.by_id.values() if r[0].HasField("error"))
    return dict(messages.most_common(5))


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def test_a_cluster_node_killed_under_load_loses_nothing(cluster: Cluster, cluster_system: System) -> None:
    system, nodes = cluster_system, cluster.nodes
    began = time.monotonic()
    names = {node.node for node in nodes}

    # Every queue the programs declared has a member on each of the three nodes.
    queues = quorum_queues(nodes[-1])
    assert set(queues) == {*topology.QUEUES, topology.reply_queue_name(system.gateway_id)}, queues
    for name, row in queues.items():
        assert set(row["members"]) == names, f"{name}: members {row['members']}"

    # Which node do gateway, dispatcher and workers use? Kill the busiest.
    def connected(members: list[PrivateBroker]) -> int:
        found = connections(members[0], nodes)
        return sum(len(found[member.node]) for member in members)

    wait_until(lambda: connected(nodes) == PROGRAMS, 30, f"{PROGRAMS} AMQP connections")
    before = connections(nodes[-1], nodes)
    victim = max(nodes, key=lambda node: len(before[node.node]))
    survivors = [node for node in nodes if node is not victim]
    led = [name for name, row in queues.items() if row["leader"] == victim.node]

    load = StreamLoad(system.gateway_address, "cluster-node-kill", TOTAL, timeout=LOAD_S + 30).start()
    load.wait_answered(TOTAL // 3)
    victim.kill()
    killed_at = time.monotonic()
    load.assert_mid_load()

    # Every program is back on a surviving node and the gateway serves again.
    def recovered() -> bool:
        return connected(survivors) == PROGRAMS and serving(system.gateway_address)

    try:
        wait_until(recovered, RECOVERY_S, "every program reconnected to a surviving node, the gateway serving")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; connections now: {connections(survivors[0], nodes)}") from None
    recovered_in = time.monotonic() - killed_at

    # A pipeline wedged by the failover stalls here instead of hanging to the stream's deadline.
    load.wait_answered(TOTAL, timeout=LOAD_S)
    scenario = (
        f"cluster kill -9 node {cluster.number(victim)} of 3 ({len(before[victim.node])} of {PROGRAMS} "
        f"connections, leader of {len(led)} of {len(queues)} queues)"
    )
    assert_clean(load.join(timeout=10), scenario, allowed_errors=("UNAVAILABLE",))

    # The queues elected leaders on the survivors and lost only the dead member.
    for name, row in quorum_queues(survivors[0]).items():
        assert row["leader"] in names - {victim.node}, f"{name}: leader {row['leader']}"
        assert set(row["online"]) == names - {victim.node}, f"{name}: online {row['online']}"

    # Back to normal: UNAVAILABLE was for the reconnect only, and both workers
    # take tasks again (one wedged by the failover would not).
    again = StreamLoad(system.gateway_address, "cluster-after-kill", AFTER, timeout=LOAD_S).start()
    again.wait_answered(AFTER, timeout=LOAD_S)
    try:
        assert_clean(again.join(timeout=10), "cluster after the kill, every program back")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the errors: {error_details(again)}") from None
    with again.answers.lock:
        workers = {results[0].worker for results in again.answers.by_id.values()}
    assert workers == {f"worker{i + 1}" for i in range(WORKERS)}, f"only {sorted(workers)} answered"
    assert_serving(system)

    spread = connections(survivors[0], nodes)
    on = ", ".join(f"node {cluster.number(n)}: {len(spread[n.node])}" for n in survivors)
    print(
        f"chaos cluster: 3 nodes formed in {cluster.formed_in:.1f}s; every program back within "
        f"{recovered_in:.1f}s of the kill ({on}); test body {time.monotonic() - began:.1f}s"
    )
