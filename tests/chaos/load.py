"""Load for the chaos suite, and the verdict on what came back.

A load is many requests with known answers. The verdict counts, per request
id: answered once (right or with a clear error), answered twice, never
answered, or answered wrongly. Only the first and the errors a scenario
allows may be non-zero.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests import support

OPS = [pb.SUM, pb.SUBTRACT, pb.MULTIPLY, pb.DIVIDE, pb.POWER, pb.MODULO]


def make_requests(prefix: str, total: int) -> dict[str, pb.CalculationRequest]:
    return {
        f"{prefix}-{i}": pb.CalculationRequest(
            operation=OPS[i % 6], num1=float(i % 1000), num2=float(i % 7 + 1), request_id=f"{prefix}-{i}"
        )
        for i in range(total)
    }


def expected(request: pb.CalculationRequest) -> float:
    return support.expected(request.operation, request.num1, request.num2)


@dataclass
class Verdict:
    requests: int
    answered: int
    lost: int
    duplicated: int
    wrong: int
    errors: dict[str, int]
    max_stall_s: float

    def line(self, scenario: str) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"chaos {scenario}: requests {self.requests}, answered {self.answered}, lost {self.lost}, "
            f"duplicated {self.duplicated}, wrong {self.wrong}, errors: {errors}, "
            f"longest stall {self.max_stall_s:.1f}s"
        )


@dataclass
class Answers:
    """What came back, by request id, with when each answer came."""

    requests: dict[str, pb.CalculationRequest]
    by_id: dict[str, list[pb.CalculationResult]] = field(default_factory=lambda: defaultdict(list))
    times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: pb.CalculationResult) -> None:
        with self.lock:
            self.by_id[result.request_id].append(result)
            self.times.append(time.monotonic())

    def count(self) -> int:
        with self.lock:
            return len(self.times)

    def verdict(self, since: float = 0.0) -> Verdict:
        errors: dict[str, int] = defaultdict(int)
        wrong = 0
        for request_id, results in self.by_id.items():
            first = results[0]
            if first.HasField("error"):
                errors[grpc.StatusCode(_status(first.error.code)).name] += 1
            elif request_id in self.requests and first.result != expected(self.requests[request_id]):
                wrong += 1
        stamps = sorted(t for t in self.times if t >= since)
        stall = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
        return Verdict(
            requests=len(self.requests),
            answered=sum(1 for r in self.requests if self.by_id.get(r)),
            lost=sum(1 for r in self.requests if not self.by_id.get(r)),
            duplicated=sum(len(v) - 1 for v in self.by_id.values()),
            wrong=wrong + sum(1 for r in self.by_id if r not in self.requests),
            errors=dict(errors),
            max_stall_s=stall,
        )


def _status(code: int) -> grpc.StatusCode:
    return next(s for s in grpc.StatusCode if s.value[0] == code)


class StreamLoad:
    """`total` requests through one CalculateStream, at most `window` unanswered, on a thread.

    Sent at no more than `rate` per second, so the load lasts long enough for
    a fault to land in the middle of it, however fast the pipeline is.
    """

    def __init__(
        self, address: str, prefix: str, total: int = 2000, window: int = 100, timeout: float = 240, rate: float = 400
    ) -> None:
        self.answers = Answers(make_requests(prefix, total))
        self._address = address
        self._window = threading.Semaphore(window)
        self._interval = 1 / rate
        self._timeout = timeout
        self.failure: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StreamLoad:
        self._thread.start()
        return self

    def _requests(self) -> Iterator[pb.CalculationRequest]:
        started = time.monotonic()
        for sent, request in enumerate(self.answers.requests.values()):
            self._window.acquire()
            time.sleep(max(0.0, started + sent * self._interval - time.monotonic()))
            yield request

    def _run(self) -> None:
        with grpc.insecure_channel(self._address) as channel:
            try:
                for result in pb_grpc.GatewayStub(channel).CalculateStream(self._requests(), timeout=self._timeout):
                    self.answers.add(result)
                    self._window.release()
            except grpc.RpcError as exc:
                self.failure = exc

    def wait_answered(self, count: int, timeout: float = 120) -> None:
        give_up = time.monotonic() + timeout
        while self.answers.count() < count:
            assert self._thread.is_alive() or self.answers.count() >= count, f"stream ended: {self.failure}"
            assert time.monotonic() < give_up, f"only {self.answers.count()} answers after {timeout}s"
            time.sleep(0.02)

    def assert_mid_load(self) -> None:
        """The fault just injected hit a load still under way, not a finished one."""
        answered = self.answers.count()
        assert answered < len(self.answers.requests), "the load finished before the fault: make it longer"

    def join(self, timeout: float = 240) -> Verdict:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        assert self.failure is None, f"the stream broke: {self.failure}"
        return self.answers.verdict()


def submit_all(address: str, prefix: str, total: int = 2000, threads: int = 16) -> Answers:
    """Submit every request; returns the Answers to fill with GetResult."""
    answers = Answers(make_requests(prefix, total))
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        with ThreadPoolExecutor(threads) as pool:
            tickets = list(pool.map(lambda r: stub.Submit(r, timeout=30), answers.requests.values()))
    assert [t.request_id for t in tickets] == list(answers.requests)
    return answers


def redeem_all(address: str, answers: Answers, threads: int = 16) -> Verdict:
    def redeem(request_id: str) -> None:
        try:
            answers.add(stub.GetResult(pb.Ticket(request_id=request_id), timeout=120))
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            error = pb.Error(code=code.value[0], message=exc.details() or "")  # type: ignore[attr-defined]
            answers.add(pb.CalculationResult(request_id=request_id, error=error))

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(redeem, answers.requests))
    return answers.verdict()
