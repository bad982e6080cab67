import asyncio
import dataclasses
import logging
import typing

import lightkube
import prometheus_client
import pytest

from porterlb.kube import events


def notice(n: int) -> events.Notice:
    subject = events.Subject(kind="Service", api_version="v1", name=f"svc-{n}", namespace="ns")
    return events.Notice(subject, "Normal", "IPAllocated", f"198.18.0.{n % 250} from pool p")


def dropped() -> float:
    return prometheus_client.REGISTRY.get_sample_value("porterlb_events_dropped_total") or 0.0


async def test_a_full_queue_drops_events_with_one_line_as_it_starts_and_one_as_it_ends(caplog):
    caplog.set_level(logging.WARNING, logger=events.__name__)
    poster = events.Poster(typing.cast(lightkube.AsyncClient, None), component="porterlb")
    for n in range(events.QUEUE_SIZE):
        poster.emit(notice(n))
    assert caplog.messages == []
    before = dropped()
    for n in range(3):
        poster.emit(notice(events.QUEUE_SIZE + n))
    assert dropped() - before == 3
    assert caplog.messages == [
        "event queue full (10000 waiting): dropping Events until it has room, "
        "from IPAllocated 198.18.0.0 from pool p"
    ]
    first = poster.queue.get_nowait()
    poster.emit(notice(0))
    assert first == notice(0)
    assert caplog.messages[1:] == ["event queue has room again: 3 Events were dropped"]
    assert poster.queue.qsize() == events.QUEUE_SIZE


def test_the_events_waiting_are_a_gauge():
    poster = events.Poster(typing.cast(lightkube.AsyncClient, None), component="porterlb")
    for n in range(3):
        poster.emit(notice(n))
    poster.queue.get_nowait()
    assert prometheus_client.REGISTRY.get_sample_value("porterlb_events_queued") == 2


def withdrawn() -> float:
    return prometheus_client.REGISTRY.get_sample_value("porterlb_events_withdrawn_total") or 0.0


def held() -> float | None:
    return prometheus_client.REGISTRY.get_sample_value("porterlb_events_held")


def placement(reason: str, name: str = "web") -> events.Notice:
    subject = events.Subject(kind="Service", api_version="v1", name=name, namespace="shop")
    return events.Notice(subject, "Warning", reason, f"{reason} of {name}", topic="placement")


def queued(poster: events.Poster) -> list[str]:
    found = []
    while not poster.queue.empty():
        found.append(poster.queue.get_nowait().message)
    return found


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_a_held_notice_is_queued_once_its_hold_ends():
    poster = events.Poster(typing.cast(lightkube.AsyncClient, None), component="porterlb")
    poster.emit(placement("NoReadyEndpoint"), hold=10.0)
    await asyncio.sleep(9.9)
    assert queued(poster) == []
    assert held() == 1
    await asyncio.sleep(0.2)
    assert queued(poster) == ["NoReadyEndpoint of web"]
    assert held() == 0


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    ("later", "posted"),
    [
        pytest.param(placement("NodeAssigned"), ["NodeAssigned of web"], id="same-topic"),
        pytest.param(
            placement("NoReadyEndpoint"), ["NoReadyEndpoint of web"], id="held-again-restarts"
        ),
    ],
)
async def test_a_later_notice_on_the_same_subject_and_topic_withdraws_a_held_one(later, posted):
    poster = events.Poster(typing.cast(lightkube.AsyncClient, None), component="porterlb")
    before = withdrawn()
    poster.emit(placement("NoReadyEndpoint"), hold=10.0)
    await asyncio.sleep(5.0)
    poster.emit(later, hold=10.0 if later.reason == "NoReadyEndpoint" else 0.0)
    await asyncio.sleep(5.1)  # past the first hold's end: withdrawn, it never comes
    assert queued(poster) == ([] if later.reason == "NoReadyEndpoint" else posted)
    await asyncio.sleep(5.0)
    assert queued(poster) == ([] if later.reason != "NoReadyEndpoint" else posted)
    assert withdrawn() - before == 1
    assert held() == 0


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    "other",
    [
        pytest.param(placement("NodeAssigned", name="api"), id="another-service"),
        pytest.param(
            dataclasses.replace(placement("IPAllocated"), topic="allocation"), id="another-topic"
        ),
    ],
)
async def test_news_on_another_subject_or_topic_leaves_a_held_notice(other):
    poster = events.Poster(typing.cast(lightkube.AsyncClient, None), component="porterlb")
    poster.emit(placement("NoReadyEndpoint"), hold=10.0)
    poster.emit(other)
    await asyncio.sleep(10.1)
    assert queued(poster) == [other.message, "NoReadyEndpoint of web"]
