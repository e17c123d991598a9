"""A tiny Prometheus exporter for tests: gauges whose values the test sets."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsExporter:
    """Serves ``/metrics`` in the Prometheus text format on a free loopback port.

    >>> with MetricsExporter() as exporter:
    ...     exporter.set("requests_in_flight", 3, route="/api")
    """

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-exporter", daemon=True
        )

    @property
    def address(self) -> str:
        """``host:port``, as a Prometheus static target."""
        return f"127.0.0.1:{self._server.server_port}"

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set the gauge ``name`` with these labels to ``value``."""
        with self._lock:
            self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)

    def remove(self, name: str, **labels: str) -> None:
        """Stop exposing one series (or, with no labels, every series of ``name``)."""
        with self._lock:
            if labels:
                self._values.get(name, {}).pop(tuple(sorted(labels.items())), None)
            else:
                self._values.pop(name, None)

    def render(self) -> str:
        lines = []
        with self._lock:
            for name, series in sorted(self._values.items()):
                lines.append(f"# TYPE {name} gauge")
                for labels, value in sorted(series.items()):
                    rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
                    lines.append(
                        f"{name}{{{rendered}}} {value!r}" if rendered else f"{name} {value!r}"
                    )
        return "\n".join(lines) + "\n"

    def start(self) -> MetricsExporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsExporter:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
