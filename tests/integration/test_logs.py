"""Logs: tail, since, replica, text and json, and follow over SSE."""

from __future__ import annotations

import json
import time

import httpx

from tests.integration.harness import Legato, service_spec, wait_for

TALKER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i from $(hostname); "
          "sleep 0.2; done & exec httpd -f -p 8080 -h /www"]


def test_tail_replica_and_formats(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, replicas=2, command=TALKER))
    detail = legato.wait_healthy(name, 2)
    time.sleep(2.5)

    text = legato.api.get(f"/services/{name}/logs", params={"tail": 3})
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert len(lines) == 3
    assert all("line " in line for line in lines)

    replica = detail["containers"][0]
    one = legato.api.get(f"/services/{name}/logs",
                         params={"replica": replica["name"], "format": "json", "tail": 50}).json()
    assert one["name"] == name
    assert one["total_lines"] == len(one["logs"]) > 0
    assert {entry["replica"] for entry in one["logs"]} == {replica["name"]}
    assert all(entry["message"].endswith(f"from {replica['id']}") for entry in one["logs"])
    stamps = [entry["timestamp"] for entry in one["logs"]]
    assert stamps == sorted(stamps)

    recent = legato.api.get(f"/services/{name}/logs",
                            params={"since": "1s", "format": "json", "tail": 1000}).json()
    everything = legato.api.get(f"/services/{name}/logs",
                                params={"format": "json", "tail": 1000}).json()
    assert 0 < recent["total_lines"] < everything["total_lines"]

    bad = legato.api.get(f"/services/{name}/logs", params={"replica": "nope"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "REPLICA_NOT_FOUND"
    assert legato.api.get(f"/services/{name}/logs", params={"since": "soon"}).status_code == 422


def test_follow_streams_new_lines_until_the_client_leaves(legato: Legato, name: str) -> None:
    legato.deploy(service_spec(name, command=TALKER))
    legato.wait_healthy(name, 1)
    received: list[dict[str, str]] = []
    started = time.monotonic()
    with legato.api.stream("GET", f"/services/{name}/logs",
                           params={"follow": "true", "tail": 0, "format": "json"},
                           timeout=httpx.Timeout(10)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[len("data: "):]))
            if len(received) >= 3:
                break
    assert time.monotonic() - started >= 0.3  # lines arrived as they were written
    numbers = [int(item["message"].split()[1]) for item in received]
    assert numbers == sorted(numbers)
    # The server lets go of the stream once the client has left.
    wait_for(lambda: legato.api.get("/services").status_code == 200, what="the API to answer")
