"""calcmq.replies.Replies: who waits for which reply, and what is kept for GetResult."""

from __future__ import annotations

import asyncio
import gc
import time

import grpc
import pytest

from calcmq.arithmetic import CalcError
from calcmq.proto import calculator_pb2 as pb
from calcmq.replies import Replies

pytestmark = pytest.mark.unit


def result(request_id: str = "r-1", value: float = 5.0) -> pb.CalculationResult:
    return pb.CalculationResult(request_id=request_id, result=value, worker="w1", attempts=1)


def kept(replies: Replies, request_id: str) -> pb.CalculationResult:
    found = replies.result(request_id)
    assert found is not None, f"no kept result for {request_id}"
    return found


def later(seconds: float = 30.0) -> float:
    return time.time() + seconds


class FakeClock:
    """Stands in for time.time, which Replies uses for result TTLs (they are
    stored on disk, so they are wall-clock times).

    Install it only outside a running event loop.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "time", fake)
    return fake


# -- the ordinary path --------------------------------------------------------------------------


def test_deliver_resolves_the_expected_future():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        assert not future.done()
        assert len(replies) == 1
        assert replies.waiting("r-1") is future
        assert replies.deliver(result("r-1", 5.0), from_submit=False) is True
        assert (await future).result == 5.0
        assert len(replies) == 0
        assert replies.waiting("r-1") is None
        assert replies.dropped == 0

    asyncio.run(scenario())


def test_an_error_result_is_delivered_like_any_other():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        error = pb.CalculationResult(request_id="r-1", error=pb.Error(code=3, message="division by zero"))
        replies.deliver(error, from_submit=False)
        assert (await future).error.message == "division by zero"

    asyncio.run(scenario())


def test_replies_reach_their_own_waiters_only():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        first = replies.expect("a", later(), keep=False)
        second = replies.expect("b", later(), keep=False)
        replies.deliver(result("b", 2.0), from_submit=False)
        assert second.result().result == 2.0
        assert not first.done()
        assert len(replies) == 1

    asyncio.run(scenario())


def test_a_result_nobody_keeps_is_not_returned_by_result():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("r-1", later(), keep=False)
        replies.deliver(result("r-1"), from_submit=False)
        assert replies.result("r-1") is None

    asyncio.run(scenario())


# -- duplicates and late replies ------------------------------------------------------------------


def test_a_second_delivery_of_the_same_id_is_dropped_and_counted():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        assert replies.deliver(result("r-1", 1.0), from_submit=False) is True
        assert replies.deliver(result("r-1", 2.0), from_submit=False) is False
        assert replies.dropped == 1
        assert future.result().result == 1.0  # the first answer stands

    asyncio.run(scenario())


def test_a_reply_nobody_waits_for_is_dropped_and_counted():
    replies = Replies(result_ttl=60)
    assert replies.deliver(result("stray"), from_submit=False) is False
    assert replies.dropped == 1
    assert replies.result("stray") is None
    assert len(replies) == 0


def test_a_submit_reply_nobody_waits_for_is_kept_for_get_result():
    replies = Replies(result_ttl=60)
    assert replies.deliver(result("ticket-1", 9.0), from_submit=True) is True
    assert replies.dropped == 0
    assert kept(replies, "ticket-1").result == 9.0


def test_a_second_submit_reply_for_a_kept_result_is_dropped():
    replies = Replies(result_ttl=60)
    replies.deliver(result("ticket-1", 9.0), from_submit=True)
    assert replies.deliver(result("ticket-1", 10.0), from_submit=True) is False
    assert replies.dropped == 1
    assert kept(replies, "ticket-1").result == 9.0


def test_a_duplicate_of_a_submitted_request_is_dropped():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("t-1", later(), keep=True)
        replies.deliver(result("t-1", 1.0), from_submit=True)
        assert replies.deliver(result("t-1", 2.0), from_submit=True) is False
        assert replies.dropped == 1
        assert kept(replies, "t-1").result == 1.0

    asyncio.run(scenario())


# -- kept results and their TTL ------------------------------------------------------------------


def test_a_kept_result_is_returned_until_its_ttl_passes(monkeypatch):
    async def scenario(replies: Replies) -> None:
        future = replies.expect("t-1", later(), keep=True)
        replies.deliver(result("t-1", 4.0), from_submit=True)
        assert (await future).result == 4.0

    replies = Replies(result_ttl=10)
    asyncio.run(scenario(replies))
    clock = FakeClock()
    monkeypatch.setattr(time, "time", clock)
    assert kept(replies, "t-1").result == 4.0
    clock.now += 9.9
    assert kept(replies, "t-1").result == 4.0
    clock.now += 0.2
    assert replies.result("t-1") is None


def test_a_kept_result_expires_in_real_time_with_a_tiny_ttl():
    async def scenario() -> None:
        replies = Replies(result_ttl=0.05)
        replies.expect("t-1", later(), keep=True)
        replies.deliver(result("t-1"), from_submit=False)
        assert replies.result("t-1") is not None
        await asyncio.sleep(0.1)
        assert replies.result("t-1") is None

    asyncio.run(scenario())


def test_each_kept_result_has_its_own_ttl(clock):
    replies = Replies(result_ttl=10)
    replies.deliver(result("old"), from_submit=True)
    clock.now += 6
    replies.deliver(result("new"), from_submit=True)
    clock.now += 5
    assert replies.result("old") is None
    assert replies.result("new") is not None
    clock.now += 6
    assert replies.result("new") is None


# -- deadlines ---------------------------------------------------------------------------------


def test_an_expected_reply_whose_deadline_passes_fails_with_deadline_exceeded():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", time.time() + 0.05, keep=False)
        assert len(replies) == 1
        with pytest.raises(CalcError) as info:
            await asyncio.wait_for(future, 2)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(replies) == 0
        assert replies.waiting("r-1") is None

    asyncio.run(scenario())


def test_a_deadline_already_passed_expires_at_once():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", time.time() - 10, keep=False)
        await asyncio.sleep(0.01)
        assert future.done()
        assert isinstance(future.exception(), CalcError)
        assert len(replies) == 0

    asyncio.run(scenario())


def test_a_reply_after_the_deadline_is_dropped():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("r-1", time.time() + 0.01, keep=False)
        await asyncio.sleep(0.05)
        assert replies.deliver(result("r-1"), from_submit=False) is False
        assert replies.dropped == 1

    asyncio.run(scenario())


def test_a_delivered_reply_is_not_failed_when_its_deadline_later_passes():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", time.time() + 0.03, keep=False)
        replies.deliver(result("r-1", 3.0), from_submit=False)
        await asyncio.sleep(0.08)
        assert future.result().result == 3.0
        assert len(replies) == 0

    asyncio.run(scenario())


def test_a_deadline_failure_nobody_awaits_is_not_reported_as_unretrieved(caplog):
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("r-1", time.time(), keep=True)
        await asyncio.sleep(0.02)

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text


# -- forget ------------------------------------------------------------------------------------


def test_forget_fails_the_waiter_with_the_given_error():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        error = CalcError(grpc.StatusCode.UNAVAILABLE, "broker unreachable")
        replies.forget("r-1", error)
        assert len(replies) == 0
        with pytest.raises(CalcError) as info:
            await future
        assert info.value is error
        assert replies.deliver(result("r-1"), from_submit=False) is False

    asyncio.run(scenario())


def test_forget_an_unknown_id_does_nothing():
    replies = Replies(result_ttl=60)
    replies.forget("nobody", CalcError(grpc.StatusCode.UNAVAILABLE, "x"))
    assert len(replies) == 0
    assert replies.dropped == 0


def test_forget_cancels_the_deadline_timer():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", time.time() + 0.02, keep=False)
        error = CalcError(grpc.StatusCode.UNAVAILABLE, "broker unreachable")
        replies.forget("r-1", error)
        await asyncio.sleep(0.05)
        assert future.exception() is error

    asyncio.run(scenario())


# -- joining a request under way -----------------------------------------------------------------


def test_a_caller_joining_before_the_confirm_waits_for_it_then_shares_the_reply():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        joining = asyncio.ensure_future(replies.joined("r-1"))
        await asyncio.sleep(0.01)
        assert not joining.done(), "no answer to a joiner before the broker has the request"
        replies.confirmed("r-1")
        assert await joining is future
        replies.deliver(result("r-1", 7.0), from_submit=False)
        assert (await future).result == 7.0

    asyncio.run(scenario())


def test_a_caller_joining_after_the_confirm_does_not_wait():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        future = replies.expect("r-1", later(), keep=False)
        replies.confirmed("r-1")
        assert await asyncio.wait_for(replies.joined("r-1"), 0.5) is future

    asyncio.run(scenario())


def test_a_joiner_of_a_request_that_could_not_be_published_gets_the_error():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("r-1", later(), keep=False)
        joining = asyncio.ensure_future(replies.joined("r-1"))
        await asyncio.sleep(0.01)
        error = CalcError(grpc.StatusCode.UNAVAILABLE, "broker unreachable")
        replies.forget("r-1", error)
        with pytest.raises(CalcError) as info:
            await joining
        assert info.value is error

    asyncio.run(scenario())


def test_a_submit_upgrading_a_confirmed_call_makes_joiners_wait_for_its_own_confirm():
    async def scenario() -> None:
        replies = Replies(result_ttl=60)
        replies.expect("r-1", later(), keep=False)
        replies.confirmed("r-1")
        replies.expect("r-1", later(60), keep=True)  # published again, as a submit
        joining = asyncio.ensure_future(replies.joined("r-1"))
        await asyncio.sleep(0.01)
        assert not joining.done()
        replies.confirmed("r-1")
        await asyncio.wait_for(joining, 0.5)

    asyncio.run(scenario())
