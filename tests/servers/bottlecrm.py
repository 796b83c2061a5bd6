"""A real BottleCRM (PyPI ``django-crm``) for tests and the bench, run on 127.0.0.1.

BottleCRM needs Python >= 3.12 and PostgreSQL. Its virtualenv is made once and cached outside
the repository (``~/.cache/leadwerk-bottlecrm``, or ``LEADWERK_BOTTLECRM_HOME``); its
database (``leadwerk_bottlecrm`` on the test PostgreSQL) is migrated once, which takes
minutes, and kept. Every :class:`BottleCrm` makes an organisation of its own, so runs never
see each other's leads: an admin whose personal access token Leadwerk uses, and two reps.

    with BottleCrm.start(admin_url) as crm:
        crm.base_url, crm.token, crm.users  # {"anna@...": "<profile id>", ...}
        crm.stop(); crm.restart()           # an outage, on the same port
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

HOST = "127.0.0.1"
DATABASE = "leadwerk_bottlecrm"
PACKAGE = "django-crm>=1.35,<2"
SCOPES = ["leads:read", "leads:write", "users:read", "tasks:write", "accounts:read"]
REPS = {"anna": "anna.rep@leadwerk-test.example", "jonas": "jonas.rep@leadwerk-test.example"}


class BottleCrmUnavailable(Exception):
    """BottleCRM cannot run here (no Python 3.12, no PostgreSQL, install failed): the reason."""


def home() -> Path:
    default = Path.home() / ".cache" / "leadwerk-bottlecrm"
    return Path(os.environ.get("LEADWERK_BOTTLECRM_HOME", default))


def find_python312() -> str:
    """A Python 3.12 or newer: on PATH, or installed by pyenv."""
    for name in ("python3.12", "python3.13"):
        found = shutil.which(name)
        if found and _runs(found):
            return found
    pyenv = Path.home() / ".pyenv" / "versions"
    for version in sorted(pyenv.glob("3.1[2-9]*"), reverse=True):
        candidate = version / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    raise BottleCrmUnavailable("BottleCRM needs Python >= 3.12 and none is installed")


def _runs(python: str) -> bool:
    result = subprocess.run([python, "--version"], capture_output=True, check=False)
    return result.returncode == 0


def ensure_venv() -> Path:
    """The cached virtualenv with BottleCRM installed; made on first use."""
    venv = home() / "venv"
    marker = venv / ".leadwerk-installed"
    if marker.exists():
        return venv
    home().mkdir(parents=True, exist_ok=True)
    with _lock("venv"):
        if marker.exists():
            return venv
        python = find_python312()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", PACKAGE],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BottleCrmUnavailable(f"pip install {PACKAGE} failed: {result.stderr[-500:]}")
        marker.touch()
    return venv


class _lock:
    """An exclusive file lock, so that parallel test processes install and migrate once."""

    def __init__(self, name: str) -> None:
        self.path = home() / f".{name}.lock"

    def __enter__(self) -> None:
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _environment(admin_url: str) -> dict[str, str]:
    url = httpx.URL(admin_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    env.update(
        DJANGO_SETTINGS_MODULE="crm.settings",
        DBNAME=DATABASE,
        DBUSER=url.username or "postgres",
        DBPASSWORD=url.password or "",
        DBHOST=url.host or HOST,
        DBPORT=str(url.port or 5432),
        SECRET_KEY="leadwerk-test-bottlecrm-secret-key-0123456789abcdef",
        ENV_TYPE="dev",
        DEBUG="False",
        CELERY_BROKER_URL="memory://",
        CELERY_RESULT_BACKEND="cache+memory://",
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    return env


def ensure_database(venv: Path, admin_url: str) -> None:
    """The BottleCRM database, created and migrated once (migrating takes minutes)."""
    import psycopg

    with _lock("database"):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        base = admin_url.rsplit("/", 1)[0]
        with psycopg.connect(f"{base}/{DATABASE}", autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS leadwerk_ready (done boolean)")
            if conn.execute("SELECT 1 FROM leadwerk_ready").fetchone():
                return
        result = subprocess.run(
            [str(venv / "bin" / "django-admin"), "migrate", "--no-input", "-v0"],
            env=_environment(admin_url),
            cwd=home(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BottleCrmUnavailable(f"BottleCRM migrations failed: {result.stderr[-800:]}")
        with psycopg.connect(f"{base}/{DATABASE}", autocommit=True) as conn:
            conn.execute("INSERT INTO leadwerk_ready VALUES (true)")


_MAKE_ORG = """
import json, sys, django
django.setup()
from common.models import Org, Profile, User, PersonalAccessToken
name, admin_email = sys.argv[1], sys.argv[2]
reps, scopes = json.loads(sys.argv[3]), json.loads(sys.argv[4])
org = Org.objects.create(name=name)
def member(email, role):
    user, _ = User.objects.get_or_create(email=email)
    return Profile.objects.create(user=user, org=org, role=role, is_active=True,
                                  has_sales_access=True, has_marketing_access=True,
                                  is_organization_admin=(role == "ADMIN"))
