"""Request figures: exact percentiles from counts, per-second windows, totals, and the access log."""

from __future__ import annotations

import bisect
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from legato.edge.accesslog import LOG_FORMAT, AccessLogReader, parse_line, pause_for, queue_length
from legato.monitor.requests import (
    HISTOGRAM_BOUNDS_MS,
    SECONDS_KEPT,
    RequestMetrics,
    percentiles,
)

FIXED_QS: tuple[float, ...] = (0, 1, 25, 50, 90, 95, 99, 99.9, 100)


class Clock:
    """A settable clock for RequestMetrics."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def metrics_at(start: float) -> tuple[RequestMetrics, Clock]:
    clock = Clock(start)
    return RequestMetrics(clock=clock), clock


# percentiles --------------------------------------------------------------------------------


def _skewed(rng: random.Random, kind: str, size: int) -> list[int]:
    """Integer millisecond latencies with a long tail and many duplicates."""
    if kind == "lognormal":
        return [int(rng.lognormvariate(3, 1.2)) for _ in range(size)]
    if kind == "pareto":
        return [min(int(rng.paretovariate(1.1) * 5), 1_000_000) for _ in range(size)]
    if kind == "exponential":
        return [int(rng.expovariate(1 / 40)) for _ in range(size)]
    if kind == "few":  # a handful of distinct values, mostly one
        return [rng.choices([3, 4, 250, 9000], weights=[90, 7, 2, 1])[0] for _ in range(size)]
    if kind == "bimodal":
        return [int(rng.gauss(20, 3)) if rng.random() < 0.8 else int(rng.gauss(800, 100))
                for _ in range(size)]
    raise AssertionError(kind)


KINDS = ("lognormal", "pareto", "exponential", "few", "bimodal")


@pytest.mark.parametrize("size", [1, 2, 3, 10, 1000, 100_000])
@pytest.mark.parametrize("kind", KINDS)
def test_percentiles_equal_numpy_linear_on_the_expanded_samples(size: int, kind: str) -> None:
    """Exact equality with numpy's default (linear) percentile over many seeded sample sets."""
    rng = random.Random(f"{kind}-{size}")
    sets = 1 if size == 100_000 else 20 if size == 1000 else 60
    for _ in range(sets):
        samples = [max(0, v) for v in _skewed(rng, kind, size)]
        qs = [*FIXED_QS, *(rng.uniform(0, 100) for _ in range(20))]
        got = percentiles(Counter(samples), qs)
        expected = np.percentile(np.array(samples, dtype=np.float64), qs)
        assert got == pytest.approx(list(expected), rel=1e-12, abs=1e-9), (samples[:20], qs)


def test_percentiles_of_one_sample_are_that_sample_for_every_q() -> None:
    """A single sample is every percentile."""
    assert percentiles({7: 1}, FIXED_QS) == [7.0] * len(FIXED_QS)


def test_percentiles_interpolate_linearly_between_two_samples() -> None:
    """Between two samples the percentile moves linearly from one to the other."""
    assert percentiles({10: 1, 20: 1}, (0, 25, 50, 75, 100)) == [10.0, 12.5, 15.0, 17.5, 20.0]


def test_percentiles_ignore_values_counted_zero_times() -> None:
    """A value with a count of 0 is no sample."""
    counts = {1: 2, 5: 0, 9: 2, 100: 0}
    assert percentiles(counts, FIXED_QS) == pytest.approx(
        list(np.percentile([1, 1, 9, 9], FIXED_QS)), rel=1e-12, abs=1e-9)


def test_percentiles_return_floats() -> None:
    """Even an exact order statistic comes back as a float."""
    assert all(isinstance(v, float) for v in percentiles({3: 4, 8: 1}, FIXED_QS))


@pytest.mark.parametrize("counts", [{}, {5: 0}, Counter()])
def test_percentiles_of_no_samples_are_none(counts: dict[int, int]) -> None:
    """No samples: None for every q asked."""
    assert percentiles(counts, (50, 95, 99)) == [None, None, None]
    assert percentiles(counts, ()) == []


