"""Replies the gateway waits for, and results it keeps for GetResult.

A map from request id to a future, removed when the reply arrives or when its
deadline passes (so waiting never grows memory without bound), in the shape of
aio-pika's patterns/rpc.py. A reply nobody waits for is counted and dropped:
it is a second answer after a redelivery, or one that came after its caller
gave up. Results of Submit are kept for RESULT_TTL so tickets stay redeemable,
including results that reach a restarted gateway (they are marked as such);
with a TicketStore, issued tickets and their results also survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc

from calcmq.arithmetic import CalcError
from calcmq.proto import calculator_pb2 as pb
from calcmq.tickets import TicketStore

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    future: asyncio.Future[pb.CalculationResult]
    keep: bool  # keep the result for GetResult (a Submit)
    deadline: float
    confirmed: bool = False
    # Resolved once the broker confirmed the request: a caller who joins a
    # request under way waits for it, so no ticket is handed out before then.
    # Made only for such a caller (most requests are never joined).
    published: asyncio.Future[None] | None = None
    timer: asyncio.TimerHandle | None = field(default=None)


class Replies:
    def __init__(self, result_ttl: float, store: TicketStore | None = None) -> None:
        self._result_ttl = result_ttl
        self._store = store
        self._store_purged = time.time()
        self._waiting: dict[str, _Waiting] = {}
        self._results: OrderedDict[str, tuple[float, pb.CalculationResult]] = OrderedDict()
        self.dropped = 0  # second answers after a redelivery, and late ones

    def __len__(self) -> int:
        return len(self._waiting)

    def waiting(self, request_id: str) -> asyncio.Future[pb.CalculationResult] | None:
        entry = self._waiting.get(request_id)
        return entry.future if entry else None

    def kept(self, request_id: str) -> bool | None:
        """Whether the request under way keeps its result (a Submit); None if none is."""
        entry = self._waiting.get(request_id)
        return entry.keep if entry else None

    async def joined(self, request_id: str) -> asyncio.Future[pb.CalculationResult]:
        """The request under way, once the broker has it (CalcError if it never will)."""
        entry = self._waiting[request_id]
        if not entry.confirmed:
            if entry.published is None:
                entry.published = asyncio.get_running_loop().create_future()
                entry.published.add_done_callback(_mark_retrieved)
            await asyncio.shield(entry.published)
        return entry.future

    def confirmed(self, request_id: str) -> None:
        entry = self._waiting.get(request_id)
        if entry is not None:
            _confirm(entry)

    def drop_result(self, request_id: str) -> None:
        """Forget a kept result (a transient failure that a retry should run again)."""
        self._results.pop(request_id, None)
        if self._store is not None:
            self._store.discard(request_id)

    def result(self, request_id: str) -> pb.CalculationResult | None:
        self._purge()
        kept = self._results.get(request_id)
        return kept[1] if kept else None

    def expect(self, request_id: str, deadline: float, keep: bool) -> asyncio.Future[pb.CalculationResult]:
        """Start waiting for `request_id` until `deadline` (epoch seconds).

        A request already under way as a Calculate is upgraded by a Submit:
        its waiters keep their future, which now also keeps its result, until
        the later of the two deadlines.
        """
        loop = asyncio.get_running_loop()
        entry = self._waiting.get(request_id)
        if entry is None:
            entry = _Waiting(loop.create_future(), keep, deadline)
            entry.future.add_done_callback(_mark_retrieved)
            self._waiting[request_id] = entry
        else:
            self._finish(entry)
            entry.keep = entry.keep or keep
            entry.deadline = max(entry.deadline, deadline)
            entry.confirmed = False  # published again: joiners wait for this confirm
            if entry.published is not None and entry.published.done():
                entry.published = None
        entry.timer = loop.call_later(max(entry.deadline - time.time(), 0), self._expire, request_id, entry)
        if keep and self._store is not None:
            self._store.issued(request_id, entry.deadline)
        return entry.future

    def restore(self) -> int:
        """Take back the tickets a previous run of this gateway issued; returns how many."""
        if self._store is None:
            return 0
        tickets = sorted(self._store.live(), key=lambda t: t.expires_at)
        for ticket in tickets:
            if ticket.result is None:
                self.expect(ticket.request_id, ticket.expires_at, keep=True)
                self.confirmed(ticket.request_id)  # it was, before the restart
            else:
                result = pb.CalculationResult()
                result.ParseFromString(ticket.result)
                self._results[ticket.request_id] = (ticket.expires_at, result)
        return len(tickets)

    def forget(self, request_id: str, error: BaseException) -> None:
        """Give up on a request we could not publish; its waiters get `error`."""
        entry = self._waiting.pop(request_id, None)
        if entry is not None:
            self._finish(entry)
            _fail(entry, error)
            if entry.keep and self._store is not None:
                self._store.discard(request_id)

    def deliver(self, result: pb.CalculationResult, from_submit: bool) -> bool:
        """Hand a reply to its waiter; False when nobody wanted it (dropped)."""
        request_id = result.request_id
        self._purge()
        entry = self._waiting.pop(request_id, None)
        if entry is not None:
            self._finish(entry)
            entry.future.set_result(result)
            _confirm(entry)  # an answer proves the broker had it
            if entry.keep:
                self._keep(request_id, result)
            return True
        if from_submit and request_id not in self._results:
            self._keep(request_id, result)  # a ticket issued before this gateway restarted
            return True
        self.dropped += 1
        log.info("dropped a reply nobody waits for (a duplicate, or late)")
        return False

    def _expire(self, request_id: str, entry: _Waiting) -> None:
        if self._waiting.get(request_id) is entry:
            del self._waiting[request_id]
            _fail(entry, CalcError(grpc.StatusCode.DEADLINE_EXCEEDED, "no result before the deadline"))

    @staticmethod
    def _finish(entry: _Waiting) -> None:
        if entry.timer is not None:
            entry.timer.cancel()

    def _keep(self, request_id: str, result: pb.CalculationResult) -> None:
        expires_at = time.time() + self._result_ttl
        self._results[request_id] = (expires_at, result)
        self._results.move_to_end(request_id)
        if self._store is not None:
            self._store.resolved(request_id, result.SerializeToString(), expires_at)
            if expires_at - self._store_purged > self._result_ttl + 60:
                self._store.purge()
                self._store_purged = expires_at - self._result_ttl
        self._purge()

    def _purge(self) -> None:
        now = time.time()
        while self._results:
            request_id, (expires, _) = next(iter(self._results.items()))
            if expires > now:
                break
            del self._results[request_id]


def _confirm(entry: _Waiting) -> None:
    entry.confirmed = True
    if entry.published is not None and not entry.published.done():
        entry.published.set_result(None)


def _fail(entry: _Waiting, error: BaseException) -> None:
    for future in (entry.future, entry.published):
        if future is not None and not future.done():
            future.set_exception(error)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    """A Submit's future may fail with nobody awaiting it; that is not a bug to warn about."""
    if not future.cancelled():
        future.exception()
