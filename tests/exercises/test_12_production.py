"""Lesson 12: a stream that is ready for production, behind a real nginx too."""

from __future__ import annotations

import hmac
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import ModuleType

import httpx
import pytest

from course_app.checking import (  # noqa: F401  (fixtures: one client, one server per module)
    PluggedApp,
    SharedServer,
    loopback_client,
    shared_server,
)
from course_app.runtime import LessonServer
from course_app.services import NGINX_HINT, nginx_available, start_proxy
from tests.unavailable import unavailable

from task_helpers import server_said

NOW = 1_800_000_000  # a fixed "now" for token tests


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def needs_nginx() -> None:
    if not nginx_available():
        message = f"this test runs the stream through nginx: {NGINX_HINT}"
        unavailable(message)


@pytest.fixture
def serve_app(
    exercise: ModuleType,
    shared_server: SharedServer,  # noqa: F811
) -> Callable[..., PluggedApp]:
    """A fresh app of the exercise's with these options, on the module's one server."""
    return lambda **options: shared_server.plug(exercise.create_app(**options))


@pytest.fixture
def http(loopback_client: httpx.Client) -> httpx.Client:  # noqa: F811
    return loopback_client


def body(response: httpx.Response) -> object:
    """The JSON of an error answer, or its text when it is not JSON."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


class Lines:
    """The lines of a streaming response, read a few at a time."""

    def __init__(self, response: httpx.Response, server: PluggedApp | LessonServer) -> None:
        self.lines = response.iter_lines()
        self.server = server

    def until(self, prefix: str) -> list[str]:
        """The next non-empty lines, up to and including the first that starts with `prefix`."""
        seen: list[str] = []
        try:
            for line in self.lines:
                if line:
                    seen.append(line)
                if line.startswith(prefix):
                    return seen
        except httpx.RemoteProtocolError:
            pytest.fail(f"the stream broke off after {seen}{server_said(self.server)}")
        pytest.fail(f"the stream ended after {seen} without a line starting with {prefix!r}")

    def rest(self) -> list[str]:
        """The non-empty lines up to the end of the stream."""
        return [line for line in self.lines if line]


# -- tokens ----------------------------------------------------------------------------------


def test_valid_token_names_its_user(exercise: ModuleType) -> None:
    """verify_token returns the user of a valid, unexpired token

    A token is `user.expires.signature`. After checking it, which of its three parts is the
    answer? Does your expiry check compare with the `now` you were given?
    """
    token = exercise.issue_token("ada", 60, now=NOW)
    assert exercise.verify_token(token, now=NOW) == "ada"
    assert exercise.verify_token(token, now=NOW + 59) == "ada"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ex: None, "missing"),
        (lambda ex: "", "missing"),
        (lambda ex: "ada", "malformed"),
        (lambda ex: "ada.soon." + "0" * 64, "malformed"),
        (lambda ex: ".1800000060." + "0" * 64, "malformed"),
        (lambda ex: ex.issue_token("ada", 60, now=NOW).replace("ada", "eve"), "forged"),
        (lambda ex: ex.issue_token("ada", 60, now=NOW, secret=b"another key"), "forged"),
        (lambda ex: ex.issue_token("ada", 60, now=NOW)[:-1] + "x", "forged"),
        (lambda ex: ex.issue_token("ada", 60, now=NOW - 61), "expired"),
        (lambda ex: ex.issue_token("ada", 0, now=NOW), "expired"),
    ],
    ids=[
        "none", "empty", "one-part", "expires-not-digits", "no-user", "user-changed",
        "other-secret", "signature-changed", "expired", "expires-now",
    ],
)  # fmt: skip
def test_bad_tokens_are_refused_with_the_reason(
    exercise: ModuleType, make: Callable[[ModuleType], str | None], reason: str
) -> None:
    """verify_token refuses missing, malformed, forged and expired tokens, saying which

    Which check must come before the expiry check, so that a token whose user or expiry
    someone edited is called forged instead of being believed? A token whose `expires`
    equals now: still valid, or not?
    """
    with pytest.raises(exercise.TokenError, match=f"^token {reason}$"):
        exercise.verify_token(make(exercise), now=NOW)


def test_signature_is_compared_in_constant_time(
    exercise: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_token compares the signature with hmac.compare_digest, not with == or !=

    `==` on two strings stops at the first character that differs: how could an attacker
    who can time many requests use that to guess a valid signature one character at a
    time? Which function of the `hmac` module takes the same time wherever they differ?
    """
    # No timing measurement can see the difference reliably, so look at what is called:
    # hmac.compare_digest (also reachable as secrets.compare_digest or a from-import).
    seen: set[str] = set()  # what was compared, as text (bytes also as hex: .digest())
    real = hmac.compare_digest

    def recording(a: str | bytes, b: str | bytes) -> bool:
        for x in (a, b):
            seen.update([x.hex(), x.decode("latin-1")] if isinstance(x, bytes) else [x])
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    monkeypatch.setattr(secrets, "compare_digest", recording)
    for name, value in list(vars(exercise).items()):
        if value is real:  # `from hmac import compare_digest` in the learner's module
            monkeypatch.setattr(exercise, name, recording)
    token = exercise.issue_token("ada", 60, now=NOW)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert exercise.verify_token(token, now=NOW) == "ada"
    with pytest.raises(exercise.TokenError, match=r"^token forged$"):
        exercise.verify_token(forged, now=NOW)
    signatures = {token.rsplit(".", 1)[1], forged.rsplit(".", 1)[1]}
    assert signatures <= seen, (
        "the token's signature never went through hmac.compare_digest: "
        "compare it with hmac.compare_digest(signature, expected), not with == or !="
    )