@pytest.mark.parametrize("q", [-0.001, -1, 100.001, 101, 1e9, float("nan")])
def test_percentiles_outside_0_to_100_raise_value_error(q: float) -> None:
    """q must lie within 0..100."""
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentiles({1: 1, 2: 3}, (50, q))


# RequestMetrics: windows ---------------------------------------------------------------------


def test_window_counts_the_last_60_seconds_including_the_current_one() -> None:
    """window(60) at 10000.5 holds the seconds 9941..10000 and nothing earlier or later."""
    metrics, _ = metrics_at(0.0)
    for second in (9939, 9940, 9941, 9970, 10000):
        metrics.record("web", 200, 10, at=second + 0.25)
    metrics.record("web", 200, 10, at=10001.0)  # after `now`
    window = metrics.window("web", 60, 10000.5)
    assert (window.requests, window.seconds) == (3, 60)
    assert window.rps == pytest.approx(3 / 60)


def test_window_uses_the_clock_when_now_is_not_given() -> None:
    """Without `now` the injected clock decides which seconds are recent."""
    metrics, clock = metrics_at(0.0)
    metrics.record("web", 200, 10, at=500.5)
    clock.now = 530.5
    assert metrics.window("web", 60).requests == 1
    clock.now = 561.0
    assert metrics.window("web", 60).requests == 0


def test_window_of_an_unknown_service_is_empty() -> None:
    """A service never seen has no requests, no errors, no latency."""
    metrics, _ = metrics_at(0.0)
    window = metrics.window("ghost", 60, 1000.0)
    assert (window.requests, window.errors, window.rps, window.error_rate) == (0, 0, 0.0, 0.0)
    assert (window.p95_ms, window.mean_ms, window.percentiles(50, 99)) == (None, None, [None, None])


def test_between_is_start_inclusive_end_exclusive_by_whole_seconds() -> None:
    """between(start, end) holds the records of seconds s with start <= s < end."""
    metrics, _ = metrics_at(0.0)
    for second in range(100, 106):
        metrics.record("web", 200, second, at=second + 0.9)
    assert metrics.between("web", 101, 104).latencies == {101: 1, 102: 1, 103: 1}
    assert metrics.between("web", 100.5, 104).latencies == {101: 1, 102: 1, 103: 1}
    assert metrics.between("web", 101, 103.5).latencies == {101: 1, 102: 1, 103: 1}
    assert metrics.between("web", 104, 104).requests == 0
    assert metrics.between("web", 101, 104).seconds == 3
    assert metrics.between("web", 0, 1000, span=60).seconds == 60


def test_buckets_older_than_300_seconds_are_dropped() -> None:
    """A new second drops the seconds SECONDS_KEPT or more before it; the totals stay."""
    assert SECONDS_KEPT == 300
    metrics, _ = metrics_at(0.0)
    metrics.record("web", 200, 1, at=1000.0)
    metrics.record("web", 200, 2, at=1299.0)
    assert metrics.between("web", 0, 10_000).requests == 2
    metrics.record("web", 200, 3, at=1300.0)
    assert metrics.between("web", 0, 10_000).latencies == {2: 1, 3: 1}
    assert metrics.totals()["web"].requests == 3


def test_other_services_records_do_not_drop_a_services_buckets() -> None:
    """Retention is per service: a quiet service keeps its old seconds."""
    metrics, _ = metrics_at(0.0)
    metrics.record("web", 200, 1, at=1000.0)
    metrics.record("api", 200, 1, at=5000.0)
    assert metrics.between("web", 0, 10_000).requests == 1


def test_rps_span_is_shortened_to_the_time_since_start() -> None:
    """10.5 s after start a 60 s window divides by 10.5 s."""
    metrics, _ = metrics_at(1000.0)
    assert metrics.started_at == 1000.0
    metrics.record_many([("web", 200, 5)] * 21, at=1005.0)
    window = metrics.window("web", 60, 1010.5)
    assert window.seconds == pytest.approx(10.5)
    assert window.rps == pytest.approx(2.0)


