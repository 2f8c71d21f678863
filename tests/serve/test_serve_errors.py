"""Auth and every client error: the status and OpenAI error body the official client expects."""

from __future__ import annotations

import httpx
import openai
import pytest

from conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def post(server: str, body, path: str = "/v1/chat/completions", headers=None, **kwargs):
    headers = {**AUTH, **(headers or {})}
    if isinstance(body, (str, bytes)):
        return httpx.post(server + path, content=body, headers=headers, timeout=60, **kwargs)
    return httpx.post(server + path, json=body, headers=headers, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_every_route_but_health_needs_the_key(server):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/admin/adapters"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = httpx.request(method, server + path, headers=headers, json=CHAT)
            assert response.status_code == 401, (path, headers)
            assert error_of(response)["code"] in ("missing_api_key", "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"


def test_the_openai_client_sees_auth_errors(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_metrics_are_prometheus_text(server, client):
    client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    response = httpx.get(server + "/metrics", headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE tuneforge_requests_total counter" in text
    assert (
        'tuneforge_requests_total{route="/v1/chat/completions",model="tiny",status="200"}' in text
    )
    assert "tuneforge_batch_rows_bucket" in text and "tuneforge_completion_tokens_total" in text


def test_unknown_model_is_a_404(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"
    for name in ("../alpha", "alpha/../../etc/passwd", "/etc/passwd"):
        response = post(server, {**CHAT, "model": name})
        assert response.status_code == 404 and error_of(response)["param"] == "model"
    assert httpx.get(server + "/v1/models/nope", headers=AUTH).status_code == 404


def test_prompt_over_the_context_is_context_length_exceeded(client, server):
    long = "the quick brown fox " * 400  # far beyond the tiny model's 512 positions
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": long}])
    assert caught.value.body["code"] == "context_length_exceeded"
    too_many = post(server, {**CHAT, "max_tokens": 600})
    assert too_many.status_code == 400 and error_of(too_many)["code"] == "context_length_exceeded"
    completion = post(server, {"model": "tiny", "prompt": long, "max_tokens": 1}, "/v1/completions")
    assert error_of(completion)["param"] == "prompt"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": "hello"}, "messages"),
        ({"model": ""}, "model"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"bogus": 1}, "bogus"),
        ({"tuneforge": {"constrain_to_labels": True}}, "tuneforge.constrain_to_labels"),
        ({"tuneforge": {"nope": True}}, "tuneforge.nope"),
        ({"seed": 2**64, "temperature": 1}, "seed"),  # torch's generators overflowed: a 500
        ({"seed": -(2**63) - 1, "temperature": 1}, "seed"),
        ({"max_tokens": True}, "max_tokens"),  # lax mode read it as 1
    ],
)
def test_bad_parameters_are_400s_naming_the_parameter(server, change, param):
    response = post(server, {**CHAT, **change})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_missing_fields_and_completion_parameters(server):
    response = post(server, {"model": "alpha"})
    assert response.status_code == 400 and error_of(response)["param"] == "messages"
    for change, param in [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": ""}, "prompt"),  # an empty row crashed the batch it shared (a 500)
        ({"prompt": [""]}, "prompt"),
    ]:
        response = post(server, {"model": "alpha", "prompt": "x", **change}, "/v1/completions")
        assert response.status_code == 400 and error_of(response)["param"] == param


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"model": ' + b"[" * 10_000],
)
def test_malformed_json_is_a_400(server, body):
    response = post(server, body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_oversized_bodies_are_413(server):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 20_000}]}  # limit: 16 KiB
    response = post(server, big)
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "alpha", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}]}'

    streamed = httpx.post(server + "/v1/chat/completions", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413


def test_unknown_routes_and_methods_get_json_errors(server):
    response = httpx.get(server + "/v1/nothing", headers=AUTH)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = httpx.get(server + "/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            b'{"model": "alpha", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages.0.content",
        ),
        (b'{"model": "alpha", "prompt": "a\\udfff"}', "prompt"),
        (b'{"model": "alpha", "prompt": "x", "temperature": NaN}', "temperature"),
    ],
)
def test_values_json_allows_but_no_model_can_use_are_400s(server, body, param):
    path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    response = post(server, body, path, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@pytest.mark.parametrize(
    ("path", "change", "param", "expected"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "a string or a list of text parts"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content", "only text is supported"),
        ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt", "a string or a list of strings"),
        ("/v1/chat/completions", {"stop": 5}, "stop", "a string or a list of strings"),
    ],
)  # fmt: skip
def test_union_errors_name_the_parameter_not_pydantics_member(
    server, path, change, param, expected
):
    body = {**CHAT, **change}
    if path == "/v1/completions":
        body = {"model": "alpha", **change}
    error = error_of(post(server, body, path))
    assert error["param"] == param and expected in error["message"], error
    assert ".str" not in error["message"]


def test_a_vanishing_temperature_decodes_greedily(server):
    response = post(server, {**CHAT, "temperature": 1e-300, "seed": 1})
    assert response.status_code == 200, response.text
    greedy = post(server, {**CHAT, "temperature": 0})
    assert response.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]