# -- the endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["missing", "malformed", "forged", "expired"])
def test_bad_token_gets_401_before_any_stream(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
    reason: str,
) -> None:
    """a missing, malformed, forged or expired token gets 401 before any stream starts

    Where is a TokenError turned into an HTTP answer? Which header tells a client how to
    authenticate, and did your app take a stream slot for this request?
    """
    token = {
        "missing": "",
        "malformed": "ada",
        "forged": exercise.issue_token("ada", 60).replace("ada", "eve"),
        "expired": exercise.issue_token("ada", -10),
    }[reason]
    server = serve_app()
    response = http.get(server.url + "/events", params={"token": token} if token else None)
    assert response.status_code == 401, server_said(server)
    got = (body(response), response.headers.get("www-authenticate"))
    assert got == ({"detail": f"token {reason}"}, "Bearer")
    assert server.app.state.slots.peak == 0, "a refused client must never hold a stream slot"


def test_valid_token_streams_ticks_with_ids(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
) -> None:
    """a valid token streams `tick` events with ids 1, 2, ... and the user in the data

    Which keys of the dict you yield become the `event:` and `id:` lines? Is `data` built
    with json.dumps from `user`, `n` and `pad`?
    """
    server = serve_app(interval=0.5)
    token = exercise.issue_token("ada", 60)
    with http.stream("GET", server.url + "/events", params={"token": token}) as response:
        assert response.status_code == 200, f"{response.read()!r}{server_said(server)}"
        stream = Lines(response, server)
        lines = stream.until("data:") + stream.until("data:")
    events = [line for line in lines if not line.startswith(":")]
    assert events == [
        "id: 1", "event: tick", 'data: {"user": "ada", "n": 1, "pad": ""}',
        "id: 2", "event: tick", 'data: {"user": "ada", "n": 2, "pad": ""}',
    ]  # fmt: skip


