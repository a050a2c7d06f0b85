"""The conversion webhook (spec/rollouts.md §4.5, W1–W4) as the API server meets it: the real
`lockstep webhook serve` process over HTTPS with a test CA, talked to with httpx verifying it."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.rollout.convert import convert
from lockstep.rollout.resource import V1ALPHA1, V1ALPHA2
from tests import infra
from tests.infra import make_ca, start, stop, tail, wait_until
from tests.system import REPO_ROOT

UID = "3f2c9e1a-8b7d-4c55-9e0a-1d2b3c4d5e6f"
REVIEW = "apiextensions.k8s.io/v1"
H = "d288113130c5f2e7e3c69396cfda7604a50624ba07204770d0978c6f78359565"  # G1's hash

V1_AT_REST: dict[str, Any] = {
    "apiVersion": V1ALPHA1, "kind": "Environment",
    "metadata": {"name": "prod", "namespace": "default", "uid": "abc", "generation": 7,
                 "annotations": {"note": "kept"}},
    "spec": {"release": "v2026.11.3", "requestRollout": "f5b05c4a-56a3-5696-83de-153d3b2e3631"},
    "status": {"activeGeneration": 3, "resourcesHash": H,
               "lastCompletedRolloutRequest": "f5b05c4a-56a3-5696-83de-153d3b2e3631",
               "conditions": [{"type": "UpToDate", "status": "True", "reason": "Applied",
                               "message": "Successfully applied changes for generation 3",
                               "lastTransitionTime": "2026-11-03T12:00:00Z"}]},
}
V2_APPLIED: dict[str, Any] = {
    "apiVersion": V1ALPHA2, "kind": "Environment",
    "metadata": {"name": "staging", "labels": {"tier": "b"}},
    "spec": {"components": {"db": {"image": "example/db:1.0.0"}},
             "rolloutStrategy": "ManuallyPromote"},
    "status": {"activeGeneration": 1, "requestedRolloutHash": None,
               "lastCompletedRolloutHash": None, "conditions": []},
}
V1_PARTIAL: dict[str, Any] = {"apiVersion": V1ALPHA1, "kind": "Environment",
                              "metadata": {"name": "dev", "managedFields": []},
                              "spec": {"forcePromote": "abc", "futureField": 1}}


@dataclass
class Served:
    """A running `lockstep webhook serve` and a client trusting its CA."""

    proc: subprocess.Popen[bytes]
    log: Path
    base: str
    port: int
    ca: infra.TestCA
    client: httpx.Client


def _serve(tmp: Path, ca: infra.TestCA, *extra: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    """Start the real command on a free port; the port comes from its `serving` line."""
    log = tmp / "webhook.log"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    proc = start([sys.executable, "-m", "lockstep", "webhook", "serve",
                  "--cert", str(ca.server_crt), "--key", str(ca.server_key),
                  "--listen", "127.0.0.1:0", *extra], log, env=env)
    pattern = re.compile(r"serving https://127\.0\.0\.1:(\d+)/convert")
    wait_until(lambda: pattern.search(log.read_text()) is not None, proc, log)
    match = pattern.search(log.read_text())
    assert match is not None
    return proc, log, int(match.group(1))


def _client(ca: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("webhook")
    ca = make_ca(tmp)
    proc, log, port = _serve(tmp, ca)
    client = _client(ca.ca_crt)
    try:
        yield Served(proc, log, f"https://127.0.0.1:{port}", port, ca, client)
    finally:
        client.close()
        stop(proc)


def review(objects: list[Any], desired: str = V1ALPHA2, uid: str = UID) -> dict[str, Any]:
    return {"apiVersion": REVIEW, "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects}}


def post(s: Served, body: Any, raw: bytes | None = None,
         content_type: str = "application/json", path: str = "/convert") -> httpx.Response:
    data = raw if raw is not None else json.dumps(body).encode()
    return s.client.post(s.base + path, content=data, headers={"Content-Type": content_type})


def assert_failure(r: httpx.Response, status: int, uid: str) -> str:
    """The response is a ConversionReview `Failure` without objects; returns its message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["apiVersion"] == REVIEW and body["kind"] == "ConversionReview"
    assert body["response"]["uid"] == uid
    assert body["response"]["result"]["status"] == "Failure"
    assert "convertedObjects" not in body["response"]
    message: str = body["response"]["result"]["message"]
    assert message
    return message


