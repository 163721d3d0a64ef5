"""TicketStore and Replies.restore: a restarted gateway keeps the tickets it issued."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from calcmq.proto import calculator_pb2 as pb
from calcmq.replies import Replies
from calcmq.tickets import TicketStore

pytestmark = pytest.mark.unit


def test_issued_and_resolved_tickets_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tickets.sqlite3"
    store = TicketStore(path)
    store.issued("waiting", time.time() + 60)
    store.resolved("done", pb.CalculationResult(request_id="done", result=4).SerializeToString(), time.time() + 60)
    store.close()
    live = {t.request_id: t for t in TicketStore(path).live()}
    assert live.keys() == {"waiting", "done"}
    assert live["waiting"].result is None
    assert pb.CalculationResult.FromString(live["done"].result or b"").result == 4


def test_expired_tickets_are_deleted(tmp_path: Path) -> None:
    store = TicketStore(tmp_path / "t.sqlite3")
    store.issued("old", time.time() - 1)
    store.issued("new", time.time() + 60)
    assert [t.request_id for t in store.live()] == ["new"]
    assert store.purge() == 0


def test_a_restarted_gateway_answers_its_old_tickets(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"

    async def before_restart() -> None:
        replies = Replies(result_ttl=60, store=TicketStore(path))
        replies.expect("kept", time.time() + 60, keep=True)
        replies.deliver(pb.CalculationResult(request_id="kept", result=7), from_submit=True)
        replies.expect("pending", time.time() + 60, keep=True)
        replies.expect("a-call", time.time() + 60, keep=False)  # Calculate: not stored

    async def after_restart() -> None:
        replies = Replies(result_ttl=60, store=TicketStore(path))
        assert replies.restore() == 2
        kept = replies.result("kept")
        assert kept is not None and kept.result == 7
        future = replies.waiting("pending")
        assert future is not None and replies.waiting("a-call") is None
        replies.deliver(pb.CalculationResult(request_id="pending", result=9), from_submit=True)
        assert (await future).result == 9

    asyncio.run(before_restart())
    asyncio.run(after_restart())


def test_a_ticket_that_could_not_be_published_is_forgotten_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"

    async def scenario() -> None:
        replies = Replies(result_ttl=60, store=TicketStore(path))
        replies.expect("lost", time.time() + 60, keep=True)
        replies.forget("lost", RuntimeError("broker down"))

    asyncio.run(scenario())
    assert TicketStore(path).live() == []
