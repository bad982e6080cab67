"""The raw-JSON edges of kube/: watch line splitting, URL paths, reply mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import lightkube
import pytest
from lightkube import KubeConfig

from porterlb import errors
from porterlb.api import wellknown
from porterlb.kube import client, reflector, resources, writers

UNUSED = KubeConfig.from_dict(
    {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "never-sent"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        pytest.param([b'{"a":1}\n{"b":2}\n'], [b'{"a":1}', b'{"b":2}'], id="two-in-one-chunk"),
        pytest.param([b'{"a"', b":1}\n"], [b'{"a":1}'], id="cut-mid-line"),
        pytest.param([b'{"a":1', b"}", b"\n{"], [b'{"a":1}', b"{"], id="tail-without-newline"),
        pytest.param([b"\n\n", b'{"a":1}\n'], [b'{"a":1}'], id="blank-lines-skipped"),
        pytest.param([b"x\ny\nz", b"z\n"], [b"x", b"y", b"zz"], id="rest-carried-over"),
    ],
)
async def test_lines_reassemble_a_stream_cut_anywhere(parts, expected):
    assert [line async for line in reflector.lines(_chunks(*parts))] == expected


def test_slim_drops_managed_fields_and_keeps_the_rest():
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}]}, "spec": {"k": 1}}
    assert reflector.slim(obj) == {"metadata": {"name": "a"}, "spec": {"k": 1}}


@pytest.mark.parametrize(
    ("resource", "namespace", "name", "expected"),
    [
        pytest.param(resources.Service, None, None, "/api/v1/services", id="all-namespaces"),
        pytest.param(
            resources.Service.Status,
            "shop",
            "web",
            "/api/v1/namespaces/shop/services/web/status",
            id="status-subresource",
        ),
        pytest.param(resources.Event, "shop", None, "/api/v1/namespaces/shop/events", id="post"),
        pytest.param(
            resources.Eip,
            None,
            "lan",
            "/apis/network.kubesphere.io/v1alpha2/eips/lan",
            id="cluster-scoped-crd",
        ),
    ],
)
def test_paths(resource, namespace, name, expected):
    assert client.path(resource, namespace=namespace, name=name) == expected


def _status(code: int, message: str = "nope") -> httpx2.Response:
    return httpx2.Response(code, json={"kind": "Status", "code": code, "message": message})


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        pytest.param(200, None, id="ok"),
        pytest.param(404, None, id="gone-meanwhile"),
        pytest.param(409, errors.Conflict, id="conflict"),
        pytest.param(422, errors.InvalidSpec, id="invalid"),
        pytest.param(429, errors.TransientError, id="throttled"),
        pytest.param(500, errors.TransientError, id="server-error"),
    ],
)
def test_replies_map_to_porterlb_errors(code, raised):
    if raised is None:
        writers.raise_for_reply(_status(code), "Service a/b: status")
        return
    with pytest.raises(raised):
        writers.raise_for_reply(_status(code), "Service a/b: status")


def test_a_rejection_names_the_object_and_the_api_message():
    with pytest.raises(errors.InvalidSpec) as caught:
        writers.raise_for_reply(_status(422, "spec.x: Invalid value"), "Service a/b: status")
    assert str(caught.value) == "Service a/b: status: rejected: spec.x: Invalid value"


def _service_reply(
    finalizers: list[str], labels: dict[str, str], annotations: dict[str, str] | None = None
) -> httpx2.Response:
    meta = {"finalizers": finalizers, "labels": labels, "annotations": annotations or {}}
    return httpx2.Response(200, json={"metadata": meta})


@pytest.mark.parametrize(
    ("finalizers", "labels", "claim", "marked"),
    [
        pytest.param(
            [wellknown.SERVICE_FINALIZER],
            {wellknown.POOL_LABEL: "lan"},
            ("lan",),
            True,
            id="claimed",
        ),
        pytest.param([], {}, ("lan",), False, id="claim-ignored"),
        pytest.param(
            [wellknown.SERVICE_FINALIZER],
            {wellknown.POOL_LABEL: "old"},
            ("lan",),
            False,
            id="other-pool",
        ),
        pytest.param(
            [wellknown.SERVICE_FINALIZER],
            {wellknown.POOL_LABEL: "lan"},
            ("lan", "lan-v6"),
            False,
            id="second-pool-dropped",
        ),
        pytest.param(["other"], {}, None, True, id="unclaimed"),
        pytest.param([wellknown.SERVICE_FINALIZER], {}, None, False, id="unclaim-ignored"),
    ],
)
def test_the_reply_tells_whether_the_marks_landed(finalizers, labels, claim, marked):
    assert writers.carries_marks(_service_reply(finalizers, labels), claim) is marked


@pytest.mark.parametrize(
    ("annotations", "claim", "marked"),
    [
        pytest.param({wellknown.POOLS: "lan,lan-v6"}, ("lan", "lan-v6"), True, id="both-pools"),
        pytest.param({wellknown.POOLS: "lan,lan-v6"}, ("lan",), False, id="stale-list"),
        pytest.param({wellknown.POOLS: "lan,lan-v6"}, None, False, id="list-left-on-unclaim"),
    ],
)
def test_the_reply_tells_whether_the_pools_of_a_dual_stack_service_landed(
    annotations, claim, marked
):
    finalizers = [wellknown.SERVICE_FINALIZER] if claim else []
    labels = {wellknown.POOL_LABEL: claim[0]} if claim else {}
    reply = _service_reply(finalizers, labels, annotations)
    assert writers.carries_marks(reply, claim) is marked


@pytest.mark.parametrize(
    ("annotations", "node"),
    [
        pytest.param({wellknown.ANNOUNCED_BY: "node-a"}, "node-a", id="recorded"),
        pytest.param({"other": "x"}, None, id="not-recorded"),
        pytest.param(None, None, id="no-annotations"),
    ],
)
def test_the_reply_tells_which_node_is_recorded(annotations, node):
    reply = httpx2.Response(200, json={"metadata": {"annotations": annotations}})
    assert writers.announced_by(reply) == node


def test_a_watch_line_goes_into_the_cache_as_the_reflector_keeps_it():
    changed: list[str] = []
    source = reflector.Reflector(
        lightkube.AsyncClient(config=UNUSED),
        resources.Service,
        on_change=changed.append,
        name="services",
        keep=lambda obj: {"metadata": {"name": obj["metadata"]["name"]}},
    )
    line = (
        b'{"type":"ADDED","object":{"metadata":{"name":"web","namespace":"shop",'
        b'"resourceVersion":"7"},"spec":{"type":"LoadBalancer"}}}'
    )
    assert source.receive(line) == "7"
    assert source.cache == {"shop/web": {"metadata": {"name": "web"}}}
    assert changed == ["shop/web"]
    assert source.revision == 7
    deleted = line.replace(b"ADDED", b"DELETED").replace(b'"7"', b'"8"')
    assert source.receive(deleted) == "8"
    assert source.cache == {}


def test_an_error_event_fails_the_watch():
    source = reflector.Reflector(
        lightkube.AsyncClient(config=UNUSED),
        resources.Service,
        on_change=lambda key: None,
        name="services",
    )
    with pytest.raises(reflector.WatchFailed, match="410 too old"):
        source.receive(b'{"type":"ERROR","object":{"code":410,"message":"too old"}}')
