"""The Gateway gRPC service: every call is published to calc.requests and
answered from this gateway's own reply queue.

All of it runs on one event loop (grpc.aio and pika's AsyncioConnection): a
waiting call is a future in `Replies`, not a thread, and publisher confirms
are futures settled by delivery tag (calcmq.amqp), so many are in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from calcmq import arithmetic, codec, grpc_util, logs, metrics, topology
from calcmq.amqp import RESOURCE_LOCKED, Broker, BrokerUnavailable, ChannelClosed, Delivery, Session, SessionRefused
from calcmq.arithmetic import CalcError
from calcmq.auth import BearerTokenInterceptor
from calcmq.config import Settings
from calcmq.consumer import InlineConsumer, reject
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from calcmq.replies import Replies
from calcmq.tickets import TicketStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
PUBLISH_TIMEOUT = 5.0
STREAM_WINDOW = 1024
REPLY_PREFETCH = 1000


class GatewayService(pb_grpc.GatewayServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_id = settings.effective_gateway_id()
        self.reply_queue = topology.reply_queue_name(self.gateway_id)
        self.tickets = TicketStore(settings.ticket_store_path())
        self.replies = Replies(settings.result_ttl, self.tickets)
        metrics.INFLIGHT.set_function(lambda: len(self.replies))
        self.consumer = InlineConsumer(self.reply_queue, self._on_reply)
        self.broker = Broker(
            settings.rabbitmq_url,
            ca_file=settings.rabbitmq_ca,
            name=f"gateway {settings.effective_gateway_id()}",
            prefetch=REPLY_PREFETCH,
            on_ready=self._on_ready,
            reply_queue=self.reply_queue,
        )
        self.broker_task: asyncio.Task[None] | None = None
        self.health: grpc_util.HealthReporter | None = None

    # -- the four RPCs -------------------------------------------------------

    async def Calculate(
        self, request: pb.CalculationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CalculationResult:
        result = await self._answer("Calculate", _with_id(request), self._deadline(context))
        if result.HasField("error"):
            await context.abort(codec.status_of(result.error.code), result.error.message)
        return result

    async def Submit(self, request: pb.CalculationRequest, context: grpc.aio.ServicerContext) -> pb.Ticket:
        request = _with_id(request)
        try:
            await self._start(
                request, time.time() + min(self.settings.result_ttl, codec.MAX_DEADLINE_SECONDS), keep=True
            )
        except CalcError as exc:
            metrics.labelled(metrics.REQUESTS, "Submit", _operation(request), exc.code.name).inc()
            await context.abort(exc.code, exc.message)
        metrics.labelled(metrics.REQUESTS, "Submit", _operation(request), "OK").inc()
        return pb.Ticket(request_id=request.request_id)

    async def GetResult(self, ticket: pb.Ticket, context: grpc.aio.ServicerContext) -> pb.CalculationResult:
        request_id = ticket.request_id
        logs.request_id.set(request_id)
        result = self.replies.result(request_id)
        if result is None:
            try:
                future = self.replies.waiting(request_id)
                if future is None:
                    raise CalcError(grpc.StatusCode.NOT_FOUND, "no such ticket (never issued, or expired)")
                result = await self._outcome(future, self._deadline(context))
            except CalcError as exc:
                result = codec.error_result(request_id, exc.code, exc.message)
        metrics.labelled(metrics.REQUESTS, "GetResult", "", codec.outcome(result)).inc()
        if result.HasField("error"):
            await context.abort(codec.status_of(result.error.code), result.error.message)
        return result

    async def CalculateStream(
        self, request_iterator: AsyncIterator[pb.CalculationRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CalculationResult]:
        results: asyncio.Queue[pb.CalculationResult | None] = asyncio.Queue()  # None: the stream is over
        # A stream with a deadline gives it to every request; one without gives
        # each request REQUEST_TIMEOUT from its own arrival, so a long stream
        # does not run its later requests out of time.
        stream_deadline = None if context.time_remaining() is None else self._deadline(context)
        tasks: set[asyncio.Task[None]] = set()
        unanswered = 0
        reading = True

        def answered(result: pb.CalculationResult) -> None:
            nonlocal unanswered
            results.put_nowait(result)
            unanswered -= 1
            if not reading and not unanswered:
                results.put_nowait(None)

        async def one(request: pb.CalculationRequest, deadline: float) -> None:
            try:
                result = await self._answer("CalculateStream", request, deadline)
            except Exception:  # every request in a stream gets an answer, even a bug's
                log.exception("failed a stream request")
                result = codec.error_result(request.request_id, grpc.StatusCode.INTERNAL, "internal error")
            answered(result)

        async def read_all() -> None:
            nonlocal unanswered, reading
            try:
                async for request in request_iterator:
                    await window.acquire()
                    request = _with_id(request)
                    deadline = stream_deadline or time.time() + self.settings.request_timeout
                    unanswered += 1
                    if not self._start_new("CalculateStream", request, deadline, answered):
                        task = asyncio.create_task(one(request, deadline))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except BaseException:
                reading = False
                for task in tasks:
                    task.cancel()
                results.put_nowait(None)  # the writer below ends now
                raise
            reading = False
            if not unanswered:
                results.put_nowait(None)

        # A client that writes and never reads stalls its own stream at
        # STREAM_WINDOW requests, instead of growing the gateway's memory.
        window = asyncio.Semaphore(STREAM_WINDOW)
        reader = asyncio.create_task(read_all())
        try:
            while (result := await results.get()) is not None:
                yield result
                window.release()
            await asyncio.wait([reader])
            error = None if reader.cancelled() else reader.exception()
        finally:
            reader.cancel()
        if error is not None:
            log.info("a stream's requests could not be read: %s", error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a request in the stream could not be read")

    def _start_new(
        self, rpc: str, request: pb.CalculationRequest, deadline: float, give: Callable[[pb.CalculationResult], None]
    ) -> bool:
        """Publish a new request and `give` its result (or error) from callbacks: no
        coroutine waits on the confirm and the reply, and a stream's requests need no
        task each. False for a request id known here (a repeat), which then takes
        `_start`'s joining path."""
        request_id = request.request_id
        logs.request_id.set(request_id)
        if self.replies.kept(request_id) is not None or self.replies.result(request_id) is not None:
            return False
        started = time.perf_counter()
        given = False

        def counted(result: pb.CalculationResult) -> None:
            nonlocal given
            if not given:
                given = True
                _count(rpc, request, result, started)
                give(result)

        def finish(future: asyncio.Future[pb.CalculationResult]) -> None:
            timer.cancel()
            error = _failure(future)
            counted(future.result() if error is None else _error_result(request_id, error))

        def expire() -> None:
            counted(codec.error_result(request_id, grpc.StatusCode.DEADLINE_EXCEEDED, "no result before the deadline"))

        try:
            arithmetic.check_request_id(request_id)
            future, confirm = self._publish(request, deadline, keep=False)
        except Exception as exc:
            counted(_error_result(request_id, exc))
            return True
        # Its own deadline: a Submit of the same id may extend the reply's wait in Replies.
        timer = asyncio.get_running_loop().call_later(max(deadline - time.time(), 0), expire)
        confirm.add_done_callback(functools.partial(self._on_confirm, request_id))
        future.add_done_callback(finish)
        return True

    # -- the shared path -----------------------------------------------------

    async def _answer(self, rpc: str, request: pb.CalculationRequest, deadline: float) -> pb.CalculationResult:
        """The request's result, or its error as a result; counted and timed."""
        answer: asyncio.Future[pb.CalculationResult] = asyncio.get_running_loop().create_future()
        if self._start_new(rpc, request, deadline, functools.partial(_settle, answer)):
            return await answer  # a caller gone away cancels only this future
        started = time.perf_counter()
        try:
            future = await self._start(request, deadline, keep=False)
            result = await self._outcome(future, deadline)
        except CalcError as exc:
            result = codec.error_result(request.request_id, exc.code, exc.message)
        _count(rpc, request, result, started)
        return result

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining: float | None = context.time_remaining()
        if remaining is None:
            remaining = self.settings.request_timeout
        return time.time() + min(remaining, codec.MAX_DEADLINE_SECONDS)

    async def _start(
        self, request: pb.CalculationRequest, deadline: float, keep: bool
    ) -> asyncio.Future[pb.CalculationResult]:
        """Publish the request (or join the same request id already under way)."""
        request_id = request.request_id
        logs.request_id.set(request_id)
        arithmetic.check_request_id(request_id)
        if (result := self.replies.result(request_id)) is not None:
            if codec.is_final(result):
                done: asyncio.Future[pb.CalculationResult] = asyncio.get_running_loop().create_future()
                done.set_result(result)
                return done
            self.replies.drop_result(request_id)  # a transient failure: a retry runs it again
        kept = self.replies.kept(request_id)
        if kept is not None and (kept or not keep):
            log.info("joined a request already in flight (repeated request_id)")
            return await self.replies.joined(request_id)
        # Past here: a new request, or a Submit of an id under way as a Calculate,
        # which is published again as a submit so its result is kept.
        future, confirm = self._publish(request, deadline, keep)
        try:
            await confirm
        except BrokerUnavailable as exc:
            error = CalcError(grpc.StatusCode.UNAVAILABLE, str(exc))
            self.replies.forget(request_id, error)
            raise error from None
        except asyncio.CancelledError:
            # The caller went away before the confirm: nobody holds a ticket for
            # this, and a retry with the same id must publish again, not wait
            # for a message that may never have reached the broker.
            self.replies.forget(
                request_id, CalcError(grpc.StatusCode.UNAVAILABLE, "cancelled before the broker confirmed")
            )
            raise
        self.replies.confirmed(request_id)
        return future

    def _publish(
        self, request: pb.CalculationRequest, deadline: float, keep: bool
    ) -> tuple[asyncio.Future[pb.CalculationResult], asyncio.Future[None]]:
        """Publish a request: the future of its reply, and that of the broker's confirm."""
        if not self.broker.ready:
            raise CalcError(grpc.StatusCode.UNAVAILABLE, "broker unreachable")
        if len(self.replies) >= self.settings.gateway_max_inflight:
            raise CalcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "gateway at its in-flight limit; retry later")
        if deadline <= time.time():
            raise CalcError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before publishing")
        future = self.replies.expect(request.request_id, deadline, keep)
        kind = codec.KIND_SUBMIT if keep else codec.KIND_CALL
        message = codec.request_message(request, reply_to=self.reply_queue, deadline=deadline, kind=kind)
        confirm = self.broker.publish_nowait(message, topology.REQUESTS, min(PUBLISH_TIMEOUT, deadline - time.time()))
        log.debug("published operation %d", request.operation)
        return future, confirm

    def _on_confirm(self, request_id: str, confirm: asyncio.Future[None]) -> None:
        """A stream request's confirm (`_start` awaits the others')."""
        error = _failure(confirm)
        if error is None:
            self.replies.confirmed(request_id)
        else:
            self.replies.forget(request_id, CalcError(grpc.StatusCode.UNAVAILABLE, str(error)))

    async def _outcome(self, future: asyncio.Future[pb.CalculationResult], deadline: float) -> pb.CalculationResult:
        try:
            result = await asyncio.wait_for(asyncio.shield(future), max(deadline - time.time(), 0))
        except TimeoutError:
            raise CalcError(grpc.StatusCode.DEADLINE_EXCEEDED, "no result before the deadline") from None
        return result

    # -- replies -------------------------------------------------------------

    async def _on_ready(self, session: Session) -> None:
        """Consume our reply queue, unless another gateway with our id already does.

        Two consumers would split the replies between them. Quorum queues
        ignore basic.consume's exclusive flag, and a consumer count is no
        proof (a dead cluster node's consumers stay listed), so the lock is an
        exclusive queue: the broker deletes it with its owner's connection.
        """
        try:
            await session.declare_queue(topology.gateway_lock_name(self.gateway_id), exclusive=True)
        except ChannelClosed as exc:
            if exc.reply_code != RESOURCE_LOCKED:
                raise
            raise SessionRefused(f"another gateway consumes {self.reply_queue}; GATEWAY_ID must be unique") from None
        await self.consumer.on_ready(session)

    def _on_reply(self, message: Delivery) -> None:
        try:
            result = codec.decode_result(message)
        except codec.MalformedMessage as exc:
            work = reject(self.broker, message, source=self.reply_queue, reason=str(exc), answer=None)
            self.consumer.spawn(message, work)
            return
        from_submit = message.headers.get(codec.H_KIND) == codec.KIND_SUBMIT
        if not self.replies.deliver(result, from_submit):
            metrics.REPLIES_DROPPED.inc()
        message.ack()


def _with_id(request: pb.CalculationRequest) -> pb.CalculationRequest:
    """The request with its id: the caller's idempotency key, or a new UUID."""
    if request.request_id:
        return request
    named = pb.CalculationRequest()
    named.CopyFrom(request)
    named.request_id = str(uuid.uuid4())
    return named


def _error_result(request_id: str, error: BaseException) -> pb.CalculationResult:
    if isinstance(error, CalcError):
        return codec.error_result(request_id, error.code, error.message)
    log.error("failed a request: %r", error)  # every request gets an answer, even a bug's
    return codec.error_result(request_id, grpc.StatusCode.INTERNAL, "internal error")


def _settle(answer: asyncio.Future[pb.CalculationResult], result: pb.CalculationResult) -> None:
    if not answer.done():
        answer.set_result(result)


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    return asyncio.CancelledError() if future.cancelled() else future.exception()


def _count(rpc: str, request: pb.CalculationRequest, result: pb.CalculationResult, started: float) -> None:
    metrics.labelled(metrics.REQUESTS, rpc, _operation(request), codec.outcome(result)).inc()
    metrics.labelled(metrics.LATENCY, rpc).observe(time.perf_counter() - started)


def _operation(request: pb.CalculationRequest) -> str:
    return arithmetic.OPERATION_NAMES.get(request.operation, "UNKNOWN")