def test_rps_span_is_at_least_one_second() -> None:
    """Right after start the span is 1 s, not a fraction of one (nor zero)."""
    metrics, _ = metrics_at(1000.0)
    metrics.record_many([("web", 200, 5)] * 3, at=1000.1)
    for now in (1000.2, 1000.0, 999.0):
        window = metrics.window("web", 60, now)
        assert window.seconds == 1.0
    assert metrics.window("web", 60, 1000.2).rps == 3.0


def test_rps_uses_the_full_window_long_after_start() -> None:
    """Long after start the span is the window asked for."""
    metrics, _ = metrics_at(0.0)
    metrics.record_many([("web", 200, 5)] * 120, at=10_000.0)
    window = metrics.window("web", 60, 10_000.5)
    assert (window.seconds, window.rps) == (60, 2.0)


def test_error_rate_counts_only_5xx_answers() -> None:
    """4xx, 3xx, out-of-range and aborted answers are no errors; 500..599 are."""
    metrics, _ = metrics_at(0.0)
    statuses = [200, 201, 301, 404, 499, 500, 503, 599, 600, 99, -1]
    metrics.record_many([("web", s, 10) for s in statuses], at=100.0)
    window = metrics.between("web", 100, 101)
    assert (window.requests, window.errors) == (11, 3)
    assert window.error_rate == pytest.approx(3 / 11)


def test_aborted_request_counts_as_a_request_but_not_as_a_latency_sample() -> None:
    """Status -1 with latency -1: one more request, 'other' class, no latency, no 5xx."""
    metrics, _ = metrics_at(0.0)
    metrics.record("web", 200, 40, at=100.0)
    metrics.record("web", -1, -1, at=100.0)
    window = metrics.between("web", 100, 101)
    assert (window.requests, window.errors, window.latencies) == (2, 0, {40: 1})
    assert window.p95_ms == 40.0
    assert window.mean_ms == 40.0
    totals = metrics.totals()["web"]
    assert totals.by_class == {"2xx": 1, "other": 1}
    assert totals.requests == 2
    assert totals.histogram[-1] == 1
    assert totals.latency_sum_ms == 40


def test_window_percentiles_and_mean_come_from_the_latency_counts() -> None:
    """p95, other percentiles and the mean of a window match numpy on its samples."""
    metrics, _ = metrics_at(0.0)
    rng = random.Random(5)
    samples = [int(rng.lognormvariate(3, 1)) for _ in range(500)]
    metrics.record_many([("web", 200, v) for v in samples], at=200.0)
    window = metrics.between("web", 200, 201)
    assert window.p95_ms == pytest.approx(float(np.percentile(samples, 95)), rel=1e-12)
    assert window.percentiles(50, 99) == pytest.approx(list(np.percentile(samples, [50, 99])))
    assert window.mean_ms == pytest.approx(float(np.mean(samples)))


# RequestMetrics: totals, late records, forget, last request -----------------------------------


def test_totals_count_by_status_class_with_a_cumulative_histogram() -> None:
    """Classes, a cumulative histogram over HISTOGRAM_BOUNDS_MS then +Inf, and the latency sum."""
    metrics, _ = metrics_at(0.0)
    latencies = [0, 5, 6, 10, 11, 25, 99, 100, 101, 2500, 9999, 10000, 10001, 123_456]
    statuses = [100, 200, 204, 302, 404, 500, 503, 200, 200, 200, 200, 200, 200, 200]
    metrics.record_many([("web", s, v) for s, v in zip(statuses, latencies, strict=True)],
                        at=100.0)
    metrics.record_many([("web", 200, 7)], at=5000.0)  # long after: totals are not windowed
    metrics.record("web", -1, -1, at=5000.0)
    metrics.record("api", 200, 3, at=100.0)
    totals = metrics.totals()
    assert set(totals) == {"web", "api"}
    web = totals["web"]
    assert web.by_class == {"1xx": 1, "2xx": 10, "3xx": 1, "4xx": 1, "5xx": 2, "other": 1}
    all_latencies = sorted([*latencies, 7])
    expected = [bisect.bisect_right(all_latencies, bound) for bound in HISTOGRAM_BOUNDS_MS]
    assert web.histogram == (*expected, len(all_latencies))
    assert len(web.histogram) == len(HISTOGRAM_BOUNDS_MS) + 1
    assert list(web.histogram) == sorted(web.histogram)
    assert web.latency_sum_ms == sum(all_latencies)
    assert web.requests == 16
    assert totals["api"].histogram == (1,) * (len(HISTOGRAM_BOUNDS_MS) + 1)