def test_full_server_answers_503_and_keeps_serving_the_others(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
) -> None:
    """with max_streams open, the next client gets 503 + Retry-After; the open ones go on

    Does the slot dependency answer before the stream starts, with the header that says
    when to come back? Are the two streams already open still receiving events afterwards?
    And once one of them leaves, is its slot free for the next client?
    """
    server = serve_app(max_streams=2, retry_after=7, interval=1)
    token = exercise.issue_token("ada", 60)
    url = server.url + "/events"
    # Two streams at once: the client opens a connection for each.
    with (
        http.stream("GET", url, params={"token": token}) as first,
        http.stream("GET", url, params={"token": token}) as second,
    ):
        assert first.status_code == 200, server_said(server)
        assert second.status_code == 200, server_said(server)
        third = http.get(url, params={"token": token})
        assert third.status_code == 503, server_said(server)
        got = (body(third), third.headers.get("retry-after"))
        assert got == ({"detail": "too many open streams"}, "7")
        assert server.app.state.slots.peak == 2, "the 503 must come before a slot is taken"
        for response in (first, second):
            assert Lines(response, server).until("id: 2")[-1] == "id: 2"
        wrong = http.get(url, params={"token": "ada"})
        assert wrong.status_code == 401, "a bad token gets 401 even when the server is full"
    freed = wait_until(lambda: server.app.state.slots.open == 0)
    assert freed, "the slots were not given back when the clients left"
    with http.stream("GET", url, params={"token": token}) as again:
        assert again.status_code == 200, "a freed slot must serve the next client"


def test_quiet_stream_sends_heartbeats(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
) -> None:
    """a stream that has nothing to say sends a heartbeat comment every `heartbeat` seconds

    Which EventSourceResponse argument sends a comment line after a quiet spell? Is it
    given `heartbeat`, and not its default of 15 seconds?
    """
    # Ticks 100 s apart (2 s at the tests' pace), heartbeats every 0.1 s.
    server = serve_app(interval=100, heartbeat=0.1)
    token = exercise.issue_token("ada", 60)
    with http.stream("GET", server.url + "/events", params={"token": token}) as response:
        assert response.status_code == 200, server_said(server)
        stream = Lines(response, server)
        stream.until("data:")
        after_tick = stream.until(":")
    assert after_tick[0].startswith(":"), f"after the first tick came {after_tick}, not a comment"


