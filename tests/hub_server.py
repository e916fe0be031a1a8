"""A local stand-in for the Hub's upload API, so push tests run at the HTTP boundary without a network.

It answers the four requests huggingface_hub makes to push a model (repo creation, README metadata
validation, the pre-upload check, the commit) and records every committed file's bytes. Each file is
declared ``regular`` in the pre-upload answer, so contents arrive inline (base64) in the commit body and
no LFS / Xet storage is involved. Point ``HF_ENDPOINT`` at :attr:`HubServer.url` in the pushing process.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}  # repo id -> committed files
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(404, {"error": f"{self.path} is not served by the test Hub"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request['organization']}/{request['name']}"
                    self._reply(200, {"url": f"{hub.url}/{repo}"})
                elif self.path == "/api/validate-yaml":
                    self._reply(200, {})
                elif "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    modes = [{"path": file["path"], "uploadMode": "regular", "shouldIgnore": False} for file in files]
                    self._reply(200, {"files": modes})
                elif "/commit/" in self.path:
                    repo = self.path.removeprefix("/api/models/").split("/commit/")[0]
                    files = {}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    hub.commits[repo] = files
                    oid = "0" * 40
                    self._reply(200, {"commitOid": oid, "commitUrl": f"{hub.url}/{repo}/commit/{oid}"})
                else:
                    self._reply(404, {"error": f"{self.path} is not served by the test Hub"})

        return Handler
