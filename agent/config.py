"""``kvwatch.toml``: read, validate and resolve the agent's configuration.

Every table is a dataclass and every key one of its fields, declared once
with its default and how it is read (:func:`setting`: a converter of the
reader and its bounds); anything else is an error that names the file, the
key and the reason -- a misspelt key silently ignored is how a monitoring
agent ends up watching nothing.
Relative paths are taken from the configuration file's directory, so a
config can travel with the files it names.

Secrets (the vLLM API key, environment variables such as ``HF_TOKEN``,
basic-auth passwords) are never written in the file itself: they name an
environment variable or a file (systemd's ``LoadCredential=`` puts them under
``$CREDENTIALS_DIRECTORY``) and are read only when a server starts or a
request is checked; ``kvwatch check`` shows where they come from, never what
they are.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path, PurePath
from typing import Any

from agent.supervise.versions import vllm_cli_works
from agent.timezones import resolve_timezone

DEFAULT_PATH = "/etc/kvwatch/kvwatch.toml"
# The Prometheus default-port registry's exporter range (9100-9999) is full;
# kvwatch takes a port above it that no registered exporter uses.
DEFAULT_PORT = 10067
DEFAULT_STATE_DIR = "/var/lib/kvwatch"
DEFAULT_LOG_DIR = "/var/log/kvwatch"
# How a server is started: ``vllm serve`` (vLLM's CLI, the supported way since it deprecated the
# next one) or the OpenAI API server module (every release; the only way where the CLI cannot run).
VLLM_CLI = "vllm.entrypoints.cli.main"
VLLM_API_SERVER = "vllm.entrypoints.openai.api_server"
LMCACHE_CLI = "lmcache.cli.main"  # `lmcache server`: LMCache's multiprocess cache server
ENTRY_POINTS = ("auto", "serve", "api_server")
LMCACHE_MODES = ("in_process", "mp")
RESTART_POLICIES = ("on-failure", "always", "never")
START_POSITIONS = ("end", "beginning")
# A journalctl match: a journal field (capitals, digits and underscores, not beginning with a digit; a
# trusted field as ``_SYSTEMD_UNIT`` begins with an underscore) and its value, or ``+`` (either side).
_JOURNAL_MATCH = re.compile(r"\+|[A-Z_][A-Z0-9_]*=.+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables systemd hands to kvwatch itself; a child that inherited them
# could ping kvwatch's watchdog or claim its sockets.
CREDENTIALS = "$CREDENTIALS_DIRECTORY"
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def setting(default: Any = MISSING, read: str = "", *bounds: Any, factory: Any = MISSING, **options: Any) -> Any:
    """A key of the file: its default, and the reader's converter (``read``) with its bounds and options.

    A field without ``read`` has rules of its own, written out in the reader."""
    metadata = {"read": (read, bounds, options)} if read else {}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def keys_of(table: type) -> tuple[str, ...]:
    """The keys a table of the file may hold: its dataclass's fields, in order."""
    return tuple(f.name for f in fields(table))


