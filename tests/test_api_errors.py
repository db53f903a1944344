"""The error contract on a bare FastAPI app: every class of bad input is a JSON 4xx naming the problem."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, StrictStr

from stack.serving.api_errors import field_path, install


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = install(FastAPI(), max_body_bytes=100)

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return {"text": body.text}

    return TestClient(app)


def error(resp) -> dict:
    assert resp.headers["content-type"] == "application/json"
    return resp.json()["error"]


def test_good_request(client: TestClient) -> None:
    assert client.post("/echo", json={"text": "hi"}).json() == {"text": "hi"}


@pytest.mark.parametrize(("content", "headers", "status", "param"), [
    ('{"text": ', {"Content-Type": "application/json"}, 400, None),
    ('{"text": "hi", "more": 1}', {"Content-Type": "application/json"}, 422, "more"),
    ('{"text": 1}', {"Content-Type": "application/json"}, 422, "text"),
    ("{}", {"Content-Type": "application/json"}, 422, "text"),
    ('{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ('{"text": "hi"}', {}, 415, "Content-Type"),
    ('{"text": "' + "x" * 200 + '"}', {"Content-Type": "application/json"}, 413, None),
])
def test_bad_input(client: TestClient, content: str, headers: dict, status: int, param: str | None) -> None:
    resp = client.post("/echo", content=content, headers=headers)
    assert resp.status_code == status
    err = error(resp)
    assert err["code"] == status and err["param"] == param and err["message"]


def test_chunked_body_over_limit_is_refused(client: TestClient) -> None:
    chunks = (b'{"text": "' + b"x" * 60 + b'"}' for _ in range(3))  # no Content-Length
    resp = client.post("/echo", content=chunks, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert error(client.get("/nowhere"))["code"] == 404
    assert error(client.get("/echo"))["code"] == 405


@pytest.mark.parametrize(("loc", "expected"), [
    (("body", "features", 0, "int"), "features[0]"),
    (("messages", 0, "ChatCompletionDeveloperMessageParam", "content", "str"), "messages[0].content"),
    (("body", "text", "function-after[_not_blank(), constrained-str]"), "text"),
    (("body",), None),
])
def test_field_path(loc: tuple, expected: str | None) -> None:
    assert field_path(loc) == expected
