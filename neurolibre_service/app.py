"""The NeuroLibre service: a traitlets Application run by JupyterHub as a managed service.

Every option is a trait with help text, so `python -m neurolibre_service --help-all` is the
reference manual. Options come from a config file (`neurolibre_config.py`) and the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

import httpx
import jinja2
import jupyterhub
from sqlalchemy.engine import make_url
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate
from traitlets.config import Application

from . import __version__
from .books import BookRunner, DockerBookRunner, LocalBookRunner
from .checks_runner import CheckRunner
from .datasets import DatasetStore, data_packages
from .db import Database
from .environments import BUILDERS, Builder
from .environments.docker import memory_bytes
from .environments.local import LocalBuilder
from .environments.manager import EnvironmentManager
from .environments.service_envs import (
    ServiceEnvironment,
    ServiceEnvironmentError,
    ServiceEnvironments,
)
from .handlers import routes
from .handlers.base import UnknownPath
from .handlers.preview import PreviewSigner
from .hubapi import HubAPI
from .jobs import InstanceLock, InstanceLocked, JobQueue
from .launch import ReaderLaunches, ServerFiles
from .logs import LogStore, Redactor
from .metrics import Metrics
from .notify import Mailer, SMTPSettings
from .pipeline import Pipeline
from .preprints import PreprintManager
from .publishing import Publishing
from .resources import share_path
from .sandbox import DEFAULT_BUILD_USER, DEFAULT_PASSTHROUGH, Limits, Sandbox
from .servers import Servers
from .sources import RepoPolicy


class NeuroLibre(Application):
    name = "neurolibre"
    version = __version__
    description = "Living preprints: a JupyterHub service that builds and serves executable papers."

    classes = [*BUILDERS.values(), LocalBookRunner, DockerBookRunner]

    aliases = {
        "ip": "NeuroLibre.ip",
        "port": "NeuroLibre.port",
        "config": "NeuroLibre.config_file",
        "data-dir": "NeuroLibre.data_dir",
        "db-url": "NeuroLibre.db_url",
        "builder": "NeuroLibre.builder",
        "concurrency": "NeuroLibre.build_concurrency",
        "time-limit": "NeuroLibre.build_time_limit",
        "sandbox": "NeuroLibre.sandbox",
        "log-level": "Application.log_level",
    }
    flags = {
        "no-upgrade-db": ({"NeuroLibre": {"upgrade_db": False}}, "Do not migrate the database at start."),
    }  # fmt: skip

    config_file = Unicode(
        "neurolibre_config.py", help="Config file to load (ignored if it does not exist)."
    ).tag(config=True)

    ip = Unicode(help="IP the service listens on. Default: from JUPYTERHUB_SERVICE_URL, or 127.0.0.1.").tag(config=True)  # fmt: skip
    port = Integer(help="Port the service listens on. Default: from JUPYTERHUB_SERVICE_URL, or 10101.").tag(config=True)  # fmt: skip

    @default("ip")
    def _default_ip(self) -> str:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).hostname or "127.0.0.1"

    @default("port")
    def _default_port(self) -> int:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).port or 10101

    base_url = Unicode(help="URL prefix. Default: JUPYTERHUB_SERVICE_PREFIX, or /services/neurolibre/.").tag(config=True)  # fmt: skip

    @default("base_url")
    def _default_base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/neurolibre/")

    @validate("base_url")
    def _slash(self, proposal) -> str:
        v = proposal["value"]
        return "/" + v.strip("/") + "/" if v.strip("/") else "/"

    data_dir = Unicode(
        "data/neurolibre",
        help="""Where the service keeps its files: logs, environments, checkouts, caches (and
        the SQLite database by default). Builds cannot read it.""",
    ).tag(config=True)

    db_url = Unicode(
        help="""Database URL. Default: SQLite in data_dir. PostgreSQL: postgresql://user@host/db
        (the password is better given in PGPASSWORD or a .pgpass than in a URL).""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return f"sqlite:///{Path(self.data_dir).resolve() / 'neurolibre.sqlite'}"

    upgrade_db = Bool(True, help="Apply database migrations at start.").tag(config=True)

    builder = Unicode("local", help=f"Environment backend: {', '.join(BUILDERS)}.").tag(config=True)

    @validate("builder")
    def _known_builder(self, proposal) -> str:
        if proposal["value"] not in BUILDERS:
            raise ValueError(f"unknown builder {proposal['value']!r}; use one of {list(BUILDERS)}")
        return proposal["value"]

    build_concurrency = Integer(2, help="How many builds run at once.").tag(config=True)
    build_time_limit = Float(
        1800.0, help="Seconds a build may run; past that its whole process tree is killed."
    ).tag(config=True)
    max_attempts = Integer(
        2, help="Times a build interrupted by a service restart is started again before failing."
    ).tag(config=True)
    stop_with_parent = Bool(
        help="""Stop (as on SIGTERM) when the process that started the service exits, so a
        JupyterHub that is killed takes its managed service with it and the next hub's service
        can start. Default: on when the hub manages the service (JUPYTERHUB_SERVICE_NAME set).""",
    ).tag(config=True)

    @default("stop_with_parent")
    def _default_stop_with_parent(self) -> bool:
        return "JUPYTERHUB_SERVICE_NAME" in os.environ

    instance_wait = Float(
        15.0,
        help="""Seconds a starting service waits for another one using the same data_dir to stop
        (only one may run on it) before it gives up with a message.""",
    ).tag(config=True)

    machine_profiles = List(
        Dict(),
        help="""Machine profiles users choose from, e.g.
        [{"name": "small", "label": "1 CPU, 2 GB", "cpu": 1, "memory": "2G"}].
        When set, users must pick one instead of typing limits.""",
    ).tag(config=True)
    default_cpu_limit = Float(None, allow_none=True, help="CPU limit of a server when none is given.").tag(config=True)  # fmt: skip
    default_memory_limit = Unicode(None, allow_none=True, help="Memory limit (e.g. 2G) of a server when none is given.").tag(config=True)  # fmt: skip
    max_cpu_limit = Float(None, allow_none=True, help="Largest CPU limit a user may ask for.").tag(config=True)  # fmt: skip

    allowed_url_schemes = List(
        Unicode(), ["https"], help="URL schemes accepted for repositories (https; http only for trusted networks)."
    ).tag(config=True)  # fmt: skip
    local_repository_roots = List(
        Unicode(),
        help="Directories under which local Git repositories may be built by path (none by default).",
    ).tag(config=True)
    git_timeout = Float(
        60.0,
        help="""Seconds one git step (reading a repository's branches, fetching it, checking
        out) may take; past it git and its helpers are killed and the user is told which step
        timed out. A transfer during which the server sends nothing for 30 s (or this, if
        shorter) is given up sooner.""",
    ).tag(config=True)

    sandbox = Unicode(
        "bwrap",
        help="""How build steps are confined. 'bwrap' (bubblewrap, default): read-only system,
        writes only to the environment being built, data_dir and database hidden. 'none': builds
        run as the service's user with everything it can read and write, including its database
        and tokens' files; only for trusted repositories.""",
    ).tag(config=True)
    build_user = Unicode(
        DEFAULT_BUILD_USER,
        help="""The unprivileged user (name or uid) confined steps run as when the service runs
        as root: package installs, data fetches, notebooks and book tools. scripts/install.sh
        creates it. Without root, steps run as the service's own user, without capabilities.""",
    ).tag(config=True)
    sandbox_memory_limit = Unicode(
        "4G",
        help="""Memory one process of a confined step may allocate (RLIMIT_DATA, e.g. 4G);
        an allocation past it fails (MemoryError in Python). Empty: no limit.""",
    ).tag(config=True)
    sandbox_cpu_limit = Integer(
        3600, help="CPU seconds one process of a confined step may use (RLIMIT_CPU); 0: none."
    ).tag(config=True)
    sandbox_process_limit = Integer(
        1024,
        help="""Processes the build user may have at once, all confined steps together
        (RLIMIT_NPROC): a fork bomb stops there. 0: none.""",
    ).tag(config=True)
    sandbox_open_files_limit = Integer(
        4096, help="Open files per process of a confined step (RLIMIT_NOFILE); 0: none."
    ).tag(config=True)
    sandbox_file_size_limit = Unicode(
        "16G", help="Largest file a confined step may write (RLIMIT_FSIZE). Empty: no limit."
    ).tag(config=True)

    def sandbox_limits(self) -> Limits:
        return Limits(
            memory=memory_bytes(self.sandbox_memory_limit) if self.sandbox_memory_limit else None,
            cpu_seconds=self.sandbox_cpu_limit or None,
            processes=self.sandbox_process_limit or None,
            open_files=self.sandbox_open_files_limit or None,
            file_size=memory_bytes(self.sandbox_file_size_limit)
            if self.sandbox_file_size_limit
            else None,
        )

    sandbox_hidden_paths = List(
        Unicode(),
        help="More files or directories builds may not read (e.g. the hub's database and cookie secret).",
    ).tag(config=True)
    build_env_passthrough = List(
        Unicode(), list(DEFAULT_PASSTHROUGH),
        help="Environment variables builds inherit (proxies, certificates, package indexes). Nothing else is passed.",
    ).tag(config=True)  # fmt: skip

    build_environment = Dict(
        value_trait=Unicode(),
        help="""Extra environment variables for builds, e.g. a package mirror:
        {"UV_DEFAULT_INDEX": "https://pypi.example.org/simple"}. Visible to build code: no secrets.""",
    ).tag(config=True)

    data_size_limit = Integer(
        1 << 30,
        help="""Largest size in bytes of one dataset (after unpacking); a fetch that grows
        past it is stopped.""",
    ).tag(config=True)
    data_time_limit = Float(1800.0, help="Seconds one dataset's fetch may take.").tag(config=True)
    data_packages = List(
        Unicode(),
        help="""Packages added to the service's data environment, where a data_requirement.json
        src that is Python code runs (as NeuroLibre runs it: with the service's fetchers, never
        the preprint's packages). It always has repo2data (the service's version) and nilearn
        (datasets.DEFAULT_DATA_PACKAGES); a package named here replaces the default of the same
        name, e.g. ["nilearn==0.13.0", "templateflow==24.2.2"]. Built once per list, on first
        use, under data_dir/service-environments. Changing it gives datasets made by code new
        keys: fetched again when next needed, the old ones stay until an admin deletes them.""",
    ).tag(config=True)

    reader_servers_max = Integer(
        20, help="Most servers of temporary readers (launches without an account) at once."
    ).tag(config=True)
    reader_servers_per_preprint = Integer(
        5, help="Most temporary readers' servers on one published preprint at once."
    ).tag(config=True)
    reader_server_max_age = Float(
        4 * 3600.0, help="Seconds after which a temporary reader's server and copy are removed."
    ).tag(config=True)
    reader_sweep_interval = Float(
        60.0, help="Seconds between two removals of temporary readers whose server is gone."
    ).tag(config=True)

    @validate("data_packages")
    def _valid_data_packages(self, proposal) -> list[str]:
        data_packages(proposal["value"])  # ValueError naming the bad line
        return proposal["value"]

    check_time_limit = Float(
        60.0,
        help="""Seconds the layout check of a repository may take (it runs confined in a child
        process); past that it is stopped and the author is told.""",
    ).tag(config=True)
    check_max_file_size = Integer(
        5 << 20,
        help="""Largest file in bytes the layout check reads (paper.md, paper.bib, YAML, JSON,
        Markdown); a larger one is a finding. Notebooks may be 5 times larger.""",
    ).tag(config=True)

    log_size_limit = Integer(
        10 * 1024 * 1024,
        help="""Bytes one job log (one file per build stage) keeps. Past half of it, lines are
        dropped except the last ones: the log keeps its start, a line saying how many lines
        were dropped, and its end. One line keeps at most 64 KB. Minimum 256 KB.""",
    ).tag(config=True)
    email_log_lines = Integer(
        200, help="Lines of each log attached to an author's email (the last ones)."
    ).tag(config=True)
    email_log_bytes = Integer(
        256 * 1024, help="Bytes of each log attached to an author's email (the last ones)."
    ).tag(config=True)

    public_url = Unicode(
        "",
        help="""The hub's public URL (e.g. https://preprints.example.org), for links in emails.
        Without it, emails carry paths only.""",
    ).tag(config=True)
    smtp_host = Unicode("", help="SMTP server for authors' emails; empty: no email.").tag(config=True)  # fmt: skip
    smtp_port = Integer(25, help="SMTP port (587 for starttls, 465 for tls).").tag(config=True)
    smtp_security = Unicode(
        "none", help="'none', 'starttls' or 'tls' (TLS from the first byte)."
    ).tag(config=True)
    smtp_username = Unicode("", help="SMTP login; empty: no login.").tag(config=True)
    smtp_password = Unicode(
        help="SMTP password. Default: the NEUROLIBRE_SMTP_PASSWORD environment variable "
        "(better than a config file; never on a command line)."
    ).tag(config=True)

    @default("smtp_password")
    def _default_smtp_password(self) -> str:
        return os.environ.get("NEUROLIBRE_SMTP_PASSWORD", "")

    mail_from = Unicode("neurolibre@localhost", help="Sender address of emails.").tag(config=True)
    editors_email = List(
        Unicode(),
        help="""Addresses (the editorial team's) that get an email for every review event:
        submissions, decisions, reviewers, comments. Empty: editors see the queue on the
        reviews page only. Authors and reviewers are emailed at their own addresses.""",
    ).tag(config=True)

    @validate("smtp_security")
    def _known_security(self, proposal) -> str:
        if proposal["value"] not in ("none", "starttls", "tls"):
            raise ValueError("smtp_security must be 'none', 'starttls' or 'tls'")
        return proposal["value"]

    authenticate_metrics = Bool(
        True, help="Require the custom:neurolibre:admin scope to read /metrics."
    ).tag(config=True)

    hub_version = Unicode(
        help="The hub's version (the server environment gets a matching jupyterhub). Default: asked from the hub."
    ).tag(config=True)

    server_packages = List(
        Unicode(),
        ["jupyterhub=={hub_version}", "jupyterlab"],
        help="""The Jupyter server stack: the packages of the service's own server environment
        (built once per list and Python under data_dir/service-environments, at start),
        where hub servers on local environments run jupyterhub-singleuser and JupyterLab, and
        MyST books their Jupyter server. `{hub_version}` is replaced by the hub's version.
        Authors' environments get only their requirements and a kernel
        (c.LocalBuilder.kernel_packages); the author's kernels, widgets and lab extensions
        are found through JUPYTER_PATH.""",
    ).tag(config=True)

    # -- wiring --------------------------------------------------------------------------

    def initialize(self, argv=None) -> None:
        super().initialize(argv)
        if self.config_file and Path(self.config_file).exists():
            self.load_config_file(self.config_file)
            # the command line wins over the file
            if self.cli_config:
                self.update_config(self.cli_config)
        logging.getLogger("neurolibre").setLevel(self.log_level)
        self.log.name = "neurolibre"

    @property
    def hub_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"

    def _secrets(self) -> list[str]:
        secrets = [os.environ.get(k, "") for k in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")]
        password = make_url(self.db_url).password
        if password:
            secrets.append(str(password))
        if self.smtp_password:
            secrets.append(self.smtp_password)
        return secrets

    async def _ask_hub_version(self) -> str:
        api = os.environ.get("JUPYTERHUB_API_URL")
        if api:
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    r = await client.get(api.rstrip("/") + "/")
                    return r.json()["version"]
            except Exception as e:
                self.log.warning("Could not ask the hub its version (%s); using ours", e)
        return jupyterhub.__version__

    async def setup(self) -> None:
        data = Path(self.data_dir).resolve()
        for sub in ("logs", "environments", "checkouts", "cache", "builds", "datasets"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
        # one process per data directory, before anything reads, migrates or recovers its state
        self.instance_lock = InstanceLock(data)
        await self.instance_lock.acquire(self.instance_wait)
        self.db = Database(self.db_url)
        if self.upgrade_db:
            self.log.info("Migrating the database to the latest schema")
            await self.db.upgrade()
        self.metrics = Metrics()
        self.logs = LogStore(data / "logs", Redactor(self._secrets()),
                             size_limit=self.log_size_limit)  # fmt: skip
        self.queue = JobQueue(self.db, self.logs, {}, concurrency=self.build_concurrency,
                              time_limit=self.build_time_limit, max_attempts=self.max_attempts,
                              metrics=self.metrics, instance_lock=self.instance_lock)  # fmt: skip
        self.metrics.jobs_running.set_function(lambda: self.queue.running)
        hidden = [data, *map(Path, self.sandbox_hidden_paths)]
        url = make_url(self.db_url)
        if url.drivername.startswith("sqlite") and url.database:
            db_file = Path(url.database).resolve()
            hidden += [db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")]
        sandbox = Sandbox(self.sandbox, hidden=hidden, passthrough=self.build_env_passthrough,
                          extra_env=dict(self.build_environment), build_user=self.build_user,
                          limits=self.sandbox_limits())  # fmt: skip
        sandbox.check()
        hub_version = self.hub_version or await self._ask_hub_version()
        self.builder_impl: Builder = BUILDERS[self.builder](
            parent=self,
            environments_dir=str(data / "environments"),
            uv_cache_dir=str(data / "cache" / "uv"),
            sandbox=sandbox,
            hub_version=hub_version,
        )
        # the service's own environments (the Jupyter server stack): built on first use
        self.server_env_store = ServiceEnvironments(data / "service-environments", sandbox)
        self._server_packages = [p.format(hub_version=hub_version) for p in self.server_packages]
        self._server_env_task: asyncio.Task[ServiceEnvironment] | None = None
        for secret in self.builder_impl.secrets():
            self.logs.redact.add(secret)
        self.environments = EnvironmentManager(
            self.db, self.queue, self.builder_impl,
            policy=RepoPolicy(tuple(self.allowed_url_schemes), tuple(self.local_repository_roots),
                              git_timeout=self.git_timeout),
            checkouts_dir=data / "checkouts",
            machine_profiles=self.machine_profiles,
            default_cpu=self.default_cpu_limit, default_memory=self.default_memory_limit,
            max_cpu=self.max_cpu_limit,
        )  # fmt: skip
        policy = self.environments.policy
        # the check applies the local builder's refusals of requirement lines only when it builds
        local = isinstance(self.builder_impl, LocalBuilder)
        checker = CheckRunner(sandbox, time_limit=self.check_time_limit,
                              max_file_size=self.check_max_file_size,
                              allowed_indexes=self.builder_impl.allowed_index_urls if local else (),
                              local_builder=local)  # fmt: skip
        self.preprints = PreprintManager(self.db, self.queue, policy=policy,
                                         checkouts_dir=data / "checkouts",
                                         builds_dir=data / "builds",
                                         datasets_root=data / "datasets",
                                         checker=checker)  # fmt: skip
        self.datasets = DatasetStore(self.db, data / "datasets", sandbox,
                                     packages=data_packages(self.data_packages),
                                     size_limit=self.data_size_limit,
                                     time_limit=self.data_time_limit)  # fmt: skip
        self.books: BookRunner
        if self.builder in ("docker", "binderhub"):  # books run in the builder's images
            self.books = DockerBookRunner(parent=self, sandbox=sandbox,
                                          registry_auth=self.builder_impl.registry_auth())  # fmt: skip
            if "docker_host" not in self.config.DockerBookRunner:  # the same engine
                self.books.docker_host = self.builder_impl.docker_host
        else:  # MyST books start their Jupyter server from the service's server environment
            self.books = LocalBookRunner(parent=self, sandbox=sandbox,
                                         server_environment=self.server_environment)  # fmt: skip
        if not self.books.myst_themes_dir:  # MyST themes, downloaded there once when missing
            self.books.myst_themes_dir = str(data / "myst-themes")
        smtp = SMTPSettings(host=self.smtp_host, port=self.smtp_port,
                            security=self.smtp_security, username=self.smtp_username,
                            password=self.smtp_password, sender=self.mail_from)  # fmt: skip
        self.mailer = Mailer(smtp if self.smtp_host else None, log_lines=self.email_log_lines,
                             log_bytes=self.email_log_bytes)  # fmt: skip
        self.pipeline = Pipeline(self.db, self.preprints, self.environments, self.datasets,
                                 self.books, self.mailer, public_url=self.public_url,
                                 base_url=self.base_url)  # fmt: skip
        # preview URLs are signed for the reader; a restart only makes readers sign in again
        self.preview_signer = PreviewSigner(os.urandom(32))
        self.hub_api = HubAPI()
        # submit, review, publish; published versions under data_dir/published (publishing.py)
        self.publishing = Publishing(self.db, self.preprints, self.datasets, self.mailer,
                                     root=data / "published", hub_api=self.hub_api,
                                     public_url=self.public_url, base_url=self.base_url,
                                     editors_email=self.editors_email)  # fmt: skip
        self.servers = Servers(self.hub_api, self.environments,
                               os.environ.get("JUPYTERHUB_BASE_URL", "/"))  # fmt: skip
        # each server's own directory (launch.py), and readers' temporary users
        self.server_files = ServerFiles(data / "servers", sandbox)
        self.readers = ReaderLaunches(self.hub_api, self.server_files, self.db,
                                      max_total=self.reader_servers_max,
                                      max_per_preprint=self.reader_servers_per_preprint,
                                      max_age=self.reader_server_max_age)  # fmt: skip
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(share_path("templates"))),
            autoescape=True,
        )
        settings = {
            "neurolibre": self,
            "static_path": str(share_path("static")),
            "static_url_prefix": f"{self.base_url}static/",
            "cookie_secret": os.urandom(32),
            "login_url": f"{self.hub_prefix}login",
            "log_function": self._log_request,
            # unknown paths: a JSON 404 under api/, the error page elsewhere
            "default_handler_class": UnknownPath,
        }
        self.tornado_app = web.Application(routes(self.base_url), **settings)

    def _log_request(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING
        if handler.request.path.endswith(("/api/health", "/metrics")) and status < 400:
            level = logging.DEBUG
        # the URI may carry ?token=...: log the path only
        self.log.log(level, "%d %s %s %.1fms", status, handler.request.method,
                     handler.request.path, 1000 * handler.request.request_time())  # fmt: skip

    def _server_env_build(self) -> asyncio.Task[ServiceEnvironment]:
        """The build of the server environment: the current one, or a new one when there is
        none yet or the last one failed (the operator may have fixed the cause since)."""
        task = self._server_env_task
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._server_env_task = asyncio.create_task(self._ensure_server_env())
            # a build nobody awaits (the one at start) has logged its failure already
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def server_environment(self) -> ServiceEnvironment:
        """The Jupyter server stack's environment (c.NeuroLibre.server_packages), built once;
        callers wait for that build. Raises ServiceEnvironmentError, with a message for the
        operator, when it cannot be built; the next call tries again."""
        # shielded: a caller that gives up (a spawn request timing out) does not stop the build
        return await asyncio.shield(self._server_env_build())

    async def _ensure_server_env(self) -> ServiceEnvironment:
        packages = self._server_packages
        try:
            env = await self.server_env_store.ensure(
                "server", packages, say=lambda line: self.log.info("server environment: %s", line)
            )
        except Exception as e:
            self.log.error("The server environment (%s) could not be built: %s",
                           " ".join(packages), e)  # fmt: skip
            if isinstance(e, ServiceEnvironmentError):
                raise
            raise ServiceEnvironmentError(
                f"The service's server environment ({' '.join(packages)}) could not be built: {e}"
            ) from e
        if not env.bin("jupyterhub-singleuser").is_file():
            raise ServiceEnvironmentError(
                f"The service's server environment ({' '.join(packages)}, at {env.prefix}) has "
                "no jupyterhub-singleuser: c.NeuroLibre.server_packages must include jupyterhub."
            )
        return env

    async def start_async(self) -> None:
        await self.setup()
        if isinstance(self.builder_impl, LocalBuilder):
            # servers on local environments and local MyST books need it: build it now, in
            # the background, so the first spawn does not wait for it (or waits less)
            self._server_env_build()
        await self.datasets.recover()
        await self.books.recover()  # before the queue re-runs the jobs of its containers
        try:
            for location in await self.environments.reconcile():
                self.log.warning("Runtime %s is gone; its environments must be rebuilt", location)
        except Exception as e:  # an engine down at start must not keep the service down
            self.log.error("Could not check the built runtimes: %s", e)
        await self.queue.start()
        self._reader_sweep = asyncio.create_task(
            self.readers.sweep_forever(self.reader_sweep_interval)
        )
        self.server = HTTPServer(self.tornado_app, xheaders=True)
        self.server.listen(self.port, self.ip)
        self.log.info("NeuroLibre %s on http://%s:%s%s (builder: %s, sandbox: %s)", __version__,
                      self.ip, self.port, self.base_url, self.builder, self.sandbox)  # fmt: skip
        stop = asyncio.Event()
        reasons: list[str] = []

        def stop_because(reason: str) -> None:
            reasons.append(reason)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_because, f"it was asked to stop ({sig.name})")
        watch = asyncio.create_task(self._watch_parent(stop_because))
        await stop.wait()
        watch.cancel()
        self.log.info("Stopping: %s", reasons[0])
        self.server.stop()  # the port is free before the lock is (a next service can bind it)
        await self.queue.stop(reasons[0])
        if self._server_env_task and not self._server_env_task.done():
            self._server_env_task.cancel()  # (an unfinished environment is removed)
            await asyncio.gather(self._server_env_task, return_exceptions=True)
        await self.hub_api.close()
        await self.db.close()
        self.instance_lock.release()

    async def _watch_parent(self, stop_because) -> None:
        """A managed service whose hub was killed is reparented: notice it, and stop.

        Polling getppid() rather than PR_SET_PDEATHSIG: that signal follows the parent
        *thread* that forked us, and it cannot be set before we run (the hub's Popen has no
        hook for it). A parent that is PID 1 (a container's hub, or init) is not watched.
        """
        parent = _STARTED_BY
        if not self.stop_with_parent or parent <= 1:
            return
        while True:  # (a pidfd would wake us at once; a second is soon enough)
            await asyncio.sleep(1)
            if os.getppid() != parent:
                break
        self.log.warning("The process that started this service (pid %d, its hub) exited", parent)
        stop_because("its hub exited")

    def start(self) -> None:
        try:
            asyncio.run(self.start_async())
        except InstanceLocked as e:
            self.log.critical("%s", e)
            self.exit(1)


# read at import, before the slow part of a start (migrations, recovery): a hub killed
# meanwhile is still noticed
_STARTED_BY = os.getppid()


main = NeuroLibre.launch_instance