admin = member(admin_email, "ADMIN")
users = {email: str(member(email, "USER").id) for email in reps}
raw, _ = PersonalAccessToken.generate(admin, "leadwerk", scopes=scopes)
print(json.dumps({"org": str(org.id), "token": raw, "users": users, "admin": str(admin.id)}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class BottleCrm:
    """A running BottleCRM with an organisation of its own; see the module docstring."""

    def __init__(self, venv: Path, admin_url: str) -> None:
        self.venv = venv
        self.admin_url = admin_url
        self.port = _free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        run = uuid.uuid4().hex[:8]
        # Users are global in BottleCRM: each organisation gets reps of its own.
        self.rep_emails = {rep: email.replace("@", f"+{run}@") for rep, email in REPS.items()}
        made = self._django(
            _MAKE_ORG,
            f"leadwerk-{run}",
            f"leadwerk+{run}@leadwerk-test.example",
            json.dumps(list(self.rep_emails.values())),
            json.dumps(SCOPES),
        )
        self.token: str = made["token"]
        self.users: dict[str, str] = made["users"]
        self.org: str = made["org"]
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, admin_url: str) -> BottleCrm:
        venv = ensure_venv()
        ensure_database(venv, admin_url)
        crm = cls(venv, admin_url)
        crm.restart()
        return crm

    def _django(self, script: str, *args: str) -> Any:
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", script, *args],
            env=_environment(self.admin_url),
            cwd=home(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BottleCrmUnavailable(f"BottleCRM setup failed: {result.stderr[-800:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def restart(self) -> None:
        """Serve on the same port (again); returns once it answers."""
        self._process = subprocess.Popen(
            [
                str(self.venv / "bin" / "gunicorn"),
                "crm.wsgi:application",
                "--bind",
                f"{HOST}:{self.port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            env=_environment(self.admin_url),
            cwd=home(),  # BottleCRM writes its logs to the working directory
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr if os.environ.get("LEADWERK_BOTTLECRM_LOG") else subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BottleCrmUnavailable("BottleCRM's server exited at start")
            try:
                httpx.get(f"{self.base_url}/healthz/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise BottleCrmUnavailable("BottleCRM did not answer within 60 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def api(self) -> httpx.Client:
        """A client with the organisation's token, for tests that look into the CRM."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def leads(self, email: str | None = None) -> list[dict[str, Any]]:
        """The organisation's leads (open and closed), optionally those with this e-mail."""
        found: list[dict[str, Any]] = []
        with self.api() as client:
            offset: int | None = 0
            while offset is not None:
                params: dict[str, Any] = {"limit": 100, "offset": offset}
                if email:
                    params["email"] = email
                body = client.get("/api/leads/", params=params).raise_for_status().json()
                page = body["open_leads"]["open_leads"] + body["close_leads"]["close_leads"]
                found += page
                offset = body["open_leads"]["offset"] or None
        if email:
            found = [lead for lead in found if lead["email"].lower() == email.lower()]
        return found

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
