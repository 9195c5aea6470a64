"""The web server: static page files and read-only JSON, on the standard library's threading server.

Safe by default: it answers GET and HEAD only, serves a fixed list of files from `static/`, sends a
Content-Security-Policy that allows scripts from this server alone (the page holds no inline script and
builds every piece of archive text with `textContent`), and refuses a request whose Host header is not
the address it serves, so a web page elsewhere cannot reach it through DNS rebinding.
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from evolve.errors import UserError
from evolve.ui import queries
from evolve.ui.queries import QueryError, RunSource
from evolve.ui.transcripts import Transcripts

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".md": "text/plain; charset=utf-8",
                 ".png": "image/png", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def static_files() -> dict[str, Path]:
    """URL path -> file, for every file shipped under static/ (nothing else is ever served)."""
    files = {}
    for path in STATIC.rglob("*"):
        if path.is_file() and path.suffix in CONTENT_TYPES:
            files["/static/" + path.relative_to(STATIC).as_posix()] = path
    files["/"] = STATIC / "index.html"
    return files


class Api:
    """Answers `/api/...` paths from the runs' archives; each call opens and closes its own connection."""

    def __init__(self, runs: list[RunSource]) -> None:
        self.runs = runs
        self.transcripts = Transcripts()

    def handle(self, parts: list[str], params: dict[str, str]) -> Any:
        if parts == ["runs"]:
            return [self._with(run, lambda c, r=run: queries.summary(c, r)) for run in self.runs]
        if len(parts) < 3 or parts[0] != "run":
            raise LookupError("no such endpoint")
        try:
            run = self.runs[int(parts[1])]
        except (ValueError, IndexError):
            raise LookupError(f"no run number {parts[1][:20]}") from None
        what, rest = parts[2], parts[3:]
        if what == "summary":
            return self._with(run, lambda c: queries.summary(c, run))
        if what == "changes":
            return self._with(run, lambda c: {"token": queries.change_token(c)})
        if what == "programs":
            query = queries.TableQuery.from_params(params)
            return self._with(run, lambda c: queries.programs_page(c, run, query))
        if what == "choices":
            return self._with(run, queries.choices)
        if what == "program" and len(rest) == 1:
            return self._with(run, lambda c: queries.program(c, rest[0]))
        if what == "transcript" and len(rest) == 1:
            pid = self._with(run, lambda c: queries.resolve(c, rest[0]))
            return {"conversation": self.transcripts.conversation(run.run_dir, pid)}
        if what == "diff":
            return self._diff(run, params)
        if what == "tree":
            limit = _int(params.get("limit", "1500"), "limit", 10, 20_000)
            return self._with(run, lambda c: queries.tree(c, limit))
        if what == "islands":
            return self._with(run, queries.islands_over_time)
        if what == "pareto":
            runtime = params.get("runtime") or run.runtime_key
            balance = params.get("balance") or run.balance_key
            return self._with(run, lambda c: queries.pareto(c, run, runtime, balance))
        if what == "curve":
            return self._with(run, queries.best_curve)
        raise LookupError("no such endpoint")

    def _diff(self, run: RunSource, params: dict[str, str]) -> Any:
        """`b` (in this run) against `a` (in run `arun`, this one by default; its parent when omitted)."""
        context = _int(params.get("context", "3"), "context", -1, 1000)
        b_id, b_code = self._with(run, lambda c: queries.code_of(c, params.get("b", "")))
        other = self.runs[_int(params.get("arun", ""), "arun", 0, len(self.runs) - 1)] if params.get("arun") else run
        a_text = params.get("a", "")
        if not a_text:
            parent = self._with(run, lambda c: c.execute("SELECT parent_id FROM programs WHERE id = ?",
                                                         (b_id,)).fetchone()[0])
            if parent is None:
                return {"a": None, "b": b_id, **queries.diff("", b_code, context), "note": "the seed has no parent"}
            a_text = parent
        a_id, a_code = self._with(other, lambda c: queries.code_of(c, a_text))
        return {"a": a_id, "b": b_id, **queries.diff(a_code, b_code, context)}

    @staticmethod
    def _with(run: RunSource, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = run.connect()
        try:
            return fn(conn)
        finally:
            conn.close()


def _finite(data: Any) -> Any:
    """`data` with every NaN or infinity replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _int(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number, got {text[:30]!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}")
    return value


class Handler(BaseHTTPRequestHandler):
    server: "UiServer"
    protocol_version = "HTTP/1.1"
    server_version = "eplb-evolve-ui"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        try:
            self._write(status, body, content_type, cache)
        except ConnectionError:  # the page went away (reload, closed tab) before the answer: nothing to do
            self.close_connection = True

    def _write(self, status: int, body: bytes, content_type: str, cache: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        try:
            body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:  # a NaN or infinity deep in stored data: JSON has none, send null
            body = json.dumps(_finite(data), allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        if not self.server.check_host:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOCAL_HOSTS

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if not self._host_ok():
            self._json(HTTPStatus.FORBIDDEN, {"error": "this server answers requests for 127.0.0.1 or localhost only"})
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path.startswith("/api/"):
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            parts = [p for p in path[len("/api/"):].split("/") if p]
            try:
                status, data = HTTPStatus.OK, self.server.api.handle(parts, params)
            except (QueryError, UserError) as exc:
                status, data = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
            except LookupError as exc:
                status, data = HTTPStatus.NOT_FOUND, {"error": str(exc).strip("'\"")}
            except sqlite3.Error as exc:
                status, data = HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"archive not readable right now ({exc}); "
                                                                         "retrying"}
            except Exception as exc:  # a bug here must not drop the connection without a word
                status, data = HTTPStatus.INTERNAL_SERVER_ERROR, {
                    "error": f"the server failed on {path}: {type(exc).__name__}: {exc}"}
            self._json(status, data)
            return
        file = self.server.files.get(path)
        if file is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        self._send(HTTPStatus.OK, file.read_bytes(), CONTENT_TYPES[file.suffix], cache=path != "/")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # read-only: nothing else is answered


class UiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, runs: list[RunSource], host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self.api = Api(runs)
        self.files = static_files()
        self.verbose = verbose
        self.check_host = host in LOCAL_HOSTS
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


def start_in_thread(runs: list[RunSource], host: str = "127.0.0.1", port: int = 0) -> UiServer:
    """A running server on a background thread (tests, notebooks); stop with `.shutdown()`."""
    server = UiServer(runs, host, port)
    threading.Thread(target=server.serve_forever, name="eplb-evolve-ui", daemon=True).start()
    return server


def serve(runs: list[RunSource], host: str, port: int, open_browser: bool = False) -> int:
    """Serve until Ctrl-C; prints the address first."""
    try:
        server = UiServer(runs, host, port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                        "choose another with --port (0 picks a free one)") from None
    print(f"serving {len(runs)} run{'s' if len(runs) != 1 else ''} at {server.url}  (Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        if not webbrowser.open(server.url):
            print(f"no browser could be started here; open {server.url} yourself", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
