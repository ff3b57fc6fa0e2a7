#!/usr/bin/env python3
"""A real S3-compatible object store on 127.0.0.1 for tests and the demo: ``up | down | status``.

The server is Versity Gateway (versitygw, Apache-2.0) with its POSIX backend: one static Go binary,
built from its module by hack/build-objectstore.sh and cached outside the repo, that serves a
directory as buckets (``<root>/<bucket>/<key>``). ``up`` starts it with fresh random credentials and
prints them as ``export`` lines for the AWS SDKs, s3fs and the trainer::

    eval "$(hack/objectstore.py up)"      # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
    hack/objectstore.py down

Each server lives in ``.local/objectstore/<name>/`` (gitignored): ``data/`` holds the buckets,
``state.json`` the port, pid and credentials. ``down`` stops only the process whose executable is
the cached versitygw binary and whose pid the state names, so a recycled pid is never killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKDIR = REPO / ".local" / "objectstore"
DEFAULT_NAME = "ftj"
REGION = "us-east-1"
HEALTH_PATH = "/health"
BUILD_HINT = (
    "build it once with `make objectstore` (hack/build-objectstore.sh; a cold build takes a few "
    "minutes on 2 cores), or point FTJ_OBJECTSTORE_BIN at a versitygw binary"
)


class MissingServerError(RuntimeError):
    """The versitygw binary is neither cached nor named by FTJ_OBJECTSTORE_BIN."""


class ServerError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class ObjectStore:
    """What a client needs: the endpoint and root credentials (plus where the data lies)."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: str
    pid: int

    def env(self) -> dict[str, str]:
        """Environment variables the AWS SDKs, s3fs and the trainer read."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


def cache_dir() -> Path:
    base = os.environ.get("FTJ_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "finetune-operator"
    )
    return Path(base)


def find_binary() -> Path:
    """The versitygw binary: FTJ_OBJECTSTORE_BIN, else the cache; fails with the build command."""
    override = os.environ.get("FTJ_OBJECTSTORE_BIN")
    candidates = [Path(override)] if override else []
    candidates.append(cache_dir() / "bin" / "versitygw")
    for path in candidates:
        if os.access(path, os.X_OK):
            return path.resolve()
    raise MissingServerError(
        f"the object store binary is missing (looked for {', '.join(map(str, candidates))}); {BUILD_HINT}"
    )


def state_dir(name: str = DEFAULT_NAME) -> Path:
    return WORKDIR / name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + HEALTH_PATH, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _is_ours(pid: int, binary: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).resolve() == binary
    except OSError:
        return False


def read_state(name: str = DEFAULT_NAME) -> ObjectStore | None:
    try:
        return ObjectStore(**json.loads((state_dir(name) / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(name: str = DEFAULT_NAME) -> ObjectStore | None:
    """The server ``name`` if it is up and answering, else None."""
    state = read_state(name)
    if state is None:
        return None
    try:
        binary = find_binary()
    except MissingServerError:
        return None
    if _is_ours(state.pid, binary) and _healthy(state.endpoint):
        return state
    return None


def up(name: str = DEFAULT_NAME, timeout: float = 30.0) -> ObjectStore:
    """Start the server ``name`` (or return it when already up) and wait until it answers."""
    existing = running(name)
    if existing is not None:
        return existing
    binary = find_binary()
    down(name)
    root = state_dir(name)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    store = ObjectStore(
        name=name,
        endpoint=f"http://127.0.0.1:{port}",
        access_key="ftj" + secrets.token_hex(8),
        secret_key=secrets.token_urlsafe(30),
        region=REGION,
        data_dir=str(data),
        pid=0,
    )
    env = {
        **os.environ,
        # Credentials reach the server through its environment, never its command line (ps shows that).
        "ROOT_ACCESS_KEY_ID": store.access_key,
        "ROOT_SECRET_ACCESS_KEY": store.secret_key,
    }
    command = [
        str(binary),
        "--port",
        f"127.0.0.1:{port}",
        "--region",
        REGION,
        "--health",
        HEALTH_PATH,
        "--quiet",
        "posix",
        str(data),
    ]
    log_path = root / "server.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    store = ObjectStore(**{**asdict(store), "pid": proc.pid})
    (root / "state.json").write_text(json.dumps(asdict(store)))
    os.chmod(root / "state.json", 0o600)
    deadline = time.monotonic() + timeout
    while not _healthy(store.endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            stop_pid(proc.pid, binary)
            raise ServerError(f"versitygw did not come up on {store.endpoint}:\n{tail}")
        time.sleep(0.05)
    return store


def stop_pid(pid: int, binary: Path, timeout: float = 10.0) -> None:
    if not _is_ours(pid, binary):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _is_ours(pid, binary) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _is_ours(pid, binary):
        os.kill(pid, signal.SIGKILL)


def down(name: str = DEFAULT_NAME, keep_data: bool = False) -> None:
    """Stop the server ``name`` and (unless ``keep_data``) remove its buckets."""
    state = read_state(name)
    if state is not None:
        with contextlib.suppress(MissingServerError):
            stop_pid(state.pid, find_binary())
    if not keep_data:
        shutil.rmtree(state_dir(name), ignore_errors=True)


def exports(store: ObjectStore) -> str:
    return "".join(f"export {key}={value}\n" for key, value in store.env().items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--name", default=DEFAULT_NAME)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(exports(up(args.name)), end="")
        elif args.command == "down":
            down(args.name)
        else:
            store = running(args.name)
            if store is None:
                print(f"objectstore {args.name}: not running", file=sys.stderr)
                return 1
            print(exports(store), end="")
    except (MissingServerError, ServerError) as exc:
        print(f"objectstore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
