"""``kvwatch dashboards``: the shipped dashboards and rules, exported to a folder or pushed to Grafana.

The files live in the ``dashboards`` package (installed with kvwatch), so this
works after a plain ``pip install``.  A push goes through Grafana's HTTP API
with grafana-client and is idempotent: the folder is created once (found by
its uid), every dashboard is saved with ``overwrite`` under its fixed uid, and
the optional Prometheus datasource is updated in place when it exists.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from agent import __version__
from agent.commands import EXIT_FAILED, EXIT_OK, CommandError

FOLDER_UID = "kvwatch"
DATASOURCE_UID = "kvwatch-prometheus"


class PushError(Exception):
    """A push that cannot go on; the message says why in the operator's terms."""


def _package():
    return resources.files("dashboards")


def dashboard_names() -> list[str]:
    return sorted(entry.name for entry in _package().iterdir() if entry.name.endswith(".json"))


def load_dashboard(name: str) -> dict:
    return json.loads(_package().joinpath(name).read_text(encoding="utf-8"))


def dashboards() -> Iterator[tuple[str, dict]]:
    for name in dashboard_names():
        yield name, load_dashboard(name)


def with_datasource(dashboard: dict, uid: str | None) -> dict:
    """The dashboard with its ``datasource`` variable preset to ``uid`` (for a manual import)."""
    if uid is None:
        return dashboard
    resolved = copy.deepcopy(dashboard)
    for variable in resolved.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource" and variable.get("name") == "datasource":
            variable["current"] = {"selected": True, "text": uid, "value": uid}
    return resolved


def export(directory: Path, datasource_uid: str | None = None) -> list[Path]:
    """Write the dashboards, the rule file and the provisioning files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in dashboards():
        path = directory / name
        path.write_text(json.dumps(with_datasource(dashboard, datasource_uid), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    rules = directory / "alerts.yml"
    rules.write_text(_package().joinpath("alerts.yml").read_text(encoding="utf-8"), encoding="utf-8")
    written.append(rules)
    provisioning = directory / "provisioning"
    provisioning.mkdir(exist_ok=True)
    for entry in _package().joinpath("provisioning").iterdir():
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as source:
                shutil.copyfile(source, provisioning / entry.name)
            written.append(provisioning / entry.name)
    return written


def prometheus_datasource(url: str, trace_datasource_uid: str | None) -> dict:
    """What Grafana's datasource API takes for a Prometheus with exemplar links to a trace datasource."""
    json_data: dict = {"httpMethod": "POST", "timeInterval": "15s"}
    if trace_datasource_uid:
        json_data["exemplarTraceIdDestinations"] = [{"name": "trace_id", "datasourceUid": trace_datasource_uid}]
    return {
        "uid": DATASOURCE_UID,
        "name": "kvwatch Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "jsonData": json_data,
    }


