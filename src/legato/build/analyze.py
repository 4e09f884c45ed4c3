"""Repository analysis: how to build a checked-out repository into an image, and a Dockerfile if it has none.

Pure and safe: it only reads files below the root (never executes anything, never follows a symlink out of
the root, never reads more than MAX_READ_BYTES of a file), tolerates unreadable or invalid files, and never
writes a value taken from the repository into a Dockerfile unless it matches a strict character set.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["DEFAULT_PORT", "MAX_READ_BYTES", "Analysis", "Kind", "analyze"]

Kind = Literal["dockerfile", "python", "node", "go", "static", "unknown"]

MAX_READ_BYTES = 256 * 1024
DEFAULT_PORT = 8080

PYTHON_IMAGE = "python:3.12-slim"
NODE_IMAGE = "node:20-alpine"
GO_MIN_VERSION = (1, 22)
GO_RUNTIME_IMAGE = "alpine:3.20"
STATIC_IMAGE = "busybox:stable"

# Anything taken from the repository and written into a Dockerfile must match this: no quotes, blanks,
# newlines, `$`, backslashes or shell metacharacters, so it can neither end a JSON string nor start an
# instruction; no leading `-` so it cannot turn into an option of the command it is passed to.
_SAFE = re.compile(r"[A-Za-z0-9_.:/@][A-Za-z0-9_.:/@-]{0,199}")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PY_MODULE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*", re.ASCII)
_DIR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

_EXPOSE = re.compile(r"^[ \t]*EXPOSE[ \t]+(\S+)", re.IGNORECASE | re.MULTILINE)
_CONTINUATION = re.compile(r"\\[ \t]*\r?\n")
_GO_MODULE = re.compile(r"^[ \t]*module[ \t]+\"?([^\s\"]+)", re.MULTILINE)
_GO_VERSION = re.compile(r"^[ \t]*go[ \t]+([0-9]+)\.([0-9]+)", re.MULTILINE)
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DJANGO_SETTINGS = re.compile(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([^'\"\n]+)['\"]")
_FACTORY = re.compile(r"^def[ \t]+(create_app|make_app)[ \t]*\(", re.MULTILINE)

_DIR_LIMIT = 1000  # entries looked at per directory: enough to find a main package, bounded on huge trees
_PYTHON_MARKERS = ("pyproject.toml", "requirements.txt", "Pipfile")
_STATIC_DIRS = ("", "public", "dist", "build")
# Lock file -> package manager, most specific first: a repository migrating to pnpm often keeps the old lock.
_NODE_LOCKS = (
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
# Dependency -> framework, servers first: a server that also uses vite is still a server.
_NODE_FRAMEWORKS = (
    ("next", "next"),
    ("@nestjs/core", "nest"),
    ("fastify", "fastify"),
    ("express", "express"),
    ("vite", "vite"),
    ("react-scripts", "create-react-app"),
)
_NODE_INSTALL = {
    ("npm", True): "npm ci",
    ("npm", False): "npm install",
    ("yarn", True): "yarn install --frozen-lockfile",
    ("yarn", False): "yarn install",
    ("pnpm", True): "pnpm install --frozen-lockfile",
    ("pnpm", False): "pnpm install",
}
# Files where Python web applications usually create their app object, with the module each one is.
_PY_APP_FILES = (
    ("app.py", "app"),
    ("main.py", "main"),
    ("wsgi.py", "wsgi"),
    ("asgi.py", "asgi"),
    ("application.py", "application"),
    ("server.py", "server"),
    ("api.py", "api"),
    ("app/__init__.py", "app"),
    ("app/main.py", "app.main"),
    ("src/main.py", "src.main"),
    ("src/app.py", "src.app"),
)


@dataclass(frozen=True)
class Analysis:
    """What the repository is, which files decided it, why, and how to build it."""

    kind: Kind
    framework: str | None  # e.g. "flask", "django", "fastapi", "express", "next", None
    found: tuple[str, ...]  # repository-relative files that decided it, e.g. ("requirements.txt",)
    reason: str  # one human sentence: what was found and why this kind was chosen
    port: int  # the port the image listens on (own Dockerfile: from its first EXPOSE, else 8080)
    dockerfile: str | None  # generated Dockerfile text; None when the repository brings its own
    dockerfile_path: str | None  # the repository's own Dockerfile path when kind == "dockerfile"
    warnings: tuple[str, ...] = ()  # files that were unusable and the defaults chosen instead


def analyze(root: Path, *, dockerfile: str = "Dockerfile", context: str = ".") -> Analysis:
    """How to build the repository at `root` (its `context` subdirectory)."""
    tree = _Tree.open(Path(root), context)
    if isinstance(tree, str):
        return _unknown(tree)
    own = _own_dockerfile(tree, dockerfile)
    if own is not None:
        return own
    for detect in (_go, _node, _python, _static):
        result = detect(tree)
        if result is not None:
            return result
    where = "the repository root" if tree.context == "." else f"{_show(tree.context)}/"
    looked_for = ", ".join([_show(dockerfile), "go.mod", "package.json", *_PYTHON_MARKERS])
    return _unknown(
        f"None of {looked_for} or index.html (in the context or its public/, dist/ or build/) was found "
        f"in {where}, so there is no known way to build it",
        tree.notes,
    )


# --- reading the repository ---------------------------------------------------------------------------


@dataclass
class _Tree:
    """A read-only view of one repository that never leaves it; names are relative to the context."""

    root: Path  # resolved
    context: str  # normalised, repository-relative, "." for the root
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: Path, context: str) -> _Tree | str:
        """The view of `root`'s `context`, or why there is none."""
        try:
            resolved = root.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return "The repository directory does not exist, so there is nothing to analyse"
        if not resolved.is_dir():
            return "The repository path is not a directory, so there is nothing to analyse"
        tree = cls(resolved, ".")
        relative = _normalise(context)
        if relative is None:
            return f"The context {_show(context)} is outside the repository, so it was not analysed"
        tree.context = relative
        if not tree.is_dir("."):
            return f"The context {_show(context)} is not a directory inside the repository"
        return tree

    def rel(self, name: str) -> str | None:
        """`name` as a normalised repository-relative POSIX path; None when it points outside."""
        return _normalise(posixpath.join(self.context, name))

    def _locate(self, name: str) -> Path | None:
        rel = self.rel(name)
        if rel is None:
            return None
        try:
            # Resolving first makes every symlink visible: whatever it points to must still be inside.
            path = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL in the name
            return None
        return path if path.is_relative_to(self.root) else None

    def is_file(self, name: str) -> bool:
        """Whether `name` is a regular file inside the repository (after symlinks)."""
        path = self._locate(name)
        try:
            return path is not None and path.is_file()
        except OSError:
            return False

    def is_dir(self, name: str) -> bool:
        """Whether `name` is a directory inside the repository (after symlinks)."""
        path = self._locate(name)
        try:
            return path is not None and path.is_dir()
        except OSError:
            return False

    def listdir(self, name: str) -> list[str]:
        """Up to _DIR_LIMIT entry names of directory `name`, sorted; empty when it is unusable."""
        path = self._locate(name)
        if path is None:
            return []
        names: list[str] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    names.append(entry.name)
                    if len(names) >= _DIR_LIMIT:
                        break
        except OSError:
            return []
        return sorted(names)

    def read(self, name: str, *, whole: bool = False) -> str | None:
        """File `name`'s first MAX_READ_BYTES as text; None when unusable (or, if `whole`, when larger)."""
        path = self._locate(name)
        if path is None:
            return None
        shown = _show(self.rel(name) or name)
        # O_NOFOLLOW closes the gap between resolving and opening; O_NONBLOCK keeps a FIFO from hanging us.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                data = handle.read(MAX_READ_BYTES + 1)
        except OSError as exc:
            self.notes.append(f"{shown} could not be read ({exc.strerror or type(exc).__name__})")
            return None
        if len(data) > MAX_READ_BYTES:
            if whole:
                self.notes.append(f"{shown} is larger than {MAX_READ_BYTES // 1024} KiB and was not parsed")
                return None
            data = data[:MAX_READ_BYTES]
        return data.decode("utf-8-sig", errors="replace")

    def found(self, *names: str) -> tuple[str, ...]:
        """The repository-relative paths of `names`, for Analysis.found."""
        return tuple(self.rel(name) or name for name in names)