# --- W1: a mixed batch ------------------------------------------------------------------------


def test_w1_mixed_batch_converts_in_order(served: Served) -> None:
    objects = [V1_AT_REST, V2_APPLIED, V1_PARTIAL]
    r = post(served, review(copy.deepcopy(objects)))
    assert r.status_code == 200, r.text
    response = r.json()["response"]
    assert response["uid"] == UID
    assert response["result"] == {"status": "Success"}
    converted = response["convertedObjects"]
    assert [o["apiVersion"] for o in converted] == [V1ALPHA2] * 3
    assert [o["metadata"] for o in converted] == [o["metadata"] for o in objects]
    assert [o["kind"] for o in converted] == ["Environment"] * 3
    # The server answers with the conversion function's own result, object by object.
    assert converted == [convert(o, V1ALPHA2) for o in objects]
    assert converted[0]["status"]["lastCompletedRolloutHash"] == H  # X2: at rest at H
    assert "requestRollout" not in converted[0]["spec"]
    assert converted[2]["spec"] == {"forcePromote": "abc", "futureField": 1}


def test_w1_down_conversion(served: Served) -> None:
    r = post(served, review([V2_APPLIED, V1_AT_REST], desired=V1ALPHA1))
    assert r.status_code == 200, r.text
    converted = r.json()["response"]["convertedObjects"]
    assert [o["apiVersion"] for o in converted] == [V1ALPHA1, V1ALPHA1]
    assert converted[1] == V1_AT_REST  # already in the desired version: unchanged
    assert converted[0] == convert(V2_APPLIED, V1ALPHA1)
    assert "requestRollout" in converted[0]["spec"]


def test_empty_batch_succeeds_and_query_string_is_ignored(served: Served) -> None:
    """The API server calls `/convert?timeout=30s`; an empty object list is a success."""
    r = post(served, review([]), path="/convert?timeout=30s")
    assert r.status_code == 200
    assert r.json()["response"] == {"uid": UID, "result": {"status": "Success"},
                                    "convertedObjects": []}


def test_chunked_body(served: Served) -> None:
    data = json.dumps(review([V1_AT_REST])).encode()
    chunks = iter([data[:10], data[10:500], data[500:]])
    r = served.client.post(served.base + "/convert", content=chunks,
                           headers={"Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 200, r.text
    assert r.json()["response"]["convertedObjects"] == [convert(V1_AT_REST, V1ALPHA2)]


# --- W2: not a review -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"{",
    b"[]",
    b'[{"apiVersion": "apiextensions.k8s.io/v1"}]',
    b'"ConversionReview"',
    b"",
    b"\xff\xfe{}",
    json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": UID}}).encode(),
    json.dumps({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
                "request": {"uid": UID, "desiredAPIVersion": V1ALPHA2, "objects": []}}).encode(),
    json.dumps({"apiVersion": REVIEW, "kind": "ConversionReview"}).encode(),
    json.dumps({"apiVersion": REVIEW, "kind": "ConversionReview", "request": []}).encode(),
    json.dumps({"apiVersion": REVIEW, "kind": "ConversionReview",
                "request": {"desiredAPIVersion": V1ALPHA2, "objects": []}}).encode(),
    json.dumps({"apiVersion": REVIEW, "kind": "ConversionReview",
                "request": {"uid": 7, "desiredAPIVersion": V1ALPHA2, "objects": []}}).encode(),
], ids=["brace", "array", "array-of-review", "string", "empty", "not-utf8", "admission-review",
        "v1beta1", "no-request", "request-not-object", "no-uid", "uid-not-string"])
def test_w2_malformed_reviews_are_400(served: Served, raw: bytes) -> None:
    assert_failure(post(served, None, raw=raw), 400, "")


def test_w2_wrong_content_type_is_400(served: Served) -> None:
    message = assert_failure(post(served, review([V1_AT_REST]), content_type="text/plain"),
                             400, "")
    assert "Content-Type" in message
    ok = post(served, review([]), content_type="application/json; charset=utf-8")
    assert ok.status_code == 200


# --- W3: a review that cannot be converted ------------------------------------------------------


def test_w3_unsupported_desired_version(served: Served) -> None:
    message = assert_failure(post(served, review([V1_AT_REST], desired="lockstep.dev/v9")),
                             200, UID)
    assert "lockstep.dev/v9" in message