def test_client_that_stops_reading_is_dropped(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
) -> None:
    """a client that stops reading is dropped by send_timeout, and its slot is freed

    Is `send_timeout` passed to the EventSourceResponse? When sse-starlette gives up on a
    send, the response ends with an exception (SendTimeoutError): does the code after
    `yield` in your slot dependency run when an exception ends the response, too?
    """
    # send_timeout is not scaled by the pace: 0.2 s is plenty for a client that never reads.
    server = serve_app(send_timeout=0.2, interval=0.01, pad=200_000)
    token = exercise.issue_token("ada", 60)
    slots = server.app.state.slots
    with socket.create_connection(("127.0.0.1", server.port)) as frozen:
        frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frozen.sendall(f"GET /events?token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        frozen.settimeout(10)
        status = b""
        while len(status) < 12 and (more := frozen.recv(12 - len(status))):
            status += more  # read the status line's start, and nothing more
        code = int(status[9:12] or 0)  # b"HTTP/1.1 200" -> 200
        assert code == 200, f"the stream did not start{server_said(server)}"
        started = wait_until(lambda: slots.peak == 1)
        assert started, "the stream started without taking a slot"

        # We never read: the socket buffers fill up, a send stalls, send_timeout fires and
        # the response ends with SendTimeoutError, which the server logs.
        def timed_out() -> bool:
            return any("SendTimeoutError" in line for line in server.logs)

        ended = wait_until(lambda: slots.open == 0 or timed_out())
        assert ended, (
            "the frozen client kept its stream and its slot: "
            "is send_timeout passed to the EventSourceResponse?"
        )
        freed = wait_until(lambda: slots.open == 0, 2)
        assert freed, (
            "send_timeout dropped the client (SendTimeoutError) but its slot stayed taken: "
            "code after `yield` is skipped when an exception ends the response"
        )


@pytest.mark.own_session  # waits on real clocks: runs beside the others
def test_shutdown_says_bye_with_retry_and_frees_the_slot(
    exercise: ModuleType,
    shared_server: SharedServer,  # noqa: F811
) -> None:
    """on shutdown the stream sends `bye` with `retry:`, ends cleanly and frees its slot

    How does sse-starlette tell your generator that the server is going away? After the
    loop, which event carries `retry` so that the browser waits before reconnecting? Does
    the generator stop waiting as soon as the event is set, rather than sleeping on?
    """
    # Only this server runs: sse-starlette learns of a shutdown through a process-wide flag,
    # which LessonServer sets only for a server that runs alone.
    shared_server.stop()
    # Ticks 100 s apart (2 s at the tests' pace), longer than the 1 s the generator is given
    # to say bye: a generator that sleeps on instead of waking at the shutdown is cut off.
    app = exercise.create_app(come_back_ms=4000, interval=100)
    with (
        LessonServer(app, name="t12-shutdown", grace=3) as server,
        httpx.Client(timeout=10, verify=False) as client,
        client.stream(
            "GET", server.url + "/events", params={"token": exercise.issue_token("ada", 60)}
        ) as response,
    ):
        assert response.status_code == 200, server_said(server)
        stream = Lines(response, server)
        stream.until("data:")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        bye = stream.until("event: bye")[-1:] + stream.until("retry:")
        try:
            after = stream.rest()
        except httpx.RemoteProtocolError:
            pytest.fail("after `bye` the server cut the stream off instead of ending it")
        stopper.join(15)
    got = bye + [line for line in after if not line.startswith(":")]
    assert got == ["event: bye", "data: server restarting", "retry: 4000"]
    assert app.state.slots.open == 0, "the slot was not given back at shutdown"


# -- through nginx ---------------------------------------------------------------------------


@pytest.mark.own_session  # waits on real clocks: runs beside the others
def test_through_nginx_heartbeats_outlive_the_read_timeout_and_a_restart_frees_the_slot(
    exercise: ModuleType,
    serve_app: Callable[..., PluggedApp],
    http: httpx.Client,
) -> None:
    """through nginx: heartbeats keep a quiet stream past proxy_read_timeout; nginx restarts

    nginx cuts an upstream that stays silent longer than proxy_read_timeout (0.5 s here,
    ticks 1 s apart): do heartbeats reach it in between? When nginx restarts with the
    stream open, the client is cut off: does the server free its slot and serve the next?
    """
    needs_nginx()
    # Ticks 50 s apart (1 s at the tests' pace), twice nginx's read timeout; heartbeats
    # every 0.05 s, ten in each read timeout.
    server = serve_app(interval=50, heartbeat=0.05)
    token = exercise.issue_token("ada", 60)
    slots = server.app.state.slots
    proxy = start_proxy(server, name="t12-nginx", read_timeout=0.5)
    try:
        url = proxy.url + "/events"
        refused = http.get(url, params={"token": "ada"})
        assert refused.status_code == 401, f"a bad token through nginx{server_said(server)}"
        with http.stream("GET", url, params={"token": token}) as response:
            assert response.status_code == 200, server_said(server)
            stream = Lines(response, server)
            assert stream.until("id:") == ["id: 1"]
            lines = stream.until("id:")
            assert lines[-1] == "id: 2", f"got {lines}"
            proxy.restart()
            with pytest.raises(httpx.RemoteProtocolError):
                stream.rest()
        freed = wait_until(lambda: slots.open == 0)
        assert freed, "the stream's slot was not given back when nginx went away"
        with http.stream("GET", url, params={"token": token}) as response:
            assert response.status_code == 200, "the restarted nginx should stream again"
            assert Lines(response, server).until("id:")[-1] == "id: 1"
    finally:
        proxy.stop()
