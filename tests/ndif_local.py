"""A real NDIF server on loopback for the remote tests, run by the kit in ../shared/ndif-local
(its README has the rules): installed into its cache folder (~/.cache/ndif-local, a rerun
takes seconds), started with tiny models saved here, stopped after the session.

With API keys checked: NDIF checks keys against a Postgres user database when
``NDIF_POSTGRES_URL`` is set (ndif's services/api/auth.py). Where the machine has PostgreSQL
(Debian's, with its ``postgres`` user) and we are root, a throw-away cluster on port 5433 gets
the four tables that check reads and one key (tagged ``trusted``, so requests run as the
kit's unsandboxed actor), asyncpg goes into the server's venv, and the server starts with
that database: a wrong key is then refused as on ndif.us."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


def kit_dir() -> Path | None:
    """The kit: $PEAP_NDIF_KIT, else ../shared/ndif-local beside the repository (or beside the
    working tree this clone was made from, /work/shared/ndif-local)."""
    candidates = [os.environ.get("PEAP_NDIF_KIT"),
                  Path(__file__).resolve().parents[2] / "shared" / "ndif-local",
                  "/work/shared/ndif-local"]
    for c in candidates:
        if c and (Path(c) / "start.sh").is_file():
            return Path(c)
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the local NDIF server is required under CI=true: {reason}")
    pytest.skip(reason)


class LocalNdif:
    def __init__(self, kit: Path, models: dict[str, str], api_key: str | None):
        self.kit, self.models, self.api_key = kit, models, api_key
        if str(kit) not in sys.path:
            sys.path.insert(0, str(kit))
        import client   # the kit's client helper

        self.client = client
        client.connect(api_key=api_key or "local")
        for path in models.values():
            client.register_local_model(path)

    def register(self, path) -> str:
        """Key a model directory by its real path, as the kit's server does (README rule 1)."""
        return self.client.register_local_model(path)


def _save_tiny_models(root: Path) -> dict[str, str]:
    import torch

    from peap_widget.models.examples import tiny_model

    out = {}
    for family in ("gpt2", "llama"):
        hf, tok = tiny_model(family, dtype=torch.float32)
        path = root / f"tiny-{family}"
        hf.save_pretrained(path)
        tok.save_pretrained(path)
        out[family] = str(path.resolve())
    return out


def _run(cmd: list[str], timeout: int, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


PG_PORT = 5433
_TABLES = """
CREATE TABLE users (user_id uuid PRIMARY KEY, email text);
CREATE TABLE keys (key_id uuid PRIMARY KEY, user_id uuid REFERENCES users);
CREATE TABLE user_tags (user_tag_id serial PRIMARY KEY, name text);
CREATE TABLE key_user_tag_assignments (key_id uuid REFERENCES keys, user_tag_id int REFERENCES user_tags);
INSERT INTO users VALUES ('{user}', 'tests@localhost');
INSERT INTO keys VALUES ('{key}', '{user}');
INSERT INTO user_tags (name) VALUES ('trusted');
INSERT INTO key_user_tag_assignments VALUES ('{key}', 1);
"""


def _as_postgres(command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return _run(["su", "postgres", "-s", "/bin/bash", "-c", command], timeout)


@contextmanager
def key_database(root: Path, venv: Path):
    """(database URL, valid key) of a throw-away key database, or (None, None) where this
    machine cannot run one (no PostgreSQL or not root)."""
    import shutil
    import uuid

    if os.geteuid() != 0 or not shutil.which("initdb") or not shutil.which("pg_ctl"):
        yield None, None
        return
    pip = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "asyncpg"], 600)
    if pip.returncode:
        yield None, None
        return
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="peap-pg-"))   # under /tmp: pytest's folders are root's only
    shutil.chown(home, "postgres")
    data = home / "data"
    key, user = str(uuid.uuid4()), str(uuid.uuid4())
    started = _as_postgres(
        f"initdb -D {data} -A trust -U postgres >/dev/null && "
        f"pg_ctl -D {data} -l {home}/log -w -o '-p {PG_PORT} -k {home} "
        f"-c listen_addresses=127.0.0.1' start")
    if started.returncode:
        pytest.fail(f"PostgreSQL for NDIF's key check did not start: {started.stderr[-2000:]}")
    try:
        made = _run(["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-v",
                     "ON_ERROR_STOP=1", "-c", _TABLES.format(key=key, user=user)], 60)
        if made.returncode:
            pytest.fail(f"cannot create NDIF's key tables: {made.stderr[-2000:]}")
        yield f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres", key
    finally:
        _as_postgres(f"pg_ctl -D {data} stop -m fast", 60)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def serve(root: Path):
    kit = kit_dir()
    if kit is None:
        _unavailable("no ndif-local kit (set PEAP_NDIF_KIT or put it at ../shared/ndif-local)")
    try:
        done = _run(["bash", str(kit / "install.sh")], timeout=1200)
    except subprocess.TimeoutExpired:
        _unavailable("ndif-local install.sh did not finish in 20 minutes")
    if done.returncode:
        _unavailable(f"ndif-local install.sh failed: {done.stderr[-2000:]}")
    models = _save_tiny_models(root)
    _run(["bash", str(kit / "stop.sh")], timeout=120)   # a session left by an earlier run
    home = Path(os.environ.get("NDIF_LOCAL_HOME", Path.home() / ".cache" / "ndif-local"))
    with key_database(root, home / "venv") as (database, key):
        env = dict(os.environ)
        if database:
            env["NDIF_POSTGRES_URL"] = database
        started = _run(["bash", str(kit / "start.sh"), *models.values()], timeout=600, env=env)
        if started.returncode:
            _run(["bash", str(kit / "stop.sh")], timeout=120)
            pytest.fail(f"ndif-local start.sh failed:\n{started.stdout[-3000:]}\n"
                        f"{started.stderr[-3000:]}")
        try:
            yield LocalNdif(kit, models, key)
        finally:
            _run(["bash", str(kit / "stop.sh")], timeout=120)
