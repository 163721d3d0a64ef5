"""The yardstick: a plain pika pipeline of the same shape and durability as calc-mq.

Written the way pika's examples and the RabbitMQ tutorials teach it
(SelectConnection, asynchronous publisher confirms, prefetch 100, manual acks
after the next publish was confirmed), without calc-mq's validation, deadlines,
retries or reconnects: what a competent first version costs.
"""