def test_histogram_bounds_are_inclusive_upper_bounds() -> None:
    """A latency equal to a bound lands in that bound's bucket, one more ms in the next."""
    for index, bound in enumerate(HISTOGRAM_BOUNDS_MS):
        metrics, _ = metrics_at(0.0)
        metrics.record_many([("web", 200, bound), ("web", 200, bound + 1)], at=1.0)
        histogram = metrics.totals()["web"].histogram
        assert histogram[index] - (histogram[index - 1] if index else 0) == 1
        assert histogram[index + 1] == 2


def test_totals_are_empty_without_records() -> None:
    """No service recorded, no totals."""
    metrics, _ = metrics_at(0.0)
    assert metrics.totals() == {}


def test_record_many_returns_how_many_it_added_and_uses_the_clock() -> None:
    """The count of records added; without `at` they land in the clock's second."""
    metrics, clock = metrics_at(0.0)
    clock.now = 777.7
    assert metrics.record_many([("web", 200, 1), ("api", 200, 2), ("web", 500, 3)]) == 3
    assert metrics.record_many([]) == 0
    assert metrics.between("web", 777, 778).requests == 2
    assert metrics.between("api", 777, 778).requests == 1
    assert metrics.last_request_at("web") == 777.7


def test_a_late_record_lands_in_its_own_second() -> None:
    """Records for seconds before the newest bucket go to that earlier second, kept in order."""
    metrics, _ = metrics_at(0.0)
    metrics.record("web", 200, 1, at=1003.0)
    metrics.record("web", 200, 5, at=1005.0)
    metrics.record("web", 200, 3, at=1003.5)  # an existing earlier second
    metrics.record("web", 200, 4, at=1004.0)  # a second between existing ones
    metrics.record("web", 200, 2, at=1001.0)  # before every bucket
    assert metrics.between("web", 1001, 1002).latencies == {2: 1}
    assert metrics.between("web", 1003, 1004).latencies == {1: 1, 3: 1}
    assert metrics.between("web", 1004, 1005).latencies == {4: 1}
    assert metrics.between("web", 1005, 1006).latencies == {5: 1}
    # Retention still drops from the oldest end, so the order was kept.
    metrics.record("web", 200, 9, at=1304.0)
    assert metrics.between("web", 0, 10_000).latencies == {5: 1, 9: 1}


def test_a_late_record_does_not_move_last_request_at_back() -> None:
    """last_request_at is the latest arrival, whatever the order."""
    metrics, _ = metrics_at(0.0)
    assert metrics.last_request_at("web") is None
    metrics.record("web", 200, 1, at=2000.25)
    metrics.record("web", 200, 1, at=1990.0)
    assert metrics.last_request_at("web") == 2000.25
    metrics.record("web", -1, -1, at=2001.5)
    assert metrics.last_request_at("web") == 2001.5


def test_forget_drops_a_services_figures_only() -> None:
    """After forget the service has no window, totals or last request; others keep theirs."""
    metrics, _ = metrics_at(0.0)
    metrics.record("web", 200, 1, at=100.0)
    metrics.record("api", 500, 2, at=100.0)
    metrics.forget("web")
    metrics.forget("never-seen")
    assert metrics.between("web", 0, 1000).requests == 0
    assert metrics.last_request_at("web") is None
    assert set(metrics.totals()) == {"api"}
    assert metrics.between("api", 0, 1000).errors == 1
    metrics.record("web", 200, 7, at=101.0)
    assert metrics.totals()["web"].requests == 1


# parse_line ----------------------------------------------------------------------------------


