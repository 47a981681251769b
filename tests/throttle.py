"""An HTTP proxy in front of a Chroma server that answers 429 (too many requests) to some requests,
as Chroma 1.x does when its own limits are hit (and as a rate-limiting proxy in front of it does),
and forwards everything else."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class ThrottlingProxy:
    """Refuses the first ``refuse`` requests whose path ends with one of ``paths`` (all of them
    when ``refuse`` is None) with 429 and, when given, a ``Retry-After`` header."""

    def __init__(
        self,
        target_port: int,
        *,
        refuse: int | None,
        paths: tuple[str, ...] = ("/add",),
        retry_after: str | None = None,
    ):
        self.refused = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        upstream = httpx.Client(base_url=f"http://127.0.0.1:{target_port}", timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    throttle = self.path.split("?")[0].endswith(paths) and (refuse is None or proxy.refused < refuse)
                    if throttle:
                        proxy.refused += 1
                    else:
                        proxy.forwarded += 1
                if throttle:
                    message = b'{"error":"RateLimitError","message":"too many requests"}'
                    self.send_response(429)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = upstream.request(self.command, self.path, content=body, headers=headers)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._upstream = upstream

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()
