"""The Calculator gRPC service: the arithmetic behind the queues."""

from __future__ import annotations

import logging

import grpc

from calcmq import arithmetic, grpc_util
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Calculator"].full_name


class CalculatorService(pb_grpc.CalculatorServicer):
    async def _compute(
        self, operation: int, request: pb.OperationRequest, context: grpc.aio.ServicerContext
    ) -> pb.OperationResponse:
        try:
            result = arithmetic.compute(operation, request.num1, request.num2)
        except arithmetic.CalcError as exc:
            await context.abort(exc.code, exc.message)
        return pb.OperationResponse(result=result)

    async def Sum(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.SUM, request, context)

    async def Subtract(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.SUBTRACT, request, context)

    async def Multiply(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.MULTIPLY, request, context)

    async def Divide(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.DIVIDE, request, context)

    async def Power(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.POWER, request, context)

    async def Modulo(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.MODULO, request, context)


async def create_server(address: str, tls_cert: str = "", tls_key: str = "") -> tuple[grpc.aio.Server, int]:
    """A started Calculator server on `address` (port 0: any free port)."""
    server = grpc_util.new_server()
    pb_grpc.add_CalculatorServicer_to_server(CalculatorService(), server)
    health = grpc_util.add_health_and_reflection(server, [SERVICE_NAME])
    port = grpc_util.bind(server, address, tls_cert, tls_key)
    await server.start()
    await grpc_util.set_serving(health, [SERVICE_NAME], True)
    return server, port
