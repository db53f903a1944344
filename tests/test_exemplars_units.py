"""serveops_request_latency_ms: the replicas' tallies, the exporter's sum, and its OpenMetrics exemplars."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from stack.serving.observability import exemplars
from stack.serving.observability.exemplars import Exporter, LatencyTally, Recorder, parse_listen

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def buckets(tally: LatencyTally, route: str, app: str = "app") -> dict[str, tuple[float, str | None]]:
    """le -> (cumulative count, exemplar trace id), as a scraper reads the family."""
    fam = tally.family()
    return {s.labels["le"]: (s.value, s.exemplar.labels["trace_id"] if s.exemplar else None)
            for s in fam.samples
            if s.name.endswith("_bucket") and (s.labels["application"], s.labels["route"]) == (app, route)}


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    tally = LatencyTally([5, 10])
    for value in (0.1, 5, 5.01, 10, 11):
        tally.observe(("app", "/embed"), value)
    assert buckets(tally, "/embed") == {"5": (2, None), "10": (4, None), "+Inf": (5, None)}
    assert tally.routes[("app", "/embed")].sum_ms == pytest.approx(31.11)


def test_only_a_traced_request_leaves_an_exemplar_and_the_latest_wins() -> None:
    tally = LatencyTally([5, 10])
    tally.observe(("app", "/classify"), 7, "a" * 32, at=100)
    tally.observe(("app", "/classify"), 8, None, at=200)  # unsampled: counted, no exemplar
    tally.observe(("app", "/classify"), 12, "b" * 32, at=150)
    tally.observe(("app", "/classify"), 3)
    assert buckets(tally, "/classify") == {"5": (1, None), "10": (3, "a" * 32), "+Inf": (4, "b" * 32)}
    tally.observe(("app", "/classify"), 9, "c" * 32, at=300)
    assert buckets(tally, "/classify")["10"] == (4, "c" * 32)


def test_the_exporter_sums_deltas_from_replicas_and_keeps_the_newer_exemplar() -> None:
    one, two, total = LatencyTally([10]), LatencyTally([10]), LatencyTally([10])
    one.observe(("app", "/embed"), 4, "a" * 32, at=200)
    two.observe(("app", "/embed"), 6, "b" * 32, at=100)  # older, though merged later
    two.observe(("app", "/predict"), 40)
    two.observe(("other", "/embed"), 40)  # another application's route of the same name stays apart
    total.merge(one.drain())
    total.merge(two.drain())
    assert buckets(total, "/embed") == {"10": (2, "a" * 32), "+Inf": (2, None)}
    assert buckets(total, "/predict") == {"10": (0, None), "+Inf": (1, None)}
    assert buckets(total, "/embed", app="other") == {"10": (0, None), "+Inf": (1, None)}
    assert one.drain() == {} and two.routes == {}  # a drain starts the replica's tally afresh
    one.observe(("app", "/embed"), 5)
    total.merge(one.drain())
    assert buckets(total, "/embed")["+Inf"] == (3, None)  # running total, not the last delta


def test_a_delta_with_other_buckets_is_refused() -> None:
    other = LatencyTally([5, 10])
    other.observe(("app", "/embed"), 1)
    with pytest.raises(ValueError, match="3 buckets, expected 2"):
        LatencyTally([10]).merge(other.drain())


def test_the_exporter_serves_exemplars_as_openmetrics() -> None:
    exporter = Exporter("127.0.0.1", 0, bounds=[5, 10])
    try:
        replica = LatencyTally([5, 10])
        replica.observe(("app", "/classify"), 7.5, "f" * 32, at=1_700_000_000.5)
        replica.observe(("app", "/classify"), 2)
        exporter.add(replica.drain())
        url = f"http://127.0.0.1:{exporter.server.server_port}/metrics"
        text = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5).text
        bucket = 'serveops_request_latency_ms_bucket{application="app",le="10",route="/classify"}'
        assert f'{bucket} 2.0 # {{trace_id="{"f" * 32}"}} 7.5' in text
        [family] = [f for f in text_string_to_metric_families(text) if f.name == exemplars.NAME]
        [ten] = [s for s in family.samples if s.labels.get("le") == "10"]
        assert ten.exemplar.labels == {"trace_id": "f" * 32}
        assert float(ten.exemplar.timestamp) == 1_700_000_000.5
        # A scraper that asks for the classic format still gets the counts, only without exemplars.
        classic = httpx.get(url, timeout=5).text
        assert f"{bucket} 2.0\n" in classic
        assert "trace_id" not in classic
    finally:
        exporter.server.shutdown()


def test_listen_is_host_and_port() -> None:
    assert parse_listen("127.0.0.1:9102") == ("127.0.0.1", 9102)
    for bad in ("9102", "127.0.0.1:", ":9102", "127.0.0.1:http"):
        with pytest.raises(ValueError, match=exemplars.LISTEN_ENV):
            parse_listen(bad)


def test_no_listen_no_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    exemplars.recorder.cache_clear()
    monkeypatch.delenv(exemplars.LISTEN_ENV, raising=False)
    assert exemplars.recorder() is None
    exemplars.recorder.cache_clear()
    monkeypatch.setenv(exemplars.LISTEN_ENV, "127.0.0.1:9102")
    assert exemplars.recorder().listen == ("127.0.0.1", 9102)  # type: ignore[union-attr]
    exemplars.recorder.cache_clear()


class FakeActor:
    """Stands in for the exporter's actor handle: add.remote(delta) is awaitable, or raises."""

    def __init__(self, fail: bool = False) -> None:
        self.got: list[dict[str, Any]] = []
        self.fail = fail
        self.add = self

    def remote(self, delta: dict[str, Any]) -> Any:
        async def done() -> None:
            if self.fail:
                raise RuntimeError("actor died")
            self.got.append(delta)
        return done()


