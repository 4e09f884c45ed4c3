"""Source deploy: a signed GitHub push to a small repository until the new version answers
through the edge, split by step (clone, build, push, deploy), and the control plane's own
share of it (target <= 10 %). Also: the first build of a Dockerfile against a rebuild with the
Dockerfile unchanged (the layer cache), and how fast the webhook is answered.

The control plane's share of a round is what is left of its wall time after the tools' work:
git's clone, Docker's build and push (as the build reports them), and a bare `docker run` of
the built image to its first 200 (measured in the same round).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    LOCALHOST,
    BenchError,
    docker,
    docker_published_port,
    docker_remove,
    first_200,
    legato_server,
    log,
    median,
    new_client,
    verdict,
)

from legato.registry import Registry

TARGET_SHARE = 0.10
REGISTRY = "127.0.0.1:5000"
SECRET = "bench-" + secrets.token_hex(16)


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@bench.test",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@bench.test"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def dockerfile(seed: str) -> str:
    # A step worth caching (about a second of shell work) before the content that changes.
    return (
        "FROM legato-test/busybox:latest\n"
        f'RUN echo "{seed}" > /seed && i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done\n'
        "COPY site/ /www/\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )


def commit(work: Path, version: str, seed: str) -> str:
    (work / "site").mkdir(exist_ok=True)
    (work / "Dockerfile").write_text(dockerfile(seed))
    (work / "site" / "index.html").write_text(f"{version}\n")
    (work / "site" / "healthz").write_text("ok\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", version, cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def signed_push(api_url: str, sha: str) -> tuple[httpx.Response, float]:
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "pusher": {"name": "bench"},
                       "repository": {"clone_url": "https://git.bench.test/b/app.git",
                                      "full_name": "b/app"}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    started = time.monotonic()
    response = httpx.post(f"{api_url}/api/v1/webhooks/github", content=body, timeout=10,
                          headers={"Content-Type": "application/json", "X-GitHub-Event": "push",
                                   "X-GitHub-Delivery": secrets.token_hex(8),
                                   "X-Hub-Signature-256": signature})
    return response, time.monotonic() - started


def bare_run(image: str, label: str, client: httpx.Client) -> float:
    """`docker run` of `image` to its first 200 on the published port, seconds."""
    started = time.monotonic()
    out = docker("run", "-d", "-p", f"{LOCALHOST}::8080", "--label", label, image,
                 "httpd", "-f", "-p", "8080", "-h", "/www")
    container = out.splitlines()[-1]
    try:
        port = docker_published_port(container)
        at, _ = first_200(client, f"http://{LOCALHOST}:{port}/healthz")
        return at - started
    finally:
        docker_remove([container])


def wait_deployment(legato: Any, name: str, after: int) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        items = legato.api.get(f"/services/{name}/deployments").json()["items"]
        newest: dict[str, Any] = items[0]
        if newest["number"] > after and newest["status"] not in ("pending", "running"):
            if newest["status"] != "successful":
                raise BenchError(f"deployment #{newest['number']} {newest['status']}: "
                                 f"{newest['error']}")
            return legato.api.get(f"/deployments/{newest['id']}").json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise BenchError("deployment did not finish in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seed = secrets.token_hex(6)  # a Dockerfile no earlier run has built: the first build is cold
    project = f"bench{secrets.token_hex(3)}"
    try:
        cold, rows = run_rounds(project, seed, args.rounds)
    finally:  # after the server and its containers are gone: the images it built
        ids = docker("images", "-q", f"{REGISTRY}/{project}/*").split()
        if ids:
            docker("rmi", "-f", *sorted(set(ids)))
        asyncio.run(forget(project))
    report(cold, rows)


async def forget(project: str) -> None:
    registry = Registry(REGISTRY)
    try:
        for image in await registry.project_images(project):
            await registry.delete_repository(image.repository)
    finally:
        await registry.close()


def run_rounds(project: str, seed: str, rounds: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp, legato_server() as legato:
        root = Path(tmp)
        bare = root / "app.git"
        git("init", "-q", "--bare", "--initial-branch=main", str(bare), cwd=root)
        git("clone", "-q", str(bare), "work", cwd=root)
        work = root / "work"
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=work)
        name = "app"
        client = new_client()
        first_sha = commit(work, "v0", seed)
        legato.api.post("/projects", json={"name": project, "repository": str(bare)})
        legato.api.post("/webhooks", json={"project": project, "provider": "github",
                                           "secret": SECRET})
        host = f"{name}-{project}.localhost"
        spec = {"name": f"{name}-{project}", "project": project, "port": 8080,
                "health": "/healthz", "domain": host, "build": {}}
        name = spec["name"]
        started = time.monotonic()
        legato.deploy(spec)
        cold = wait_deployment(legato, name, 0)
        first_200(client, legato.edge_url, host=host, timeout=60)
        log(f"cold build of {first_sha[:12]}: {cold['build']['seconds']} "
            f"in {time.monotonic() - started:.2f}s")
        for round_ in range(1, rounds + 1):
            version = f"v{round_}"
            sha = commit(work, version, seed)  # Dockerfile unchanged: the cache applies
            number = legato.api.get(f"/services/{name}/deployments").json()["items"][0][
                "number"]
            started = time.monotonic()
            response, answered = signed_push(legato.api_url, sha)
            if response.status_code != 200 or response.json()["status"] != "deploying":
                raise BenchError(f"webhook answered {response.status_code}: {response.text}")
            while client.get(legato.edge_url, headers={"Host": host}).text != f"{version}\n":
                if time.monotonic() - started > 300:
                    raise BenchError(f"{version} not served within 300 s")
                time.sleep(0.01)
            total = time.monotonic() - started
            done = wait_deployment(legato, name, number)
            seconds = done["build"]["seconds"]
            run = bare_run(done["image"], legato.bare_label, client)
            tools = seconds["clone"] + seconds["build"] + seconds["push"] + run
            rows.append({"total": total, "answer": answered, **seconds, "run": run,
                         "deploy": total - seconds["clone"] - seconds["build"]
                         - seconds["push"], "control": total - tools})
            log(f"round {round_}: {rows[-1]}")
    return cold, rows


def report(cold: dict[str, Any], rows: list[dict[str, float]]) -> None:
    cold_build = cold["build"]["seconds"]["build"]
    print("source_deploy breakdown (seconds; deploy = total - clone - build - push; "
          "control = total - clone - build - push - bare docker run to first 200)")
    print("  round  total  answer  clone  build  push  deploy  bare_run  control  share")
    for i, r in enumerate(rows, 1):
        print(f"  {i:5d}  {r['total']:5.2f}  {r['answer']:6.3f}  {r['clone']:5.2f}  "
              f"{r['build']:5.2f}  {r['push']:4.2f}  {r['deploy']:6.2f}  {r['run']:8.2f}  "
              f"{r['control']:7.2f}  {r['control'] / r['total']:5.1%}")
    share = median([r["control"] / r["total"] for r in rows])
    print(f"source_deploy: total_s={median([r['total'] for r in rows]):.2f} "
          f"clone_s={median([r['clone'] for r in rows]):.2f} "
          f"build_s={median([r['build'] for r in rows]):.2f} "
          f"push_s={median([r['push'] for r in rows]):.2f} "
          f"deploy_s={median([r['deploy'] for r in rows]):.2f} "
          f"control_plane_share={share:.1%} (target <= {TARGET_SHARE:.0%}) "
          f"{verdict(share, TARGET_SHARE, at_most=True)} rounds={len(rows)}")
    print(f"source_deploy: webhook_answer_ms_max={max(r['answer'] for r in rows) * 1000:.0f} "
          f"(target <= 1000) {verdict(max(r['answer'] for r in rows), 1.0, at_most=True)}")
    print(f"source_deploy: first_build_s={cold_build:.2f} "
          f"cached_rebuild_s={median([r['build'] for r in rows]):.2f} (Dockerfile unchanged)")


if __name__ == "__main__":
    main()