def _normalise(path: str) -> str | None:
    """`path` normalised to a relative POSIX path ("." for the root); None when it leaves the root."""
    if "\x00" in path:
        return None
    normal = posixpath.normpath(path.replace("\\", "/") or ".")
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
        return None
    return normal


def _show(value: str, limit: int = 80) -> str:
    """`value` made printable and short enough to quote in a human sentence."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return printable + ("..." if len(value) > limit else "")


def _safe(value: object, pattern: re.Pattern[str] = _SAFE) -> str | None:
    """`value` when it is a string that may be written into a Dockerfile, else None."""
    if isinstance(value, str) and pattern.fullmatch(value) and _SAFE.fullmatch(value):
        return value
    return None


def _table(value: object) -> dict[str, object]:
    """`value` when it is a JSON object or TOML table (string keys only), else an empty one."""
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if isinstance(key, str)}
    return {}


def _load_json(tree: _Tree, name: str) -> dict[str, object]:
    """The JSON object in file `name`; empty (with a note saying why) when it is not one."""
    text = tree.read(name, whole=True)
    if text is None:
        return {}
    try:
        loaded: object = json.loads(text)
    except json.JSONDecodeError as exc:
        tree.notes.append(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}), so defaults were used")
        return {}
    except (ValueError, RecursionError):
        tree.notes.append(f"{name} is not valid JSON, so defaults were used")
        return {}
    if not isinstance(loaded, dict):
        tree.notes.append(f"{name} is not a JSON object, so defaults were used")
    return _table(loaded)


def _load_toml(tree: _Tree, name: str) -> dict[str, object] | None:
    """The TOML document in file `name`; None (with a note saying why) when it is unreadable or invalid."""
    text = tree.read(name, whole=True)
    if text is None:
        return None
    try:
        return _table(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        tree.notes.append(f"{name} is not valid TOML ({_show(detail)}), so it was ignored")
        return None


# --- the result -----------------------------------------------------------------------------------------


def _sentence(main: str, notes: Iterable[str]) -> str:
    """One sentence: the finding, then every note, separated by semicolons."""
    return "; ".join([main, *notes]) + "."


def _unknown(main: str, notes: Sequence[str] = ()) -> Analysis:
    return Analysis(
        kind="unknown", framework=None, found=(), reason=_sentence(main, notes), port=DEFAULT_PORT,
        dockerfile=None, dockerfile_path=None, warnings=tuple(notes),
    )


def _generated(
    tree: _Tree, kind: Kind, framework: str | None, found: tuple[str, ...], main: str, lines: list[str],
) -> Analysis:
    return Analysis(
        kind=kind, framework=framework, found=found, reason=_sentence(main, tree.notes), port=DEFAULT_PORT,
        dockerfile=_render(kind, framework, lines), dockerfile_path=None, warnings=tuple(tree.notes),
    )


def _render(kind: Kind, framework: str | None, lines: list[str]) -> str:
    """The Dockerfile text; refuses a line break inside any line, the one way to smuggle an instruction."""
    header = f"# Generated by Legato: {kind}" + (f" ({framework})" if framework else "")
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"refusing to write a Dockerfile line with a line break: {line!r}")
    return "\n".join([header, *lines]) + "\n"


def _cmd(argv: Sequence[str]) -> str:
    """A CMD in exec (JSON array) form: no shell, and json.dumps escapes whatever slipped through."""
    return "CMD " + json.dumps(list(argv))


def _serve_lines(user: str | None) -> list[str]:
    """The closing lines every generated image shares: who it runs as and the port it listens on."""
    return [*([f"USER {user}"] if user else []), f"ENV PORT={DEFAULT_PORT}", f"EXPOSE {DEFAULT_PORT}"]


_STATIC_CMD = _cmd(["httpd", "-f", "-p", str(DEFAULT_PORT), "-h", "/www"])


# --- the repository's own Dockerfile ------------------------------------------------------------------


def _own_dockerfile(tree: _Tree, dockerfile: str) -> Analysis | None:
    path = tree.rel(dockerfile)
    if path is None or not tree.is_file(dockerfile):
        if dockerfile != "Dockerfile":
            tree.notes.append(f"the Dockerfile {_show(dockerfile)} was not found")
        return None
    text = tree.read(dockerfile) or ""
    match = _EXPOSE.search(_CONTINUATION.sub(" ", text))
    port = DEFAULT_PORT
    if match is None:
        why = f"it has no EXPOSE, so port {DEFAULT_PORT} is assumed"
    else:
        raw = match.group(1)
        number = raw.split("/", 1)[0]
        if re.fullmatch(r"[0-9]{1,5}", number) and 1 <= int(number) <= 65535:
            port = int(number)
            why = f"its first EXPOSE gives port {port}"
        else:
            why = f"its first EXPOSE ({_show(raw, 40)}) is not a port, so port {DEFAULT_PORT} is assumed"
    return Analysis(
        kind="dockerfile", framework=None, found=(path,),
        reason=_sentence(
            f"Found {_show(path)}, so the repository's own Dockerfile is used; {why}", tree.notes,
        ),
        port=port, dockerfile=None, dockerfile_path=path, warnings=tuple(tree.notes),
    )


# --- Go -------------------------------------------------------------------------------------------------


def _go(tree: _Tree) -> Analysis | None:
    if not tree.is_file("go.mod"):
        return None
    text = tree.read("go.mod") or ""
    module_match = _GO_MODULE.search(text)
    module = module_match.group(1) if module_match else None
    version_match = _GO_VERSION.search(text)
    declared = (int(version_match.group(1)), int(version_match.group(2))) if version_match else None
    # The image must be at least as new as the go directive, or the build would need to fetch a toolchain.
    major, minor = max(declared or GO_MIN_VERSION, GO_MIN_VERSION)
    image = f"golang:{major}.{minor}-alpine"
    found = ["go.mod"]
    target = "."
    if not tree.is_file("main.go") and not any(name.endswith(".go") for name in tree.listdir(".")):
        command = _go_command(tree, module)
        if command is None:
            tree.notes.append("no Go files at the root or main.go under cmd/, so `go build .` is tried")
        else:
            target = f"./cmd/{command}"
            found.append(f"cmd/{command}/main.go")
    lines = [
        f"FROM {image} AS build",
        "WORKDIR /src",
        "COPY go.mod go.sum* ./",
        "RUN go mod download",
        "COPY . .",
        f'RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/app {target}',
        f"FROM {GO_RUNTIME_IMAGE}",
        "RUN adduser -D -H -u 10001 app",
        "COPY --from=build /out/app /usr/local/bin/app",
        *_serve_lines("app"),
        _cmd(["/usr/local/bin/app"]),
    ]
    described = f"module {_show(module)}" if module else "no module line"
    if declared:
        described += f", go {declared[0]}.{declared[1]}"
    main = (
        f"Found go.mod ({described}), so it is built as a Go program ({target}) with {image} "
        f"and run from {GO_RUNTIME_IMAGE}"
    )
    return _generated(tree, "go", None, tree.found(*found), main, lines)


def _go_command(tree: _Tree, module: str | None) -> str | None:
    """The directory under cmd/ holding the main package: the one named like the module, else the first."""
    names = [
        name for name in tree.listdir("cmd") if _safe(name, _DIR_NAME) and tree.is_file(f"cmd/{name}/main.go")
    ]
    if not names:
        return None
    wanted = module.rstrip("/").rsplit("/", 1)[-1] if module else None
    return wanted if wanted in names else names[0]


# --- Node -----------------------------------------------------------------------------------------------


def _node(tree: _Tree) -> Analysis | None:
    if not tree.is_file("package.json"):
        return None
    manifest = _load_json(tree, "package.json")
    deps = {**_table(manifest.get("devDependencies")), **_table(manifest.get("dependencies"))}
    scripts = _table(manifest.get("scripts"))
    has_start = isinstance(scripts.get("start"), str) and bool(scripts.get("start"))
    has_build = isinstance(scripts.get("build"), str) and bool(scripts.get("build"))

    lock = next(((name, manager) for name, manager in _NODE_LOCKS if tree.is_file(name)), None)
    if lock is not None:
        manager = lock[1]
    else:
        declared = manifest.get("packageManager")
        manager = next(
            (m for m in ("pnpm", "yarn") if isinstance(declared, str) and declared.startswith(f"{m}@")), "npm"
        )
    install = _NODE_INSTALL[(manager, lock is not None)]
    copy_manifest = "package.json" + (f" {lock[0]}" if lock else "")
    setup = ["ENV COREPACK_ENABLE_DOWNLOAD_PROMPT=0", "RUN corepack enable"] if manager != "npm" else []
    found = tree.found("package.json", *([lock[0]] if lock else []))
    with_manager = f"{manager} on {NODE_IMAGE}"

    framework = next((name for dep, name in _NODE_FRAMEWORKS if dep in deps), None)
    if framework in ("vite", "create-react-app") or (framework is None and has_build and not has_start):
        # A front-end build: Node only compiles it, and the image that runs holds nothing but the files.
        out = "build" if framework == "create-react-app" else "dist"
        tool = "react-scripts" if framework == "create-react-app" else "vite"
        build = f"{manager} run build" if has_build else f"npx {tool} build"
        lines = [
            f"FROM {NODE_IMAGE} AS build",
            *setup,
            "WORKDIR /app",
            f"COPY {copy_manifest} ./",
            f"RUN {install}",
            "COPY . .",
            f"RUN {build}",
            f"FROM {STATIC_IMAGE}",
            f"COPY --from=build /app/{out} /www",
            *_serve_lines("65534:65534"),
            _STATIC_CMD,
        ]
        main = (
            f"Found {_listing(found)}{_with(framework)} and no start script, so it is built as a static site "
            f"with {with_manager} and {out}/ is served by busybox httpd"
        )
        return _generated(tree, "node", framework, found, main, lines)

    build_step = f"{manager} run build" if has_build else ("npx next build" if framework == "next" else None)
    argv = _node_command(tree, manifest, manager, framework, has_start, has_build)
    lines = [
        f"FROM {NODE_IMAGE}",
        *setup,
        "WORKDIR /app",
        # The official image's unprivileged `node` user owns the app, so installs never run as root.
        "RUN chown node:node /app",
        "USER node",
        f"COPY --chown=node:node {copy_manifest} ./",
        f"RUN {install}",
        "COPY --chown=node:node . .",
        *([f"RUN {build_step}"] if build_step else []),
        "ENV NODE_ENV=production",
        *_serve_lines(None),  # already `node`, set before installing
        _cmd(argv),
    ]
    main = (
        f"Found {_listing(found)}{_with(framework)}, so it is built with {with_manager} "
        f"and started with `{' '.join(argv)}`"
    )
    return _generated(tree, "node", framework, found, main, lines)


def _node_command(
    tree: _Tree, manifest: dict[str, object], manager: str, framework: str | None, has_start: bool,
    has_build: bool,
) -> list[str]:
    """How a Node server starts: Nest's compiled entry, the start script, `next start`, or main."""
    if framework == "nest" and has_build:
        return ["node", "dist/main.js"]
    if has_start:
        return [manager, "start"]
    if framework == "next":
        return ["npx", "next", "start"]
    declared = manifest.get("main")
    entry = _safe(declared)
    if declared is not None and entry is None:
        tree.notes.append("package.json's main has characters that are not allowed, so it was ignored")
    if entry is None:
        candidates = ("server.js", "index.js", "app.js", "main.js", "src/index.js", "src/server.js")
        entry = next((name for name in candidates if tree.is_file(name)), None)
    if entry is None:
        tree.notes.append("no start script, main or server.js/index.js was found, so index.js is assumed")
        entry = "index.js"
    return ["node", entry]


