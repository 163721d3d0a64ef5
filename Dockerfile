# One image for all five calc-mq programs; each docker-compose.yml service
# picks its program with `command`. There is no build step: the gRPC stubs in
# calcmq/proto are committed, so the image needs the runtime packages and the
# source, nothing else (grpcio and protobuf ship wheels: no compiler either).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The programs run as this unprivileged user; a numeric id lets Kubernetes'
# runAsNonRoot verify it.
RUN useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin calcmq \
    && mkdir /state && chown 10001:10001 /state

# The gateway keeps issued tickets here (compose mounts a volume on it).
ENV GATEWAY_STATE_DIR=/state

WORKDIR /app

# Dependencies in their own layer, before the source: editing code does not
# reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The source stays owned by root, so the programs cannot rewrite themselves.
COPY calcmq/ calcmq/
COPY api_gateway.py calculator_server.py calculator_client.py rabbitmq_worker.py worker.py ./

USER 10001:10001

# Gateway and Calculator gRPC ports (documentation; compose publishes).
EXPOSE 50051 50052

CMD ["python", "calculator_client.py", "--help"]