@pytest.mark.parametrize(("bad", "words"), [
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "Pod"),
    ({"apiVersion": "lockstep.dev/v1", "kind": "Environment", "metadata": {"name": "e"}},
     "lockstep.dev/v1"),
    ({"kind": "Environment", "metadata": {"name": "e"}, "spec": {}}, "apiVersion"),
    (42, "object"),
    ([V1_AT_REST], "object"),
], ids=["pod", "unsupported-version", "no-apiversion", "number", "array"])
def test_w3_one_bad_object_fails_the_whole_review(served: Served, bad: Any, words: str) -> None:
    """All or nothing: the good object before the bad one is not returned either."""
    message = assert_failure(post(served, review([V1_AT_REST, bad])), 200, UID)
    assert message.startswith("object 1:"), message
    assert words in message


def test_w3_objects_not_a_list(served: Served) -> None:
    body = review([])
    body["request"]["objects"] = {"0": V1_AT_REST}
    assert "objects" in assert_failure(post(served, body), 200, UID)


# --- W4: what converts unchanged, without validation; the other paths ---------------------------


def test_w4_objects_already_in_the_desired_version_are_unchanged(served: Served) -> None:
    r = post(served, review([V2_APPLIED, V2_APPLIED]))
    assert r.json()["response"]["convertedObjects"] == [V2_APPLIED, V2_APPLIED]


def test_w4_conversion_never_validates(served: Served) -> None:
    """Both release and components, an invalid UUID, a negative timeout, an unknown strategy
    and an unknown field convert; validation is the schema's and the controller's job."""
    invalid = copy.deepcopy(V1_AT_REST)
    invalid["spec"].update({"components": {"Bad_Name": {"image": "NOT AN IMAGE"}},
                            "requestRollout": "not-a-uuid", "rolloutRequestTimeout": "-5h",
                            "rolloutStrategy": "Sometimes", "surprise": {"x": [1]}})
    r = post(served, review([invalid]))
    assert r.status_code == 200, r.text
    (out,) = r.json()["response"]["convertedObjects"]
    assert out == convert(invalid, V1ALPHA2)
    assert out["spec"]["release"] == "v2026.11.3" and "Bad_Name" in out["spec"]["components"]
    assert out["spec"]["rolloutRequestTimeout"] == "-5h"
    assert out["spec"]["surprise"] == {"x": [1]}


def test_w4_healthz(served: Served) -> None:
    r = served.client.get(served.base + "/healthz")
    assert (r.status_code, r.text.strip()) == (200, "ok")
    assert served.client.head(served.base + "/healthz").status_code == 200


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/convert", 405, "POST"),
    ("PUT", "/convert", 405, "POST"),
    ("DELETE", "/convert", 405, "POST"),
    ("POST", "/healthz", 405, "GET"),
    ("GET", "/", 404, None),
    ("POST", "/convert/", 404, None),
    ("POST", "/mutate", 404, None),
])
def test_w4_paths_and_methods(served: Served, method: str, path: str, status: int,
                              allow: str | None) -> None:
    r = served.client.request(method, served.base + path, content=b"{}")
    assert r.status_code == status
    assert r.headers.get("allow") == allow


def test_connection_is_kept_alive_across_requests(served: Served) -> None:
    """The API server reuses connections: several requests (a 404 among them) on one socket."""
    local_ports = set()
    for path in ("/healthz", "/nope", "/healthz", "/convert"):
        with served.client.stream("GET", served.base + path) as r:
            r.read()
            local_ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(local_ports) == 1


def test_answers_are_not_held_back_by_nagle(served: Served) -> None:
    """Headers and body leave in separate writes; without TCP_NODELAY each answer on a kept-alive
    connection waits for the client's delayed ACK (40 ms on Linux), which dominates a review."""
    import statistics
    import time

    durations = []
    for _ in range(21):
        started = time.perf_counter()
        assert post(served, review([V1_AT_REST])).status_code == 200
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.020, durations


def test_tls_is_real(served: Served) -> None:
    """A client that does not trust the test CA is refused; plain HTTP gets no answer."""
    with httpx.Client(verify=ssl.create_default_context(), timeout=5) as untrusting, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(served.base + "/healthz")
    with httpx.Client(timeout=5) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://127.0.0.1:{served.port}/healthz")
    # The server survives both and still answers.
    assert served.client.get(served.base + "/healthz").status_code == 200
    assert "TLS handshake failed" in served.log.read_text()