def _listing(found: Sequence[str]) -> str:
    shown = [_show(name) for name in found]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _with(framework: str | None) -> str:
    return f" for a {framework} app" if framework else ""


# --- Python ---------------------------------------------------------------------------------------------


def _python(tree: _Tree) -> Analysis | None:
    markers = [name for name in _PYTHON_MARKERS if tree.is_file(name)]
    if not markers:
        return None
    deps: set[str] = set()
    pyproject = _load_toml(tree, "pyproject.toml") if "pyproject.toml" in markers else None
    project = _table(pyproject.get("project")) if pyproject else {}
    poetry = _table(_table(pyproject.get("tool")).get("poetry")) if pyproject else {}
    installable = pyproject is not None and bool(project or poetry or "build-system" in pyproject)
    if pyproject is not None:
        listed = project.get("dependencies")
        deps |= _requirement_names(item for item in (listed if isinstance(listed, list) else []))
        deps |= _requirement_names(_table(poetry.get("dependencies")))
    requirements = (tree.read("requirements.txt") or "").splitlines() if "requirements.txt" in markers else []
    deps |= _requirement_names(requirements)
    pipfile = _load_toml(tree, "Pipfile") if "Pipfile" in markers else None
    if pipfile is not None:
        deps |= _requirement_names(_table(pipfile.get("packages")))

    # requirements.txt is the most explicit statement of what to install; a pyproject.toml comes next.
    if "requirements.txt" in markers:
        installer, install = "pip", "RUN pip install -r requirements.txt"
        # Installing before copying the code keeps the layer cached, unless it names other files (-r, -e .).
        if any(line.strip().startswith(("-r", "-c", "-e", "--", ".", "file:")) for line in requirements):
            early, late = [], [install]
        else:
            early, late = ["COPY requirements.txt ./", install], []
    elif installable:
        installer, early, late = "pip", [], ["RUN pip install ."]
    elif "Pipfile" in markers:
        locked = tree.is_file("Pipfile.lock")
        installer = "pipenv"
        early = [
            "COPY Pipfile" + (" Pipfile.lock" if locked else "") + " ./",
            "RUN pip install pipenv && pipenv install --system" + (" --deploy" if locked else ""),
        ]
        late = []
    else:
        installer, early, late = "nothing", [], []
        tree.notes.append("no usable dependency list, so nothing is installed")

    framework, argv, extra_found, needs = _python_command(tree, deps, project if installable else {})
    installs = [f"RUN pip install {package}" for package in needs if package not in deps]
    lines = [
        f"FROM {PYTHON_IMAGE}",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        # The slim image has no unprivileged user; the code stays root-owned so the app cannot rewrite it.
        "RUN useradd --create-home --uid 10001 app",
        "WORKDIR /app",
        *early,
        *installs,
        "COPY . .",
        *late,
        *_serve_lines("app"),
        _cmd(argv),
    ]
    found = tree.found(*markers, *extra_found)
    main = (
        f"Found {_listing(found)}{_with(framework)}, so it is installed with {installer} on {PYTHON_IMAGE} "
        f"and started with `{' '.join(argv)}`"
    )
    return _generated(tree, "python", framework, found, main, lines)


