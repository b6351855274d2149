"""Stand-ins for services no real instance of can run here: Grafana's HTTP API, and the JSON replies of HTTP stand-ins.

No Grafana server can be installed on this machine, so ``FakeGrafana`` answers
the Grafana HTTP API calls kvwatch makes the way Grafana documents them
(folders, dashboards/db, datasources, annotations) and records them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def json_reply(handler, status: int, body) -> None:
    """Answer an http.server request with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


TOKEN = "glsa_test_token"


class FakeGrafana:
    """Folders, dashboards and datasources in memory, behind bearer-token auth; every call recorded."""

    def __init__(self, writable: bool = True) -> None:
        self.calls: list[tuple[str, str, dict | None]] = []
        self.folders: dict[str, dict] = {"general-x": {"uid": "general-x", "title": "Other team"}}
        self.dashboards: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.writable = writable
        grafana = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body) -> None:
                json_reply(self, status, body)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                grafana.calls.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"message": "Unauthorized"})
                if method != "GET" and not grafana.writable:
                    return self._reply(403, {"message": "Access denied"})
                status, reply = grafana.route(method, self.path.split("?")[0], body)
                self._reply(status, reply)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method: str, path: str, body):
        if (method, path) == ("GET", "/api/folders"):
            return 200, [{"id": i, "uid": f["uid"], "title": f["title"]} for i, f in enumerate(self.folders.values())]
        if (method, path) == ("POST", "/api/folders"):
            uid = body.get("uid") or f"f{len(self.folders)}"
            if uid in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[uid] = {"uid": uid, "title": body["title"]}
            return 200, {"id": len(self.folders), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}"}
        if (method, path) == ("POST", "/api/dashboards/db"):
            dashboard = body["dashboard"]
            if dashboard["uid"] in self.dashboards and not body.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            version = self.dashboards.get(dashboard["uid"], {}).get("version", 0) + 1
            self.dashboards[dashboard["uid"]] = {
                "dashboard": dashboard,
                "folderUid": body.get("folderUid"),
                "version": version,
            }
            return 200, {"id": 1, "uid": dashboard["uid"], "status": "success", "version": version, "url": "/d/x"}
        if path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            if method == "GET":
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                return 200, self.datasources[uid]
            if method == "PUT":
                self.datasources[uid] = body
                return 200, {"message": "Datasource updated", "datasource": body}
        if (method, path) == ("POST", "/api/annotations"):
            return 200, {"id": 1, "message": "Annotation added"}
        if (method, path) == ("POST", "/api/datasources"):
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource added", "datasource": body}
        return 404, {"message": "Not found"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