class ConfigError(Exception):
    """A configuration problem: ``file: key: reason``."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


@dataclass(frozen=True)
class Secret:
    """Where a secret value comes from: ``env`` (a variable of kvwatch's environment) or ``file``."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        return f"<secret from ${self.env}>" if self.env else f"<secret from file {self.file}>"

    def __repr__(self) -> str:
        return self.describe()

    def read(self) -> str:
        """The value; raises ``OSError``/``KeyError`` with a message that names the source, not the value."""
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise KeyError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        path = str(self.file)
        if path.startswith(CREDENTIALS):
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise KeyError(f"{path}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit sets it)")
            path = directory + path[len(CREDENTIALS) :]
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip("\r\n")


@dataclass(frozen=True)
class LmcacheConfig:
    """``[server.lmcache]``: the KV connector vLLM is started with, and LMCache's settings.

    ``mode = "in_process"``: LMCache runs inside vLLM (``LMCacheConnectorV1``), configured by
    ``settings`` (its ``LMCACHE_*`` environment) or ``config_file``.  ``mode = "mp"``: an LMCache
    server (``lmcache server``) holds the cache and vLLM reaches it through ``LMCacheMPConnector``
    at ``mp_host``:``mp_port``.  With ``launch`` (the default) kvwatch starts that server itself,
    before vLLM, from ``command`` or from ``settings`` turned into its options, and supervises the
    two as one unit; without, the server is someone else's (shared by several vLLM servers, say).
    Its log is read as part of this server."""

    enabled: bool = False  # on when the table is given, unless it says enabled = false
    mode: str = setting("in_process", "string", LMCACHE_MODES)
    connector: str | None = setting(None, "string")  # default: the mode's connector
    role: str = setting("kv_both", "string", ("kv_both", "kv_producer", "kv_consumer"))
    config_file: Path | None = setting(None, "file_path")
    # in_process: LMCACHE_<KEY> environment of vLLM; mp: --key options of the LMCache server
    settings: Mapping[str, str] = field(default_factory=dict)
    mp_host: str = setting("127.0.0.1", "string")
    mp_port: int = setting(5555, "integer", 1, 65535)
    http_port: int = setting(8080, "integer", 1, 65535)
    launch: bool = setting(True, "boolean")
    command: tuple[str, ...] | None = None  # a literal LMCache server command (mp, launch)
    args: tuple[str, ...] = ()  # options added to the LMCache server's default command
    env: Mapping[str, str] = setting(read="environment", factory=dict)
    server_log: Path | None = setting(None, "file_path")
    # Restart vLLM when its LMCache server no longer holds a worker of it (a server run elsewhere: its server_log read).
    unregistered_restart: bool = setting(False, "boolean")

    @property
    def connector_name(self) -> str:
        return self.connector or ("LMCacheMPConnector" if self.mode == "mp" else "LMCacheConnectorV1")

    @property
    def launched(self) -> bool:
        """True when kvwatch starts and supervises an LMCache server for this vLLM server."""
        return self.enabled and self.mode == "mp" and self.launch

    def environment(self) -> dict[str, str]:
        """What vLLM's environment gets for LMCache (in mp mode, LMCache's settings go to its server)."""
        if not self.enabled or self.mode == "mp":
            return {}
        env = {f"LMCACHE_{key.upper()}": value for key, value in self.settings.items()}
        if self.config_file is not None:
            env["LMCACHE_CONFIG_FILE"] = str(self.config_file)
        return env

    def transfer_config(self) -> str:
        config: dict[str, Any] = {"kv_connector": self.connector_name, "kv_role": self.role}
        if self.mode == "mp":
            config["kv_connector_extra_config"] = {
                "lmcache.mp.host": f"tcp://{self.mp_host}",
                "lmcache.mp.port": self.mp_port,
            }
        return json.dumps(config, separators=(",", ":"))

    def server_argv(self, python: str) -> list[str]:
        """The LMCache server's command line: ``command``, else ``lmcache server`` of vLLM's python."""
        if self.command is not None:
            return list(self.command)
        argv = [python, "-m", LMCACHE_CLI, "server", "--host", self.mp_host, "--port", str(self.mp_port)]
        argv += ["--http-host", self.mp_host, "--http-port", str(self.http_port)]
        for key, value in self.settings.items():
            option = "--" + key.replace("_", "-")
            if value == "True":
                argv.append(option)
            elif value != "False":
                argv += [option, value]
        return argv + list(self.args)

    def health_url(self) -> str:
        """The LMCache server's health check: 200 once its cache engine is up (503 before)."""
        host = "127.0.0.1" if self.mp_host in ("0.0.0.0", "", "::", "*") else self.mp_host
        return f"http://{host}:{self.http_port}/healthcheck"


@dataclass(frozen=True)
class ServerConfig:
    """One vLLM (+ LMCache) server kvwatch starts and watches."""

    name: str
    command: tuple[str, ...] | None = None
    python: str = setting("python3", "program")
    entry_point: str = setting("auto", "string", ENTRY_POINTS)
    model: str | None = None
    host: str = setting("127.0.0.1", "string")
    port: int = setting(8000, "integer", 1, 65535)
    tensor_parallel_size: int = setting(1, "integer", 1, 1024)
    args: tuple[str, ...] = ()
    api_key: Secret | None = setting(None, "secret")
    lmcache: LmcacheConfig = field(default_factory=LmcacheConfig)
    env: Mapping[str, str] = setting(read="environment", factory=dict)
    secret_env: Mapping[str, Secret] = field(default_factory=dict)
    working_dir: Path | None = setting(None, "file_path")
    log_file: Path = Path(DEFAULT_LOG_DIR) / "server.log"  # default: agent.log_dir/NAME.log
    log_max_bytes: int = setting(100 << 20, "size")
    log_backups: int = setting(5, "integer", 0, 1000)
    timezone: str | None = setting(None, "timezone")
    restart: str = setting("on-failure", "string", RESTART_POLICIES)
    backoff_initial: float = setting(1.0, "duration", 0.01)
    backoff_max: float = setting(300.0, "duration", 0.01)
    crash_loop_starts: int = setting(5, "integer", 2)
    crash_loop_window: float = setting(600.0, "duration", 1)
    stop_timeout: float = setting(60.0, "duration", 0.1)
    health_url: str | None = None
    health_interval: float = setting(10.0, "duration", 0.1)
    health_timeout: float = setting(5.0, "duration", 0.1)
    stall_after: float = setting(300.0, "duration", 1)
    stall_restart: bool = setting(False, "boolean")
    canary_interval: float | None = setting(None, "duration", 10)  # periodic `kvwatch canary`; None: off
    canary_requests: int = setting(3, "integer", 2, 100)

    def argv(self) -> list[str]:
        """The exact command line the server is started with."""
        if self.command is not None:
            return list(self.command)
        if self.entry_point == "serve" or (self.entry_point == "auto" and vllm_cli_works(self.python)):
            argv = [self.python, "-m", VLLM_CLI, "serve", str(self.model)]
        else:
            argv = [self.python, "-m", VLLM_API_SERVER, "--model", str(self.model)]
        argv += ["--host", self.host, "--port", str(self.port)]
        if self.tensor_parallel_size != 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.lmcache.enabled:
            argv += ["--kv-transfer-config", self.lmcache.transfer_config()]
        return argv + list(self.args)

    def shown_argv(self) -> list[str]:
        """The command line as kvwatch shows it (``check``, its log): secret-looking values masked."""
        return masked_argv(self.argv())

    def added_environment(self) -> dict[str, str | Secret]:
        """What kvwatch adds to its own environment for this server (secrets unread)."""
        env: dict[str, str | Secret] = {"PYTHONUNBUFFERED": "1"}
        env.update(self.lmcache.environment())
        env.update(self.env)
        if self.api_key is not None:
            env["VLLM_API_KEY"] = self.api_key  # vLLM reads it; a command-line key shows in ps
        env.update(self.secret_env)
        return env

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The full environment of the child, secrets read (raises if one cannot be)."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in PRIVATE_ENV}
        for key, value in self.added_environment().items():
            env[key] = value.read() if isinstance(value, Secret) else value
        return env

    def base_url(self) -> str:
        """Where the server's OpenAI-compatible API answers (for the canary)."""
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def chunk_size(self) -> int:
        """LMCache's chunk size as this server is configured (LMCache's default 256 otherwise)."""
        value = self.lmcache.settings.get("chunk_size") or self.env.get("LMCACHE_CHUNK_SIZE")
        return int(value) if value and str(value).isdigit() else 256

    def probe_url(self) -> str | None:
        if self.health_url is not None:
            return self.health_url or None  # "" turns probing off
        return f"{self.base_url()}/health"

    def lmcache_log(self) -> Path | None:
        """The LMCache server's log, read as part of this server (mp mode): written by kvwatch when it
        launches that server (beside vLLM's log unless ``server_log`` says where), else ``server_log``."""
        lmcache = self.lmcache
        if lmcache.launched and lmcache.server_log is None:
            return self.log_file.with_name(f"{self.log_file.stem}-lmcache{self.log_file.suffix}")
        return lmcache.server_log if lmcache.enabled and lmcache.mode == "mp" else None

    def lmcache_server(self) -> ServerConfig | None:
        """The LMCache server kvwatch supervises beside vLLM (mp mode, ``launch``), as a process of its
        own: vLLM's name, restart policy and timings, LMCache's command, environment, log and probe."""
        lmcache = self.lmcache
        if not lmcache.launched:
            return None
        return replace(
            self,
            command=tuple(lmcache.server_argv(self.python)),
            args=(),
            api_key=None,
            lmcache=LmcacheConfig(),
            env=lmcache.env,
            secret_env={},
            log_file=self.lmcache_log(),
            health_url=lmcache.health_url(),
            stall_restart=False,
            canary_interval=None,
        )


@dataclass(frozen=True)
class FollowConfig:
    """Logs of a server kvwatch did not start: files/globs, or the journal's records of a systemd unit and/or
    of journalctl matches (``CONTAINER_NAME=vllm``: a container logging through the journald driver)."""

    name: str
    paths: tuple[str, ...] = ()
    # The server's LMCache multiprocess server's own log (a file), read with ``paths`` as part of this server: its
    # HTTP server's uvicorn lines are then none of vLLM's.
    lmcache_server_log: str | None = None
    journal_unit: str | None = None
    journal_match: tuple[str, ...] = ()
    timezone: str | None = setting(None, "timezone")
    start_at: str = setting("end", "string", START_POSITIONS)

    @property
    def journal(self) -> str | None:
        """What of the journal is followed, for the log: the unit and the matches (None for files)."""
        return " ".join(((self.journal_unit,) if self.journal_unit else ()) + self.journal_match) or None

    def placed_paths(self) -> list[tuple[str, str]]:
        """Every path and glob read, each with its key in the table: ``paths[N]``, then ``lmcache_server_log``."""
        placed = [(f"paths[{number}]", pattern) for number, pattern in enumerate(self.paths)]
        if self.lmcache_server_log is not None and self.lmcache_server_log not in self.paths:
            placed.append(("lmcache_server_log", self.lmcache_server_log))
        return placed


@dataclass(frozen=True)
class PodsConfig:
    """``[[pods]]``: the logs of Kubernetes pods on this node, as the kubelet keeps them
    (``LOG_DIR/NAMESPACE_POD_UID/CONTAINER/N.log``, CRI records); each picked container of each pod
    is followed as a server named by ``name``, from the moment its directory appears until it goes."""

    log_dir: str = "/var/log/pods"
    # Shell-style patterns picking the pods' namespaces, names and containers.
    namespace: str = setting("*", "string")
    pod: str = setting("*", "string")
    container: str = setting("*", "string")
    # The server label: {namespace}, {pod} and {container} are the path's.
    name: str = "{namespace}/{pod}/{container}"
    start_at: str = setting("end", "string", START_POSITIONS)  # for the pods there at start; later ones: all
    scan_interval: float = setting(5.0, "duration", 0.1)


@dataclass(frozen=True)
class ContainersConfig:
    """``[[containers]]``: the logs of Docker containers on this host, as the engine keeps them
    (``ROOT/ID/ID-json.log``, Docker's JSON records; the name, image and Compose labels in
    ``ROOT/ID/config.v2.json``); each picked container is followed as a server named by ``name``, from the
    moment its directory appears until it goes (``docker rm``)."""

    root: str = "/var/lib/docker/containers"
    # Shell-style patterns picking the containers by name (without Docker's leading "/") and image.
    container: str = setting("*", "string")
    image: str = setting("*", "string")
    # The server label: {container}, {id} (its first 12 digits), {image}, {project} and {service} (Compose's).
    name: str = "{container}"
    start_at: str = setting("end", "string", START_POSITIONS)  # for the containers there at start; later ones: all
    scan_interval: float = setting(5.0, "duration", 0.1)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: where /metrics is served, and how it is protected."""

    address: str = setting("0.0.0.0", "string", empty=True)
    port: int = setting(DEFAULT_PORT, "integer", 0, 65535)
    tls: TlsConfig | None = None
    basic_auth: Mapping[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: kvwatch's own settings."""

    state_dir: Path = setting(Path(DEFAULT_STATE_DIR), "file_path")
    log_dir: Path = setting(Path(DEFAULT_LOG_DIR), "file_path")
    log_level: str = setting("info", "string", ("debug", "info", "warning"))
    expected_gpus: int | None = setting(None, "integer", 0)
    poll_interval: float = setting(1.0, "duration", 0.01, 60.0)
    max_line_length: int = setting(4 * 1024 * 1024, "integer", 1024)
    reader_nice: int = setting(10, "integer", 0, 19)
    # Requests kept per server for kvwatch top and /api/requests; 0: none, and no request joining at all.
    recent_requests: int = setting(50, "integer", 0, 10_000)


TRACE_PROTOCOLS = ("http/protobuf", "grpc")


@dataclass(frozen=True)
class TracingConfig:
    """``[tracing]``: one OpenTelemetry trace per request, over OTLP.  What is unset comes from ``OTEL_*``."""

    enabled: bool = setting(False, "boolean")
    protocol: str | None = setting(None, "string", TRACE_PROTOCOLS)
    endpoint: str | None = setting(None, "url")
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    timeout: float | None = setting(None, "duration", 0.1)
    sampling_ratio: float | None = setting(None, "ratio")
    max_open_requests: int = setting(20_000, "integer", 1)
    idle_timeout: float = setting(900.0, "duration", 1.0)
    max_queue_size: int = setting(2048, "integer", 16)

    def resolved_headers(self) -> dict[str, str]:
        """Header values, secrets read (raises ``OSError``/``KeyError`` naming the source)."""
        return {k: v.read() if isinstance(v, Secret) else v for k, v in self.headers.items()}

    def resolved_sampling_ratio(self) -> float:
        if self.sampling_ratio is not None:
            return self.sampling_ratio
        if os.environ.get("OTEL_TRACES_SAMPLER", "") in ("traceidratio", "parentbased_traceidratio"):
            try:
                return min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1"))))
            except ValueError:
                return 1.0
        return 1.0


@dataclass(frozen=True)
class Config:
    path: str
    agent: AgentConfig = field(default_factory=AgentConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    servers: tuple[ServerConfig, ...] = ()
    follows: tuple[FollowConfig, ...] = ()
    tracing: TracingConfig = field(default_factory=TracingConfig)
    pods: tuple[PodsConfig, ...] = ()
    containers: tuple[ContainersConfig, ...] = ()

    @property
    def reads_nothing(self) -> bool:
        """No server, followed log, pods or containers: kvwatch would serve its own metrics alone."""
        return not (self.servers or self.follows or self.pods or self.containers)


# What a start and ``kvwatch check`` say of a configuration that ``reads_nothing`` (valid: a packaged default
# before it is edited, say -- but a server or log left out by mistake would otherwise pass unseen).
NOTHING_TO_READ = "names no [[server]], [[follow]], [[pods]] or [[containers]] table: no log is read"


# -- reading ---------------------------------------------------------------------------


def load(path: str | os.PathLike) -> Config:
    """Read and validate a configuration file; raises :class:`ConfigError`."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid UTF-8") from None
    return parse(data, path)


def parse(data: Mapping[str, Any], path: str = "<config>") -> Config:
    reader = _Reader(path, Path(path).resolve().parent if path != "<config>" else Path.cwd())
    return reader.config(data)


# The longest any duration may be: past it a setting is a mistake, and a loop that waits it is dead.
MAX_DURATION = 30 * 86400.0


def _seconds_text(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g} s"


def _parse_duration(value: Any) -> float:
    """Seconds from a number or text such as ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip().replace(" ", ""):
        raise ValueError
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def _parse_size(value: Any) -> int:
    """Bytes from a whole number or text such as ``"100MiB"`` or ``"1GB"``."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


class _Reader:
    """Walks the TOML tables, converting each value and naming the key of any error."""

    def __init__(self, path: str, base: Path) -> None:
        self.path = path
        self.base = base

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason)

    # -- value converters -----------------------------------------------------------

    def table(self, value: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {_kind(value)}")
        for key in value:
            if key not in known:
                hint = _closest(key, known)
                raise self.fail(
                    f"{where}.{key}" if where else key,
                    "unknown key" + (f" (did you mean {hint!r}?)" if hint else f"; known keys: {', '.join(known)}"),
                )
        return value

    def string(self, value: Any, key: str, choices: tuple[str, ...] = (), empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_kind(value)}")
        if not empty and not value.strip():
            raise self.fail(key, "must not be empty")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def integer(self, value: Any, key: str, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(key, f"must be {bounds}, got {value}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def duration(self, value: Any, key: str, minimum: float = 0.0, maximum: float = MAX_DURATION) -> float:
        try:
            seconds = _parse_duration(value)
        except ValueError:
            raise self.fail(key, f'must be seconds or a duration such as "30s", "5m", got {value!r}') from None
        if not math.isfinite(seconds):  # TOML has inf and nan; a loop waiting that long is a dead loop
            raise self.fail(key, f"must be a finite number of seconds, got {value!r}")
        if seconds < minimum:
            raise self.fail(key, f"must be at least {minimum:g} s, got {value!r}")
        if seconds > maximum:
            raise self.fail(key, f"must be at most {_seconds_text(maximum)}, got {value!r}")
        return seconds

    def size(self, value: Any, key: str) -> int:
        try:
            size = _parse_size(value)
        except ValueError:
            raise self.fail(key, f'must be bytes or a size such as "100MiB", got {value!r}') from None
        if size < 4096:
            raise self.fail(key, f"must be at least 4096 bytes, got {value!r}")
        return size

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, f"must be a list of strings, got {_kind(value)}")
        return tuple(value)

    def file_path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(os.path.expanduser(text))
        return Path(os.path.normpath(path if path.is_absolute() else self.base / path))

    def program(self, value: Any, key: str) -> str:
        """A program: a bare name is looked up on PATH; ``./x`` and ``../x`` are relative to the config."""
        text = self.string(value, key)
        if text.startswith(("./", "../")):
            return os.path.normpath(self.base / text)
        return os.path.expanduser(text)

    def secret(self, value: Any, key: str) -> Secret:
        if isinstance(value, str):
            raise self.fail(key, 'secrets are not written in the file: use { env = "NAME" } or { file = "PATH" }')
        spec = self.table(value, key, ("env", "file"))
        if len(spec) != 1:
            raise self.fail(key, 'give exactly one of env or file, e.g. { file = "/run/credentials/kvwatch/key" }')
        if "env" in spec:
            name = self.string(spec["env"], f"{key}.env")
            if not _ENV_NAME.match(name):
                raise self.fail(f"{key}.env", f"not an environment variable name: {name!r}")
            return Secret(env=name)
        text = self.string(spec["file"], f"{key}.file")
        if text.startswith(CREDENTIALS):  # resolved when read: systemd sets it for the running unit
            return Secret(file=Path(text))
        return Secret(file=self.file_path(text, f"{key}.file"))

    def timezone(self, value: Any, key: str) -> str:
        name = self.string(value, key)
        try:
            resolve_timezone(name)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        return name

    def name(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not _NAME.match(text):
            raise self.fail(key, f"must be letters, digits, '_', '.' or '-' (at most 63), got {text!r}")
        return text

    def url(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not text.startswith(("http://", "https://")):
            raise self.fail(key, f"must be an http:// or https:// URL, got {text!r}")
        return text

    def ratio(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise self.fail(key, f"must be a number from 0 to 1, got {value!r}")
        return float(value)

    def environment(self, value: Any, key: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(key, f'must be a table of NAME = "value", got {_kind(value)}')
        env = {}
        for name, item in value.items():
            if not _ENV_NAME.match(name):
                raise self.fail(f"{key}.{name}", "not an environment variable name")
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(f"{key}.{name}", f"must be a string or number, got {_kind(item)}")
            env[name] = str(item)
        return env

    # -- tables ---------------------------------------------------------------------

    def settings(self, table: type, value: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The keys of ``value`` that ``table`` declares with a converter (:func:`setting`), converted."""
        read = {}
        for f in fields(table):
            if f.name in value and "read" in f.metadata:
                converter, bounds, options = f.metadata["read"]
                key = f"{where}.{f.name}" if where else f.name
                read[f.name] = getattr(self, converter)(value[f.name], key, *bounds, **options)
        return read

    def config(self, data: Mapping[str, Any]) -> Config:
        self.table(dict(data), "", ("agent", "metrics", "server", "follow", "pods", "containers", "tracing"))
        agent = self.agent(data.get("agent", {}))
        metrics = self.metrics(data.get("metrics", {}))
        servers = tuple(self.server(item, f"server[{i}]", agent) for i, item in enumerate(self.array(data, "server")))
        follows = tuple(self.follow(item, f"follow[{i}]") for i, item in enumerate(self.array(data, "follow")))
        self.check_unique(servers, follows, metrics)
        tracing = self.tracing(data.get("tracing", {}))
        pods = tuple(self.pods(item, f"pods[{i}]") for i, item in enumerate(self.array(data, "pods")))
        containers = tuple(
            self.containers(item, f"containers[{i}]") for i, item in enumerate(self.array(data, "containers"))
        )
        return Config(self.path, agent, metrics, servers, follows, tracing, pods, containers)

    def tracing(self, value: Any) -> TracingConfig:
        t = self.table(value, "tracing", keys_of(TracingConfig))
        headers: dict[str, str | Secret] = {}
        if "headers" in t:
            if not isinstance(t["headers"], dict):
                raise self.fail("tracing.headers", f'must be a table of name = "value", got {_kind(t["headers"])}')
            for name, item in t["headers"].items():
                key = f"tracing.headers.{name}"
                headers[name] = self.secret(item, key) if isinstance(item, dict) else self.string(item, key)
        return TracingConfig(headers=headers, **self.settings(TracingConfig, t, "tracing"))

    def array(self, data: Mapping[str, Any], key: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of tables ([[{key}]]), got {_kind(value)}")
        return value

    def agent(self, value: Any) -> AgentConfig:
        t = self.table(value, "agent", keys_of(AgentConfig))
        return AgentConfig(**self.settings(AgentConfig, t, "agent"))

    def metrics(self, value: Any) -> MetricsConfig:
        t = self.table(value, "metrics", keys_of(MetricsConfig))
        tls = None
        if "tls" in t:
            spec = self.table(t["tls"], "metrics.tls", keys_of(TlsConfig))
            for needed in ("cert_file", "key_file"):
                if needed not in spec:
                    raise self.fail(f"metrics.tls.{needed}", "missing (TLS needs both cert_file and key_file)")
            tls = TlsConfig(
                self.file_path(spec["cert_file"], "metrics.tls.cert_file"),
                self.file_path(spec["key_file"], "metrics.tls.key_file"),
                self.file_path(spec["client_ca_file"], "metrics.tls.client_ca_file")
                if "client_ca_file" in spec
                else None,
            )
        users = {}
        if "basic_auth" in t:
            if not isinstance(t["basic_auth"], dict) or not t["basic_auth"]:
                raise self.fail("metrics.basic_auth", 'must be a table of user = { file = "..." } or { env = "..." }')
            for user, spec in t["basic_auth"].items():
                users[user] = self.secret(spec, f"metrics.basic_auth.{user}")
        return MetricsConfig(tls=tls, basic_auth=users, **self.settings(MetricsConfig, t, "metrics"))

    def server(self, value: Any, where: str, agent: AgentConfig) -> ServerConfig:
        t = self.table(value, where, keys_of(ServerConfig))
        if "name" not in t:
            raise self.fail(f"{where}.name", "missing (every server needs a name: it is the server label)")
        name = self.name(t["name"], f"{where}.name")
        k = lambda key: f"{where}.{key}"  # noqa: E731 - a short local helper
        command = self.command(t, where)
        lmcache = self.lmcache(t.get("lmcache", {}), k("lmcache"), t)
        args = self.strings(t.get("args", []), k("args"))
        if lmcache.enabled and any(a.split("=")[0] == "--kv-transfer-config" for a in args):
            raise self.fail(k("args"), "--kv-transfer-config is set by [server.lmcache]; remove one of the two")
        if _names_api_key(args) or (command is not None and _names_api_key(command)):
            raise self.fail(
                k("command" if command is not None else "args"),
                '--api-key on the command line shows in ps and logs; use api_key = { file = "..." } instead',
            )
        model = self.model(t["model"], k("model")) if "model" in t else None
        secret_env = self.secret_env(t["secret_env"], k("secret_env")) if "secret_env" in t else {}
        health_url = self.health_url(t["health_url"], k("health_url")) if "health_url" in t else None
        plain = self.settings(ServerConfig, t, where)
        backoff_initial = plain.get("backoff_initial", ServerConfig.backoff_initial)
        if plain.get("backoff_max", ServerConfig.backoff_max) < backoff_initial:
            raise self.fail(k("backoff_max"), f"must be at least backoff_initial ({backoff_initial:g} s)")
        return ServerConfig(
            name=name,
            command=command,
            model=model,
            args=args,
            lmcache=lmcache,
            secret_env=secret_env,
            log_file=self.file_path(t["log_file"], k("log_file")) if "log_file" in t else agent.log_dir / f"{name}.log",
            health_url=health_url,
            **plain,
        )

    def command(self, t: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
        """A literal command, which replaces the keys that build one; else model is required."""
        if "command" not in t:
            if "model" not in t:
                raise self.fail(f"{where}.model", "missing (give model, or a literal command)")
            return None
        command = self.strings(t["command"], f"{where}.command")
        if not command:
            raise self.fail(f"{where}.command", "must not be empty")
        for structured in ("model", "python", "tensor_parallel_size", "args", "lmcache"):
            if structured in t and not (structured == "lmcache" and self._lmcache_beside(t[structured])):
                raise self.fail(
                    f"{where}.{structured}", "cannot be combined with command (put it in the command, or drop command)"
                )
        return (self.program(command[0], f"{where}.command[0]"), *command[1:])

    def model(self, value: Any, key: str) -> str:
        """A model name, or a local path (``./`` and ``../`` are relative to the config)."""
        model = self.string(value, key)
        return os.path.normpath(self.base / model) if model.startswith(("./", "../")) else model

    def secret_env(self, value: Any, key: str) -> dict[str, Secret]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {_kind(value)}")
        secrets = {}
        for var, spec in value.items():
            if not _ENV_NAME.match(var):
                raise self.fail(f"{key}.{var}", "not an environment variable name")
            secrets[var] = self.secret(spec, f"{key}.{var}")
        return secrets

    def health_url(self, value: Any, key: str) -> str:
        url = self.string(value, key, empty=True)
        if url and not url.startswith(("http://", "https://")):
            raise self.fail(key, f'must be an http(s) URL, or "" to turn probing off; got {url!r}')
        return url

    @staticmethod
    def _lmcache_beside(value: Any) -> bool:
        """A [server.lmcache] that goes with a literal vLLM command: off, or an LMCache server in mp
        mode (the command carries the connector's settings itself)."""
        return isinstance(value, dict) and (value.get("enabled", True) is not True or value.get("mode") == "mp")

    def lmcache(self, value: Any, where: str, server: Mapping[str, Any]) -> LmcacheConfig:
        t = self.table(value, where, keys_of(LmcacheConfig))
        # A [server.lmcache] table turns the connector on unless it says enabled = false.
        enabled = self.boolean(t.get("enabled", bool(t) and "lmcache" in server), f"{where}.enabled")
        settings = {}
        if "settings" in t:
            if not isinstance(t["settings"], dict):
                raise self.fail(f"{where}.settings", f"must be a table, got {_kind(t['settings'])}")
            for key, item in t["settings"].items():
                label = f"{where}.settings.{key}"
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key) or key.upper().startswith("LMCACHE_"):
                    raise self.fail(label, "write the setting without its LMCACHE_ prefix, e.g. chunk_size = 256")
                if isinstance(item, bool):
                    settings[key] = "True" if item else "False"
                elif isinstance(item, str | int | float):
                    settings[key] = str(item)
                else:
                    raise self.fail(label, f"must be a string, number or boolean, got {_kind(item)}")
        lmcache = LmcacheConfig(enabled=enabled, settings=settings, **self.settings(LmcacheConfig, t, where))
        if "command" in t:
            command = self.strings(t["command"], f"{where}.command")
            if not command:
                raise self.fail(f"{where}.command", "must not be empty")
            lmcache = replace(lmcache, command=(self.program(command[0], f"{where}.command[0]"), *command[1:]))
        if "args" in t:
            lmcache = replace(lmcache, args=self.strings(t["args"], f"{where}.args"))
        self._check_lmcache_keys(lmcache, t, where)
        return lmcache

    def _check_lmcache_keys(self, lmcache: LmcacheConfig, t: Mapping[str, Any], where: str) -> None:
        """Keys that belong to the other mode, or to a launched server only, are named as errors."""
        if lmcache.mode == "mp":
            if "config_file" in t:
                reason = "configures LMCache inside vLLM; in mp mode, give LMCache's settings as settings"
                raise self.fail(f"{where}.config_file", reason)
            if not lmcache.launch:
                for key in ("command", "args", "env", "settings"):
                    if key in t:
                        raise self.fail(
                            f"{where}.{key}", "configures the LMCache server kvwatch launches; launch = false"
                        )
                if lmcache.unregistered_restart and lmcache.server_log is None:
                    reason = "with launch = false, needs server_log: the LMCache server's log, where its reaps are read"
                    raise self.fail(f"{where}.unregistered_restart", reason)
            if "command" in t:
                for key in ("settings", "args"):
                    if key in t:
                        raise self.fail(f"{where}.{key}", "cannot be combined with command (put it in the command)")
        else:
            mp_only = ("mp_host", "mp_port", "http_port", "server_log", "launch", "command", "args", "env")
            mp_only += ("unregistered_restart",)
            for key in mp_only:
                if key in t:
                    raise self.fail(f"{where}.{key}", 'only with mode = "mp"')

    def follow(self, value: Any, where: str) -> FollowConfig:
        t = self.table(value, where, keys_of(FollowConfig))
        if "name" not in t:
            raise self.fail(f"{where}.name", "missing (every follow needs a name: it is the server label)")
        name = self.name(t["name"], f"{where}.name")
        paths = self.strings(t["paths"], f"{where}.paths") if "paths" in t else ()
        unit = self.string(t["journal_unit"], f"{where}.journal_unit") if "journal_unit" in t else None
        matches = self.strings(t["journal_match"], f"{where}.journal_match") if "journal_match" in t else ()
        for i, match in enumerate(matches):
            if _JOURNAL_MATCH.fullmatch(match) is None:
                reason = f"{match!r} is no journal match: FIELD=VALUE, the field in capitals (CONTAINER_NAME=vllm)"
                raise self.fail(f"{where}.journal_match[{i}]", reason)
        if bool(paths) == bool(unit or matches):
            raise self.fail(
                where, "give either paths (files or globs) or journal_unit and/or journal_match, not both or neither"
            )
        resolved = tuple(str(self.file_path(pattern, f"{where}.paths[{i}]")) for i, pattern in enumerate(paths))
        server_log = None
        if "lmcache_server_log" in t:
            key = f"{where}.lmcache_server_log"
            if not paths:
                raise self.fail(key, "goes with paths: the LMCache server's log is read beside vLLM's files")
            server_log = str(self.file_path(t["lmcache_server_log"], key))
            if glob.has_magic(server_log):
                raise self.fail(key, f"{server_log!r} is a glob: name the LMCache server's one log file")
        return FollowConfig(
            name=name,
            paths=resolved,
            lmcache_server_log=server_log,
            journal_unit=unit,
            journal_match=matches,
            **self.settings(FollowConfig, t, where),
        )

    def label_format(self, t: Mapping[str, Any], where: str, default: str, fields: tuple[str, ...]) -> str:
        """A table's ``name``: the format of the server labels it makes, from ``fields`` alone."""
        if "name" not in t:
            return default
        name = self.string(t["name"], f"{where}.name")
        try:
            name.format(**dict.fromkeys(fields, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            shown = ", ".join(f"{{{field}}}" for field in fields[:-1]) + f" and {{{fields[-1]}}}"
            raise self.fail(f"{where}.name", f"only {shown} may stand in it ({exc})") from None
        return name

    def pods(self, value: Any, where: str) -> PodsConfig:
        t = self.table(value, where, keys_of(PodsConfig))
        read = self.settings(PodsConfig, t, where)
        log_dir = str(self.file_path(t["log_dir"], f"{where}.log_dir")) if "log_dir" in t else PodsConfig.log_dir
        name = self.label_format(t, where, PodsConfig.name, ("namespace", "pod", "container"))
        container = read.get("container", PodsConfig.container)
        if "{container}" not in name and glob.has_magic(container):
            raise self.fail(
                f"{where}.name",
                f"two containers of a pod would be one server: add {{container}} to it, or pick one container "
                f"(container = {container!r} matches several)",
            )
        for key in ("namespace", "pod", "container"):
            if "/" in read.get(key, ""):
                raise self.fail(f"{where}.{key}", "a pattern of one path part: no '/'")
        return PodsConfig(log_dir=log_dir, name=name, **read)

    def containers(self, value: Any, where: str) -> ContainersConfig:
        t = self.table(value, where, keys_of(ContainersConfig))
        read = self.settings(ContainersConfig, t, where)
        root = str(self.file_path(t["root"], f"{where}.root")) if "root" in t else ContainersConfig.root
        name = self.label_format(t, where, ContainersConfig.name, ("container", "id", "image", "project", "service"))
        container = read.get("container", ContainersConfig.container)
        if "{container}" not in name and "{id}" not in name and glob.has_magic(container):
            raise self.fail(
                f"{where}.name",
                f"two containers could be one server: add {{container}} or {{id}} to it, or pick one container "
                f"(container = {container!r} matches several)",
            )
        return ContainersConfig(root=root, name=name, **read)

    def check_unique(
        self, servers: tuple[ServerConfig, ...], follows: tuple[FollowConfig, ...], metrics: MetricsConfig
    ) -> None:
        seen: dict[str, str] = {}
        for kind, items in (("server", servers), ("follow", follows)):
            for i, item in enumerate(items):
                if item.name in seen:
                    raise self.fail(
                        f"{kind}[{i}].name",
                        f"{item.name!r} is already the name of {seen[item.name]} (names are labels)",
                    )
                seen[item.name] = f"{kind}[{i}]"
        ports: dict[int, str] = {}
        logs: dict[Path, str] = {}
        for i, server in enumerate(servers):
            taken: list[tuple[str, int]] = [] if server.command is not None else [(f"server[{i}].port", server.port)]
            written = [(f"server[{i}].log_file", server.log_file)]
            if server.lmcache.launched and server.lmcache.command is None:
                # A second LMCache server on the same ports would not start: share one with launch = false.
                where = f"server[{i}].lmcache"
                taken += [
                    (f"{where}.mp_port", server.lmcache.mp_port),
                    (f"{where}.http_port", server.lmcache.http_port),
                ]
            if server.lmcache.launched:
                written.append((f"server[{i}].lmcache.server_log", server.lmcache_log()))
            for key, port in taken:
                if port in ports:
                    raise self.fail(key, f"{port} is also the port of {ports[port]}")
                if port == metrics.port and _addresses_overlap(metrics.address, server.host):
                    raise self.fail(key, f"{port} is also metrics.port, where kvwatch serves /metrics")
                ports[port] = key
            for key, path in written:
                if path in logs:
                    raise self.fail(key, f"{path} is also the log of {logs[path]}")
                logs[path] = key
        self.check_not_followed(follows, logs)

    def check_not_followed(self, follows: tuple[FollowConfig, ...], logs: dict[Path, str]) -> None:
        """A server's own log followed again would count its lines twice, under two labels."""
        for i, follow in enumerate(follows):
            for place, pattern in follow.placed_paths():
                for path, key in logs.items():
                    if Path(pattern) == path or (glob.has_magic(pattern) and PurePath(path).match(pattern)):
                        raise self.fail(
                            f"follow[{i}].{place}",
                            f"{pattern} names {path}, the log of {key}: its lines are read as that server's already",
                        )


def _addresses_overlap(first: str, second: str) -> bool:
    """Whether two listen addresses take a port on a common interface (every address does, for a wildcard)."""
    wildcards = ("", "0.0.0.0", "::")
    return first in wildcards or second in wildcards or first == second


# An option one of whose words says it holds a secret (``--api-key``, ``--hf-token``): its value is
# never shown.  Whole words only: ``--max-num-batched-tokens`` and ``--tokenizer`` are not secrets.
_SECRET_WORDS = frozenset(("key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"))
HIDDEN = "<hidden>"


def _is_secret_option(arg: str) -> bool:
    return arg.startswith("-") and not _SECRET_WORDS.isdisjoint(re.split(r"[-_]+", arg.lstrip("-").lower()))


def masked_argv(argv: list[str]) -> list[str]:
    """``argv`` with the value of every secret-looking option (``--hf-token X``, ``--api-key=X``) masked."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        name, equals, _value = arg.partition("=")
        if hide_next and not arg.startswith("-"):
            shown.append(HIDDEN)
        elif equals and _is_secret_option(name):
            shown.append(f"{name}={HIDDEN}")
        else:
            shown.append(arg)
        hide_next = not equals and _is_secret_option(arg)
    return shown


def _names_api_key(argv: tuple[str, ...]) -> bool:
    """``--api-key KEY`` or ``--api-key=KEY``: a key on the command line shows in ps and in logs."""
    return any(arg == "--api-key" or arg.startswith("--api-key=") for arg in argv)


def _kind(value: Any) -> str:
    names: dict[type, str] = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _closest(key: str, known: tuple[str, ...]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return matches[0] if matches else None


# -- showing ----------------------------------------------------------------------------


def render(config: Config) -> str:
    """The resolved configuration, as ``kvwatch check`` prints it: secrets named, never read."""
    lines = [f"# {config.path}: valid", "", "[agent]"]
    a = config.agent
    lines += [
        f"state_dir = {_q(a.state_dir)}",
        f"log_dir = {_q(a.log_dir)}",
        f"log_level = {_q(a.log_level)}",
        f"expected_gpus = {a.expected_gpus}" if a.expected_gpus is not None else "# expected_gpus: not set",
        f"poll_interval = {a.poll_interval:g}",
        f"max_line_length = {a.max_line_length}",
        f"reader_nice = {a.reader_nice}",
        f"recent_requests = {a.recent_requests}",
        "",
        "[metrics]",
        f"address = {_q(config.metrics.address)}",
        f"port = {config.metrics.port}",
        f"tls = {'on (' + str(config.metrics.tls.cert_file) + ')' if config.metrics.tls else 'off'}",
        f"basic_auth = {', '.join(f'{u}: {s.describe()}' for u, s in config.metrics.basic_auth.items()) or 'off'}",
    ]
    for server in config.servers:
        lines += ["", "[[server]]", f"name = {_q(server.name)}"]
        lines.append(f"command = {json.dumps(server.shown_argv())}")
        lines.append("environment (added to kvwatch's own, without " + ", ".join(PRIVATE_ENV) + "):")
        for key, value in sorted(server.added_environment().items()):
            shown = value.describe() if isinstance(value, Secret) else value
            lines.append(f"  {key}={shown}")
        lines += [
            f"working_dir = {_q(server.working_dir or Path.cwd())}",
            f"log_file = {_q(server.log_file)}  (mode 0640, rotated at {server.log_max_bytes} bytes, "
            f"{server.log_backups} kept)",
            f"timezone = {_q(server.timezone or 'host')}",
            f"restart = {_q(server.restart)}  (backoff {server.backoff_initial:g}-{server.backoff_max:g} s; "
            f"crash loop: {server.crash_loop_starts} exits in {server.crash_loop_window:g} s)",
            f"stop_timeout = {server.stop_timeout:g}",
            f"health = {_q(server.probe_url() or 'off')} every {server.health_interval:g} s, "
            f"timeout {server.health_timeout:g} s",
            f"stall_after = {server.stall_after:g}  (restart on stall: {'yes' if server.stall_restart else 'no'})",
            f"canary = every {server.canary_interval:g} s, {server.canary_requests} requests"
            if server.canary_interval
            else "canary = off",
        ]
        lines += _render_lmcache(server)
    tr = config.tracing
    lines += ["", "[tracing]", f"enabled = {'true' if tr.enabled else 'false'}"]
    if tr.enabled:
        lines += [
            f"protocol = {_q(tr.protocol or 'from OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else http/protobuf')}",
            f"endpoint = {_q(tr.endpoint or 'from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost')}",
            "headers = "
            + (
                ", ".join(
                    f"{k}: {v.describe() if isinstance(v, Secret) else '<value in the file>'}"
                    for k, v in tr.headers.items()
                )
                or "none"
            ),
            f"sampling_ratio = {tr.resolved_sampling_ratio():g}",
            f"max_open_requests = {tr.max_open_requests}",
            f"idle_timeout = {tr.idle_timeout:g}",
            f"max_queue_size = {tr.max_queue_size}",
        ]
    for pods in config.pods:
        lines += ["", "[[pods]]", f"log_dir = {_q(pods.log_dir)}"]
        lines += [f"{key} = {_q(getattr(pods, key))}" for key in ("namespace", "pod", "container", "name", "start_at")]
        lines.append(f"scan_interval = {pods.scan_interval:g}")
    for table in config.containers:
        lines += ["", "[[containers]]", f"root = {_q(table.root)}"]
        lines += [f"{key} = {_q(getattr(table, key))}" for key in ("container", "image", "name", "start_at")]
        lines.append(f"scan_interval = {table.scan_interval:g}")
    for follow in config.follows:
        lines += ["", "[[follow]]", f"name = {_q(follow.name)}"]
        if follow.journal_unit:
            lines.append(f"journal_unit = {_q(follow.journal_unit)}")
        if follow.journal_match:
            lines.append(f"journal_match = {json.dumps(list(follow.journal_match))}")
        if not follow.journal:
            lines.append(f"paths = {json.dumps(list(follow.paths))}")
        if follow.lmcache_server_log:
            lines.append(f"lmcache_server_log = {_q(follow.lmcache_server_log)}")
        lines.append(f"timezone = {_q(follow.timezone or 'host')}")
        lines.append(f"start_at = {_q(follow.start_at)}")
    return "\n".join(lines) + "\n"


def _render_lmcache(server: ServerConfig) -> list[str]:
    lmcache = server.lmcache
    if not lmcache.enabled:
        return ["lmcache = off"]
    lines = [f"lmcache = {_q(lmcache.mode)}  (connector {lmcache.connector_name})"]
    if lmcache.mode != "mp":
        return lines
    lines.append(f"lmcache server = tcp://{lmcache.mp_host}:{lmcache.mp_port}, http port {lmcache.http_port}")
    launched = server.lmcache_server()
    restart = "vLLM restarted when the server is asked for a worker it no longer holds = " + (
        "yes" if lmcache.unregistered_restart else "no (reported only; unregistered_restart = false)"
    )
    if launched is None:
        lines.append("lmcache server started by kvwatch = no (launch = false: it runs elsewhere)")
        if lmcache.server_log is not None:
            lines.append(restart + " (vLLM's own workers, by the ids its log gives them)")
    else:
        lines += [
            "lmcache server started by kvwatch = yes, before vLLM, stopped after it",
            f"lmcache command = {json.dumps(launched.shown_argv())}",
            f"lmcache health = {_q(launched.probe_url())}",
            restart,
        ]
        lines += [f"  {key}={value}" for key, value in sorted(launched.env.items())]
    log_file = server.lmcache_log()
    lines.append(f"lmcache log_file = {_q(log_file) if log_file else 'not read (server_log not set)'}")
    return lines


def _q(value: object) -> str:
    return json.dumps(str(value))
