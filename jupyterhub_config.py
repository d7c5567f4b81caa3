"""The embedded default: JupyterHub and the NeuroLibre service on one machine.

Local use only: a dummy password authenticator (any user name, one shared password) with an
admin user, processes spawned as the hub's own user, SQLite, the local builder. Run it with
`bash scripts/run.sh`, or `jupyterhub -f jupyterhub_config.py` once installed.
"""

import os
import secrets
import sys
from pathlib import Path

from neurolibre_service import ADMIN_SCOPE, REVIEW_SCOPE, SERVICE_NAME
from neurolibre_service.sandbox import DEFAULT_PASSTHROUGH

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("NEUROLIBRE_DATA", HERE / "data")).resolve()
DATA.mkdir(parents=True, exist_ok=True)
SERVICE_PORT = int(os.environ.get("NEUROLIBRE_SERVICE_PORT", "10101"))

c.JupyterHub.ip = os.environ.get("NEUROLIBRE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("NEUROLIBRE_HUB_PORT", "8000"))
c.JupyterHub.hub_port = int(os.environ.get("NEUROLIBRE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{os.environ.get('NEUROLIBRE_PROXY_API_PORT', '8001')}"
)
c.ConfigurableHTTPProxy.pid_file = str(DATA / "jupyterhub-proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{DATA / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")

# Local use: anyone can log in with the shared password; "admin" administers NeuroLibre and
# "editor" edits it (reviews and publishes preprints).
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("NEUROLIBRE_PASSWORD", "neurolibre")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}
# servers run on environments the service built, chosen by id only (neurolibre_service/spawner.py)
c.JupyterHub.spawner_class = "neurolibre_service.spawner.NeuroLibreSimpleLocalProcessSpawner"
c.JupyterHub.allow_named_servers = True
c.SimpleLocalProcessSpawner.home_dir_template = str(DATA / "home" / "{username}")
if os.geteuid() == 0:
    # local use as root: the simple spawner runs servers as the hub's own user
    c.Spawner.args = ["--allow-root"]

# the service's API token, shared with the spawner (kept in a private file, never in argv)
token_file = DATA / "neurolibre-service-token"
if not token_file.exists():
    token_file.touch(mode=0o600)
    token_file.write_text(secrets.token_hex(32))
SERVICE_TOKEN = token_file.read_text().strip()
# (set on the mixin: every NeuroLibre spawner class, local or Docker, gets them)
c.NeuroLibreSpawnerMixin.neurolibre_token = SERVICE_TOKEN
# every server runs on an environment the service built (the hub's own has no JupyterLab)
c.NeuroLibreSpawnerMixin.require_environment = True
c.NeuroLibreSpawnerMixin.neurolibre_url = (
    f"http://127.0.0.1:{SERVICE_PORT}/services/{SERVICE_NAME}/"
)

# Authors' emails go to a local mail sink (a real SMTP server on loopback, aiosmtpd) that
# stores them in DATA/mail (a Maildir: one file per message in DATA/mail/new). Deployments set
# NEUROLIBRE_MAIL_SINK_PORT=off and give their SMTP server with --NeuroLibre.smtp_host etc.
MAIL_SINK_PORT = os.environ.get("NEUROLIBRE_MAIL_SINK_PORT", "8025")

# what the service reads from its environment (set in the hub's): secrets and the engine
SERVICE_ENV = ("NEUROLIBRE_SMTP_PASSWORD", "NEUROLIBRE_REGISTRY_PASSWORD",
               "NEUROLIBRE_BINDERHUB_TOKEN", "DOCKER_HOST")  # fmt: skip

service_options = {
    "data_dir": str(DATA / "neurolibre"),
    # builds may not read the hub's database and cookie secret either
    "sandbox_hidden_paths": repr([str(DATA)]),
    "local_repository_roots": repr([str(DATA / "examples")]),
    # links in emails
    "public_url": f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}",
}
if MAIL_SINK_PORT != "off":
    service_options.update(smtp_host="127.0.0.1", smtp_port=MAIL_SINK_PORT)