async def create_server(settings: Settings, address: str) -> tuple[grpc.aio.Server, int, GatewayService]:
    """A started Gateway server (port 0: any free port) with its broker link running."""
    service = GatewayService(settings)
    if restored := service.replies.restore():
        log.info("took back %d unexpired ticket(s) from %s", restored, service.tickets.path)
    server = grpc_util.new_server([BearerTokenInterceptor(settings.auth_token)] if settings.auth_token else None)
    pb_grpc.add_GatewayServicer_to_server(service, server)
    health = grpc_util.HealthReporter(grpc_util.add_health_and_reflection(server, [SERVICE_NAME]), [SERVICE_NAME])
    port = grpc_util.bind(server, address, settings.tls_cert, settings.tls_key)
    service.health = health
    # SERVING only while the broker link is up: calls would fail otherwise.
    service.broker.on_state_change = health.report
    await server.start()
    service.broker_task = asyncio.get_running_loop().create_task(service.broker.run())
    return server, port, service


async def shutdown(server: grpc.aio.Server, service: GatewayService, grace: float = 10.0) -> None:
    """Refuse new calls, let calls in flight finish (up to `grace`), then let go of the broker.

    Replies still on their way stay in the durable reply queue for the next
    start with the same GATEWAY_ID.
    """
    if service.health is not None:
        service.health.report(False)  # draining: load balancers should look elsewhere
    await server.stop(grace)
    await service.consumer.drain(timeout=5)
    service.broker.stop()
    if service.broker_task is not None:
        await service.broker_task
    service.tickets.close()