def _requirement_names(items: Iterable[object]) -> set[str]:
    """Normalised (PEP 503) distribution names of requirement strings or table keys; options are skipped."""
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            continue
        line = item.split("#", 1)[0].strip()
        match = _REQUIREMENT_NAME.match(line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


def _python_command(
    tree: _Tree, deps: set[str], project: dict[str, object],
) -> tuple[str | None, list[str], list[str], list[str]]:
    """(framework, CMD argv, files that chose it, server packages the CMD needs)."""
    bind = ["-b", f"0.0.0.0:{DEFAULT_PORT}"]
    uvicorn = ["uvicorn", "--host", "0.0.0.0", "--port", str(DEFAULT_PORT)]
    if "django" in deps or tree.is_file("manage.py"):
        target, files = _django_target(tree)
        return "django", ["gunicorn", *bind, target], files, ["gunicorn"]
    if "fastapi" in deps:
        target, files = _app_target(tree, "FastAPI", "main:app")
        return "fastapi", [*uvicorn, target], files, ["uvicorn"]
    if "flask" in deps:
        target, files = _app_target(tree, "Flask", "app:app", factory=True)
        return "flask", ["gunicorn", *bind, target], files, ["gunicorn"]
    if "uvicorn" in deps:
        target, files = _app_target(tree, None, "main:app")
        return "uvicorn", [*uvicorn, target], files, []
    if "gunicorn" in deps:
        target, files = _app_target(tree, None, "app:app")
        return "gunicorn", ["gunicorn", *bind, target], files, []
    scripts = _table(project.get("scripts"))
    if scripts:
        name = next(iter(scripts))
        if _safe(name):
            return None, [name], [], []
        tree.notes.append("the first [project.scripts] name has characters that are not allowed")
    script = next((name for name in ("main.py", "app.py", "server.py", "run.py") if tree.is_file(name)), None)
    if script is None:
        tree.notes.append("no entry point (main.py, app.py, server.py, run.py or a script) was found")
        return None, ["python", "main.py"], [], []
    return None, ["python", script], [script], []


def _app_target(
    tree: _Tree, constructor: str | None, default: str, *, factory: bool = False,
) -> tuple[str, list[str]]:
    """`module:attribute` of the app object (or factory) and the file defining it, else `default`."""
    created = rf"(?:{_IDENT}\.)?{constructor}\(" if constructor else r"\S"
    assignment = re.compile(rf"^({_IDENT})[ \t]*(?::[^=\n]*)?=[ \t]*{created}", re.MULTILINE | re.ASCII)
    for path, module in _PY_APP_FILES:
        if not tree.is_file(path):
            continue
        text = tree.read(path) or ""
        if constructor is None:
            # Without a framework to look for, only the names servers conventionally default to count.
            names = [m.group(1) for m in assignment.finditer(text) if m.group(1) in ("app", "application")]
            if names:
                return f"{module}:{names[0]}", [path]
            continue
        match = assignment.search(text)
        if match:
            return f"{module}:{match.group(1)}", [path]
        factory_match = _FACTORY.search(text) if factory else None
        if factory_match:
            return f"{module}:{factory_match.group(1)}()", [path]
    what = f"creates {constructor}()" if constructor else "defines app or application"
    tree.notes.append(f"no file that {what} was found, so {default} is assumed")
    return default, []


def _django_target(tree: _Tree) -> tuple[str, list[str]]:
    """The WSGI application of a Django project: from manage.py's settings module, else any */wsgi.py."""
    files = ["manage.py"] if tree.is_file("manage.py") else []
    settings = _DJANGO_SETTINGS.search(tree.read("manage.py") or "") if files else None
    project = None
    if settings:
        declared = settings.group(1).split(".settings", 1)[0]
        project = _safe(declared, _PY_MODULE)
        if project is None:
            tree.notes.append("manage.py's DJANGO_SETTINGS_MODULE has characters that are not allowed")
    if project is not None and tree.is_file(f"{project.replace('.', '/')}/wsgi.py"):
        return f"{project}.wsgi:application", [*files, f"{project.replace('.', '/')}/wsgi.py"]
    for name in tree.listdir("."):
        if _safe(name, _PY_MODULE) and tree.is_file(f"{name}/wsgi.py"):
            return f"{name}.wsgi:application", [*files, f"{name}/wsgi.py"]
    fallback = project or "config"
    tree.notes.append(f"no <project>/wsgi.py was found, so {fallback}.wsgi:application is assumed")
    return f"{fallback}.wsgi:application", files


# --- static sites ---------------------------------------------------------------------------------------


def _static(tree: _Tree) -> Analysis | None:
    if tree.is_file("package.json"):
        return None
    folder = next((d for d in _STATIC_DIRS if tree.is_file(posixpath.join(d, "index.html"))), None)
    if folder is None:
        return None
    if folder:
        copy = [f"FROM {STATIC_IMAGE}", f"COPY {folder} /www"]
    else:
        # The whole context is the site: copy it in a throwaway stage so .git never reaches a layer.
        copy = [
            f"FROM {STATIC_IMAGE} AS site",
            "COPY . /www",
            "RUN rm -rf /www/.git",
            f"FROM {STATIC_IMAGE}",
            "COPY --from=site /www /www",
        ]
    lines = [*copy, *_serve_lines("65534:65534"), _STATIC_CMD]
    found = tree.found(posixpath.join(folder, "index.html"))
    main = f"Found {_show(found[0])} and no package.json, so busybox httpd serves the files as a static site"
    return _generated(tree, "static", None, found, main, lines)