def test_the_recorder_ships_its_tally_and_finds_the_exporter_again(monkeypatch, caplog) -> None:
    actors = [None, FakeActor(fail=True), FakeActor()]  # None: the lookup itself fails (no GCS)
    made: list[tuple[str, int]] = []

    def lookup(host: str, port: int) -> FakeActor:
        made.append((host, port))
        actor = actors[len(made) - 1]
        if actor is None:
            raise ConnectionError("GCS unreachable")
        return actor

    monkeypatch.setattr(exemplars, "exporter_actor", lookup)
    recorder = Recorder(("127.0.0.1", 9102))

    async def run() -> None:
        with caplog.at_level(logging.WARNING, logger=exemplars.__name__):
            recorder.tally.observe(("app", "/embed"), 2)
            await recorder.ship()  # no exporter to find: warned, the task lives on
            assert recorder.delay_s() == 2 * recorder.flush_s  # and waits longer before the next try
            recorder.tally.observe(("app", "/embed"), 3, "a" * 32)
            await recorder.ship()  # the exporter found is gone: looked up again next time, no new warning
        recorder.tally.observe(("app", "/embed"), 4)
        await recorder.ship()
        await recorder.ship()  # idle: nothing sent

        assert recorder.failures == 0 and recorder.delay_s() == recorder.flush_s

    asyncio.run(run())
    assert made == [("127.0.0.1", 9102)] * 3
    assert len(caplog.records) == 1 and "GCS unreachable" in caplog.text
    [delta] = actors[2].got
    # The failed intervals' counts are lost, like a counter reset.
    assert delta[("app", "/embed")].counts[0] == 1


def test_the_recorder_starts_shipping_from_the_replicas_loop(monkeypatch) -> None:
    actor = FakeActor()
    monkeypatch.setattr(exemplars, "exporter_actor", lambda host, port: actor)
    recorder = Recorder(("127.0.0.1", 9102), flush_s=0.01)

    async def run() -> None:
        recorder.start()
        recorder.start()  # idempotent: one task per replica
        recorder.observe("/predict", 12, "d" * 32)
        await asyncio.sleep(0.1)

    asyncio.run(run())
    shipped = [d for d in actor.got if d]
    assert len(shipped) == 1 and shipped[0][("", "/predict")].exemplars[2].trace_id == "d" * 32


def test_a_failing_exporter_is_tried_less_and_less_often() -> None:
    recorder = Recorder(("127.0.0.1", 9102), flush_s=1.0)
    waits = []
    for failures in range(9):
        recorder.failures = failures
        waits.append(recorder.delay_s())
    assert waits == [1, 2, 4, 8, 16, 32, *[exemplars.MAX_BACKOFF_S] * 3]