def test_log_never_holds_bodies(served: Served) -> None:
    post(served, review([V1_AT_REST]))
    assert "v2026.11.3" not in served.log.read_text()


# --- certificates ---------------------------------------------------------------------------


def _served_cert(port: int, cafiles: list[Path]) -> bytes:
    """The DER certificate the server presents now, verified against any of `cafiles`."""
    ctx = ssl.create_default_context()
    for ca in cafiles:
        ctx.load_verify_locations(cafile=str(ca))
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def test_replaced_certificate_is_served_after_the_reload_interval(tmp_path: Path) -> None:
    """Rotate to a certificate from another CA: once re-read, new connections get it, and a
    client trusting only the new CA converts; the old connection count does not matter."""
    live = tmp_path / "live"
    live.mkdir()
    first, second = make_ca(tmp_path / "a"), make_ca(tmp_path / "b")
    cert, key = live / "tls.crt", live / "tls.key"
    cert.write_bytes(first.server_crt.read_bytes())
    key.write_bytes(first.server_key.read_bytes())
    serving = infra.TestCA(live, first.ca_crt, cert, key)
    proc, log, port = _serve(tmp_path, serving, "--reload-every", "100ms")
    try:
        both = [first.ca_crt, second.ca_crt]
        assert _served_cert(port, both) == _der(first.server_crt)
        # Written one file after the other, as a careless rotation would: the half-rotated pair
        # (new certificate, old key) does not load and the old pair keeps serving meanwhile.
        cert.write_bytes(second.server_crt.read_bytes())
        wait_until(lambda: "certificate reload failed" in log.read_text(), proc, log)
        assert _served_cert(port, both) == _der(first.server_crt)
        key.write_bytes(second.server_key.read_bytes())
        wait_until(lambda: _served_cert(port, both) == _der(second.server_crt), proc, log)
        assert "reloaded certificate" in log.read_text()
        with _client(second.ca_crt) as client:
            r = client.post(f"https://127.0.0.1:{port}/convert",
                            json=review([V1_AT_REST]))
        assert r.status_code == 200 and r.json()["response"]["result"]["status"] == "Success"
    finally:
        stop(proc)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    proc, log, _port = _serve(tmp_path, ca)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, tail(log)
    assert "webhook: stopped" in log.read_text()


# --- bad invocations ----------------------------------------------------------------------------


def _lockstep(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "lockstep", *args], env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize(("args", "words"), [
    (["--cert", "{missing}", "--key", "{key}"], "cannot read the webhook certificate"),
    (["--cert", "{key}", "--key", "{key}"], "cannot load the webhook certificate"),
    (["--cert", "{cert}", "--key", "{cakey}"], "cannot load the webhook certificate"),
    (["--cert", "{cert}", "--key", "{key}", "--listen", "localhost"], "is not HOST:PORT"),
    (["--cert", "{cert}", "--key", "{key}", "--listen", "127.0.0.1:99999"], "is not HOST:PORT"),
    (["--cert", "{cert}", "--key", "{key}", "--reload-every", "-1s"], "--reload-every"),
    (["--cert", "{cert}", "--key", "{key}", "--reload-every", "0s"], "--reload-every"),
], ids=["missing-cert", "key-as-cert", "mismatched-key", "listen-no-port", "listen-bad-port",
        "negative-reload", "zero-reload"])
def test_bad_invocations_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    ca = make_ca(tmp_path)
    values = {"missing": str(tmp_path / "nope.crt"), "key": str(ca.server_key),
              "cert": str(ca.server_crt), "cakey": str(ca.dir / "ca.key")}
    proc = _lockstep("webhook", "serve", *[a.format(**values) for a in args])
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line and line.endswith(")")


def test_port_in_use_exits_2(served: Served) -> None:
    proc = _lockstep("webhook", "serve", "--cert", str(served.ca.server_crt),
                     "--key", str(served.ca.server_key), "--listen", f"127.0.0.1:{served.port}")
    assert proc.returncode == 2, proc.stderr
    assert "cannot listen on 127.0.0.1" in proc.stderr