def test_log_format_has_the_five_fields_parse_line_reads() -> None:
    """Backend, server, status, active time, bytes."""
    assert LOG_FORMAT == "%b %s %ST %Ta %B"


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"svc_web r0-abc 200 4 160\n", ("web", 200, 4)),
        (b"svc_web <NOSRV> 503 0 217", ("web", 503, 0)),
        (b"svc_api-v2 r3-0f1e2d 404 1234 0", ("api-v2", 404, 1234)),
        (b"svc_web r0-abc -1 -1 0\n", ("web", -1, -1)),
        (b"  svc_web  r0  200  4  160  ", ("web", 200, 4)),
    ],
)
def test_parse_line_reads_service_status_and_latency(line: bytes, parsed: tuple[str, int, int]) -> None:
    """A line in LOG_FORMAT of a service backend gives (service, status, latency ms)."""
    assert parse_line(line) == parsed


@pytest.mark.parametrize(
    "line",
    [
        b"b_default <NOSRV> 404 0 97",  # the fallback backend: an unknown host
        b"b_default <NOSRV> 503 0 217\n",
        b"web r0 200 4 160",  # no svc_ prefix
        b"",
        b"\n",
        b"svc_web r0 200 4",  # too few fields
        b"svc_web r0 200 4 160 extra",  # too many
        b"svc_web r0 abc 4 160",  # status not a number
        b"svc_web r0 200 4.5 160",  # latency not an integer
        b"svc_web r0 200 - 160",
        b"svc_\xff\xfe r0 200 4 160",  # not UTF-8
        b"\x00\x01\x02 garbage",
    ],
)
def test_parse_line_rejects_lines_of_no_service_or_not_in_log_format(line: bytes) -> None:
    """Fallback backend, wrong field count, non-numbers and non-UTF-8 give None."""
    assert parse_line(line) is None


# AccessLogReader -----------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll `condition` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)


