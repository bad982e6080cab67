"""The service-account token is read again before it expires, not only after a 401."""

import contextlib
import os

import httpx2
import pytest

from porterlb.kube import client as kube_client


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sent(auth: kube_client.TokenFile, status: int = 200) -> list[str]:
    """The Authorization headers of one request through `auth`, answered with `status` once."""
    request = httpx2.Request("GET", "https://api.invalid/api")
    flow = auth.auth_flow(request)
    headers = [next(flow).headers["Authorization"]]
    with contextlib.suppress(StopIteration):
        headers.append(flow.send(httpx2.Response(status)).headers["Authorization"])
    return headers


def rotate(path, token: str, mtime_ns: int) -> None:
    path.write_text(token)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    rotate(path, "one\n", 10**18)
    return path


def test_the_token_is_read_once_and_reused(token):
    auth = kube_client.TokenFile(token, clock=Clock())
    assert sent(auth) == ["Bearer one"]
    token.write_text("two")  # same mtime (a coarse clock): not seen yet
    os.utime(token, ns=(10**18, 10**18))
    assert sent(auth) == ["Bearer one"]


def test_a_rotated_file_is_read_at_the_next_request(token):
    auth = kube_client.TokenFile(token, clock=Clock())
    assert sent(auth) == ["Bearer one"]
    rotate(token, "two", 10**18 + 1)
    assert sent(auth) == ["Bearer two"]


def test_the_file_is_read_again_every_minute_whatever_its_mtime(token):
    clock = Clock()
    auth = kube_client.TokenFile(token, clock=clock)
    assert sent(auth) == ["Bearer one"]
    rotate(token, "two", 10**18)
    clock.now = kube_client.TOKEN_REREAD
    assert sent(auth) == ["Bearer two"]


def test_a_401_reads_the_file_again_and_retries_once(token):
    auth = kube_client.TokenFile(token, clock=Clock())
    assert sent(auth) == ["Bearer one"]
    token.write_text("two")
    os.utime(token, ns=(10**18, 10**18))
    assert sent(auth, status=401) == ["Bearer one", "Bearer two"]


def test_a_missing_file_keeps_the_last_token_and_fails_without_one(tmp_path, token):
    auth = kube_client.TokenFile(token, clock=Clock())
    assert sent(auth) == ["Bearer one"]
    token.unlink()  # mid-rotation
    assert sent(auth) == ["Bearer one"]
    fresh = kube_client.TokenFile(tmp_path / "absent", clock=Clock())
    with pytest.raises(Exception, match="absent"):
        sent(fresh)
