"""Baseline worker: `python -m bench.baseline.worker URL CALCULATOR_ADDRESS`.

baseline.tasks -> the Calculator over gRPC -> the reply_to queue, matched by
correlation id. pika's I/O loop must never block, so the gRPC call is made
with the future API; its callback runs on a gRPC thread and hands the result
back to the I/O loop with add_callback_threadsafe (the pattern of pika's
basic_consumer_threaded example, without a thread per message). The task is
acked only when the broker confirmed the reply.
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

import grpc

from bench.baseline.common import TASKS, Program, persistent, setup_logging
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

CALL_TIMEOUT = 5.0


class Worker(Program):
    queues = (TASKS,)

    def __init__(self, url: str, calculator: str) -> None:
        super().__init__(url)
        self.name = f"baseline-{os.getpid()}"
        self.grpc_channel = grpc.insecure_channel(calculator)
        stub = pb_grpc.CalculatorStub(self.grpc_channel)
        self.methods = {
            pb.SUM: stub.Sum,
            pb.SUBTRACT: stub.Subtract,
            pb.MULTIPLY: stub.Multiply,
            pb.DIVIDE: stub.Divide,
            pb.POWER: stub.Power,
            pb.MODULO: stub.Modulo,
        }

    def ready(self) -> None:
        self.channel.basic_consume(TASKS, self.on_message)

    def on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        request = pb.CalculationRequest.FromString(body)
        call = self.methods.get(request.operation)
        if call is None:
            self.reply(method.delivery_tag, properties, _error(request, grpc.StatusCode.INVALID_ARGUMENT, "bad op"))
            return
        future = call.future(pb.OperationRequest(num1=request.num1, num2=request.num2), timeout=CALL_TIMEOUT)
        done = functools.partial(self.on_computed, method.delivery_tag, properties, request)
        future.add_done_callback(lambda f: self.connection.ioloop.add_callback_threadsafe(functools.partial(done, f)))

    def on_computed(self, delivery_tag: int, properties: Any, request: pb.CalculationRequest, future: Any) -> None:
        """Back on the I/O loop: turn the calculator's answer into a reply."""
        error = future.exception()
        if error is None:
            result = pb.CalculationResult(
                request_id=request.request_id, result=future.result().result, worker=self.name, attempts=1
            )
        else:
            result = _error(request, error.code(), error.details() or "")
        self.reply(delivery_tag, properties, result)

    def reply(self, delivery_tag: int, properties: Any, result: pb.CalculationResult) -> None:
        if not self.channel.is_open:
            return  # stopping: the unacked task goes back to the queue
        reply = persistent(correlation_id=properties.correlation_id)
        self.publish(properties.reply_to, result.SerializeToString(), reply, delivery_tag)

    def confirmed(self, item: Any, ok: bool) -> None:
        if ok:
            self.channel.basic_ack(item)
        else:
            self.channel.basic_nack(item, requeue=True)


def _error(request: pb.CalculationRequest, code: grpc.StatusCode, message: str) -> pb.CalculationResult:
    return pb.CalculationResult(request_id=request.request_id, error=pb.Error(code=code.value[0], message=message))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="AMQP URL, vhost included")
    parser.add_argument("calculator", help="HOST:PORT of calculator_server.py")
    args = parser.parse_args(argv)
    setup_logging()
    worker = Worker(args.url, args.calculator)
    try:
        return worker.run()
    finally:
        worker.grpc_channel.close()


if __name__ == "__main__":
    raise SystemExit(main())