def push(
    grafana_url: str,
    token: str | None,
    folder: str = "kvwatch",
    prometheus_url: str | None = None,
    trace_datasource_uid: str | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Upload every dashboard (and optionally the datasource); returns what was done, one line each."""
    from grafana_client import GrafanaApi

    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout)
    done = []
    with _translated_errors(grafana_url, folder):
        folder_uid = _ensure_folder(api, folder)
        done.append(f"folder {folder!r} ({folder_uid})")
        datasource_uid = None
        if prometheus_url:
            datasource_uid = _ensure_datasource(api, prometheus_datasource(prometheus_url, trace_datasource_uid))
            done.append(f"datasource {datasource_uid} -> {prometheus_url}")
        for name, dashboard in dashboards():
            body = with_datasource(dashboard, datasource_uid)
            body.pop("id", None)
            result = api.dashboard.update_dashboard(
                {
                    "dashboard": body,
                    "folderUid": folder_uid,
                    "overwrite": True,
                    "message": f"kvwatch {__version__}",
                }
            )
            done.append(f"dashboard {body['uid']} ({name}): {result.get('status', 'saved')}")
    return done


@contextlib.contextmanager
def _translated_errors(grafana_url: str, folder: str | None = None):
    """grafana-client's and niquests' errors as :class:`PushError` lines an operator can act on."""
    import niquests
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    try:
        yield
    except GrafanaUnauthorizedError:
        raise PushError(f"{grafana_url}: Grafana refused the credentials (401): check the token") from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            where = f", or edit permission on folder {folder!r}" if folder else ""
            raise PushError(
                f"{grafana_url}: the token may not write here (403): it needs the Editor role{where}"
            ) from None
        raise PushError(f"{grafana_url}: Grafana answered {exc.status_code}: {exc.message}") from None
    except GrafanaException as exc:
        if exc.status_code == 0:
            raise PushError(f"cannot reach Grafana at {grafana_url}: {exc.message}") from None
        raise PushError(f"{grafana_url}: {exc.message}") from None
    except niquests.exceptions.RequestException as exc:  # refused, DNS, TLS: what the client lets through
        reason = exc.__class__.__name__
        root = exc.__context__ or exc.__cause__
        while root is not None and (root.__context__ or root.__cause__) is not None:
            root = root.__context__ or root.__cause__
        if isinstance(root, OSError) and root.strerror:
            reason = root.strerror
        raise PushError(f"cannot reach Grafana at {grafana_url}: {reason}") from None


def annotate(grafana_url: str, token: str | None, text: str, tags: list[str], when: float, timeout: float = 10.0):
    """One Grafana annotation (organisation-wide, shown on dashboards that display annotations by tag)."""
    from grafana_client import GrafanaApi

    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout)
    with _translated_errors(grafana_url):
        return api.annotations.add_annotation(time_from=int(when * 1000), tags=tags, text=text)


def _ensure_folder(api, title: str) -> str:
    """The uid of the folder titled ``title``, created (with uid ``kvwatch`` for the default) when missing."""
    for existing in api.folder.get_all_folders():
        if existing.get("title") == title:
            return existing["uid"]
    uid = FOLDER_UID if title == "kvwatch" else None
    created = api.folder.create_folder(title, uid=uid)
    return created["uid"]


def _ensure_datasource(api, datasource: dict) -> str:
    from grafana_client.client import GrafanaClientError

    try:
        api.datasource.get_datasource_by_uid(datasource["uid"])
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource(datasource)
    else:
        api.datasource.update_datasource_by_uid(datasource["uid"], datasource)
    return datasource["uid"]


# -- the command ----------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction) -> None:
    boards = commands.add_parser(
        "dashboards",
        help="export the Grafana dashboards and Prometheus rules, or push them to Grafana",
        description="The Grafana dashboards, the Prometheus rule file and the provisioning files kvwatch ships.",
    )
    actions = boards.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="name the shipped files")
    listing.set_defaults(handler=list_files)
    exporting = actions.add_parser(
        "export",
        help="write the dashboards, alerts.yml and provisioning files into DIR",
        description="Write the dashboards (for file provisioning or manual import), alerts.yml and the "
        "provisioning files into DIR.",
    )
    exporting.add_argument("directory", metavar="DIR")
    exporting.add_argument(
        "--datasource",
        metavar="UID",
        help="preset the dashboards' datasource variable to this Prometheus datasource uid (for a manual import)",
    )
    exporting.set_defaults(handler=export_files)
    pushing = actions.add_parser(
        "push",
        help="upload the dashboards to Grafana through its HTTP API (idempotent)",
        description="Create the folder if needed and save every dashboard under its fixed uid, overwriting the "
        "previous version.  The token is read from --token-file or $GRAFANA_TOKEN (a service-account token with "
        "the Editor role); user:password in the URL works too.",
    )
    pushing.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. https://grafana.example:3000")
    pushing.add_argument("--token-file", metavar="FILE", help="file holding the Grafana API token")
    pushing.add_argument("--folder", default="kvwatch", metavar="TITLE", help="dashboard folder (default kvwatch)")
    pushing.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="also create or update the 'kvwatch Prometheus' datasource for this URL and preset the dashboards to it",
    )
    pushing.add_argument(
        "--trace-datasource",
        metavar="UID",
        help="with --prometheus-url: link exemplars (trace_id) to this Tempo or Jaeger datasource",
    )
    pushing.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)")
    pushing.set_defaults(handler=push_all)


def grafana_token(path: str | None) -> str | None:
    """The Grafana token from ``path``, else $GRAFANA_TOKEN (None: none given)."""
    if not path:
        return os.environ.get("GRAFANA_TOKEN") or None
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise CommandError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise CommandError(f"--token-file {path} is empty")
    return token


def list_files(args: argparse.Namespace) -> int:
    for name, dashboard in dashboards():
        print(f"{name}\t{dashboard['uid']}\t{dashboard['title']}")
    print("alerts.yml\tPrometheus recording and alerting rules")
    print("provisioning/dashboards.yaml, provisioning/datasources.yaml\tGrafana provisioning")
    return EXIT_OK


def export_files(args: argparse.Namespace) -> int:
    try:
        written = export(Path(args.directory), args.datasource)
    except OSError as exc:
        raise CommandError(f"cannot write {args.directory}: {exc.strerror or exc}", EXIT_FAILED) from None
    for path in written:
        print(path)
    return EXIT_OK


def push_all(args: argparse.Namespace) -> int:
    token = grafana_token(args.token_file)
    if not args.grafana_url.startswith(("http://", "https://")):
        raise CommandError(f"--grafana-url must be an http:// or https:// URL, got {args.grafana_url!r}")
    try:
        done = push(
            args.grafana_url, token, args.folder, args.prometheus_url, args.trace_datasource, timeout=args.timeout
        )
    except PushError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    for line in done:
        print(line)
    return EXIT_OK
