import logging
import typing

import lightkube
import prometheus_client

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