def send(path: Path, *datagrams: bytes) -> None:
    """As HAProxy does: one datagram per line, to the socket's path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, str(path))


def counters(reader: AccessLogReader) -> tuple[int, int, int, int]:
    return reader.lines, reader.records, reader.notices, reader.invalid


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[AccessLogReader]:
    log_reader = AccessLogReader(tmp_path / "run" / "log.sock", RequestMetrics())
    yield log_reader
    log_reader.close()


def test_reader_records_the_requests_sent_to_its_socket(reader: AccessLogReader) -> None:
    """Lines become records in RequestMetrics; a service's line that does not parse is invalid,
    HAProxy's own messages and unknown hosts' requests are notices."""
    reader.start()
    assert reader.running
    assert reader.path.is_socket()
    before = time.time()
    send(reader.path,
         b"svc_web r0-abc 200 4 160\n",
         b"svc_web r1-def 503 12 217\n",
         b"b_default <NOSRV> 404 0 97\n",
         b"Server svc_web/r0-abc is UP/READY (leaving forced maintenance).",
         b"svc_web r0-abc two 12 217",
         b"svc_api r0-123 -1 -1 0\n")
    wait_for(lambda: counters(reader) == (6, 3, 2, 1))
    assert counters(reader) == (6, 3, 2, 1)
    totals = reader.metrics.totals()
    assert totals["web"].by_class == {"2xx": 1, "5xx": 1}
    assert totals["web"].latency_sum_ms == 16
    assert totals["api"].by_class == {"other": 1}
    window = reader.metrics.between("web", before - 1, time.time() + 1)
    assert (window.requests, window.errors, window.latencies) == (2, 1, {4: 1, 12: 1})
    last = reader.metrics.last_request_at("web")
    assert last is not None
    assert before <= last <= time.time()


def test_reader_keeps_up_with_a_burst(reader: AccessLogReader) -> None:
    """A few thousand datagrams sent at once are all read, in batches."""
    reader.start()
    lines = [f"svc_web r0 200 {i % 50} 100\n".encode() for i in range(3000)]
    send(reader.path, *lines)
    wait_for(lambda: reader.records == len(lines))
    assert counters(reader) == (3000, 3000, 0, 0)
    assert reader.metrics.totals()["web"].latency_sum_ms == sum(i % 50 for i in range(3000))


@pytest.mark.parametrize(("qlen", "pause"), [(10, 0.0), (255, 0.0), (256, 0.02), (1024, 0.02)])
def test_the_reader_pauses_between_batches_only_where_the_kernel_queues_enough(
    qlen: int, pause: float
) -> None:
    """With the default queue of 10 datagrams a pause would drop lines; with 256 or more the
    lines of a 20 ms pause fit, at up to ~12,800 per second."""
    assert pause_for(qlen) == pause


def test_queue_length_is_the_hosts_setting() -> None:
    assert queue_length() == int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())


def test_reader_start_replaces_a_socket_left_by_a_previous_run(reader: AccessLogReader) -> None:
    """A stale socket file at the path does not stop start()."""
    reader.path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(reader.path))
    stale.close()  # the file stays, as after a crash
    assert reader.path.exists()
    reader.start()
    send(reader.path, b"svc_web r0 200 4 160")
    wait_for(lambda: reader.records == 1)
    assert reader.records == 1


def test_reader_close_removes_the_socket_and_stops_the_thread(reader: AccessLogReader) -> None:
    """After close() nothing listens: the file is gone and the thread has ended."""
    reader.start()
    thread = reader._thread
    assert thread is not None
    reader.close()
    assert not reader.running
    assert not thread.is_alive()
    assert not reader.path.exists()
    with pytest.raises(OSError):
        send(reader.path, b"svc_web r0 200 4 160")
    reader.close()  # twice is fine
    assert counters(reader) == (0, 0, 0, 0)  # the wake-up datagram is not a line


def test_reader_can_start_again_after_close(reader: AccessLogReader) -> None:
    """close() then start() reads again on the same path."""
    reader.start()
    send(reader.path, b"svc_web r0 200 4 160")
    wait_for(lambda: reader.records == 1)
    reader.close()
    reader.start()
    assert reader.running
    send(reader.path, b"svc_web r0 200 6 160")
    wait_for(lambda: reader.records == 2)
    assert reader.records == 2
    assert reader.metrics.totals()["web"].latency_sum_ms == 10


def test_close_without_start_does_nothing(tmp_path: Path) -> None:
    """A reader never started closes quietly and creates nothing."""
    path = tmp_path / "log.sock"
    AccessLogReader(path, RequestMetrics()).close()
    assert not path.exists()


def test_ingest_parses_and_records_one_batch_at_the_given_time() -> None:
    """ingest() skips empty lines, counts lines, records, notices and invalid ones; returns
    the records."""
    metrics, _ = metrics_at(0.0)
    log_reader = AccessLogReader(Path("/nonexistent/never-bound.sock"), metrics)
    batch = [
        b"svc_web r0 200 4 160",
        b"",
        b"svc_web r0 500 9 160",
        b"b_default <NOSRV> 404 0 97",
        b"garbage",
        b"svc_web r0 two 9 160",
    ]
    assert log_reader.ingest(batch, 1234.5) == 2
    assert counters(log_reader) == (5, 2, 2, 1)
    window = metrics.between("web", 1234, 1235)
    assert (window.requests, window.errors, window.latencies) == (2, 1, {4: 1, 9: 1})
    assert metrics.last_request_at("web") == 1234.5
    assert log_reader.ingest([], 1235.0) == 0
    assert counters(log_reader) == (5, 2, 2, 1)


def test_a_window_reaching_back_to_the_start_keeps_the_first_partial_second() -> None:
    """Requests in the very second the figures began (after started_at, before the next whole
    second) are in every window that reaches back to the start."""
    metrics, _ = metrics_at(1000.3)
    metrics.record_many([("web", 200, 1)] * 5, at=1000.9)
    metrics.record_many([("web", 200, 1)] * 2, at=1001.2)
    window = metrics.window("web", 60, now=1002.0)
    assert window.requests == 7
    assert window.seconds == pytest.approx(1.7)
    later = metrics.window("web", 60, now=1061.0)  # from 1001.0: no longer back to the start
    assert later.requests == 2 and later.seconds == 60