# deployments and tests override options with lines of --NeuroLibre.name=value (or
# --OtherClass.name=value for the service's other configurables)
other_args = []
for line in os.environ.get("NEUROLIBRE_EXTRA_ARGS", "").splitlines():
    if line.startswith("--NeuroLibre."):
        name, _, value = line.removeprefix("--NeuroLibre.").partition("=")
        service_options[name] = value
    elif line.strip():
        other_args.append(line.strip())
service_args = [sys.executable, "-m", "neurolibre_service"]
service_args += [f"--NeuroLibre.{k}={v}" for k, v in service_options.items()] + other_args

c.JupyterHub.services = [
    {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{SERVICE_PORT}",
        "api_token": SERVICE_TOKEN,
        "command": service_args,
        "cwd": str(HERE),
        # the hub starts services with a bare environment: pass what builds need to reach
        # package indexes (proxies, certificates), and the service's own variables (secrets
        # never go on its command line)
        "environment": {
            k: os.environ[k] for k in (*DEFAULT_PASSTHROUGH, *SERVICE_ENV) if k in os.environ
        },
        "oauth_no_confirm": True,
        # lets the service see whether a user holds its custom scopes
        "oauth_client_allowed_scopes": [ADMIN_SCOPE, REVIEW_SCOPE],
        "display": True,
    }
]
if MAIL_SINK_PORT != "off":
    c.JupyterHub.services.append(
        {
            "name": "mail-sink",
            # aiosmtpd, stopping when the hub dies (neurolibre_service/mailsink.py)
            "command": [sys.executable, "-m", "neurolibre_service.mailsink",
                        f"127.0.0.1:{MAIL_SINK_PORT}", str(DATA / "mail")],
        }
    )  # fmt: skip
c.JupyterHub.custom_scopes = {
    ADMIN_SCOPE: {"description": "Administer NeuroLibre: every environment, build and preprint."},
    REVIEW_SCOPE: {"description": "Review and publish NeuroLibre preprints."},
}
c.JupyterHub.load_roles = [
    {
        "name": "user",
        "scopes": ["self", f"access:services!service={SERVICE_NAME}"],
    },
    {
        "name": "neurolibre-admin",
        "scopes": [ADMIN_SCOPE, REVIEW_SCOPE, f"access:services!service={SERVICE_NAME}"],
        "users": ["admin"],
    },
    # editors screen, assign reviewers, request changes, accept (publish) or reject submissions;
    # locally the user "editor" is one (admin is one too, through neurolibre-admin)
    {
        "name": "neurolibre-editor",
        "scopes": [REVIEW_SCOPE, f"access:services!service={SERVICE_NAME}"],
        "users": ["editor"],
    },
    {
        "name": "neurolibre-service",
        # admin:users, admin:groups, tokens, access:servers: temporary readers (launch.py)
        # get a hub user (in the group neurolibre-readers) and a token for their own server
        "scopes": [
            "read:users",
            "read:roles:users",
            "admin:servers",
            "admin:users",
            "admin:groups",
            "tokens",
            "access:servers",
        ],
        "services": [SERVICE_NAME],
    },
]

# Idle servers are stopped by jupyterhub-idle-culler (a hub service). NEUROLIBRE_IDLE_TIMEOUT:
# seconds without activity (default one hour; "off": no culling). Readers' temporary users are
# removed by the NeuroLibre service once their server is gone.
IDLE_TIMEOUT = os.environ.get("NEUROLIBRE_IDLE_TIMEOUT", "3600")
if IDLE_TIMEOUT != "off":
    c.JupyterHub.services.append(
        {
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                        f"--timeout={int(IDLE_TIMEOUT)}",
                        f"--cull-every={max(10, min(300, int(IDLE_TIMEOUT) // 2))}",
                        "--remove-named-servers=false"],
        }
    )  # fmt: skip
    c.JupyterHub.load_roles.append(
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )
