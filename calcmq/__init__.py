"""calc-mq: gRPC in front, RabbitMQ behind, arithmetic at the end.

The five programs at the repository root are thin entry points; what they do
lives here, one module per job.
"""
