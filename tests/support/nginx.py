"""The project's nginx config, run by a real nginx (Debian's package) on 127.0.0.1.

The official image's nginx.conf defines `log_format main` and includes conf.d; this
wrapper does the same (the format's text is the image's, see shared facts), then renders
nginx/templates/default.conf.template as the image's envsubst step would.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from support.net import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATE = ROOT / "nginx" / "templates" / "default.conf.template"
HTML = ROOT / "nginx" / "html"

# nginx/docker-nginx's nginx.conf (facts: nginx official image).
MAIN_FORMAT = (
    "'$remote_addr - $remote_user [$time_local] \"$request\" '\n"
    "                      '$status $body_bytes_sent \"$http_referer\" '\n"
    '                      \'"$http_user_agent" "$http_x_forwarded_for"\''
)

NGINX_CONF = """\
{user}
worker_processes  1;
daemon off;
pid        {prefix}/nginx.pid;
error_log  {prefix}/error.log notice;

events {{
    worker_connections  1024;
}}

http {{
    default_type  application/octet-stream;
    types {{
        text/html  html;
    }}
    log_format  main  {main_format};
    access_log  {prefix}/default-access.log  main;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile        on;
    keepalive_timeout  65;
    include {prefix}/conf.d/*.conf;
}}
"""


def render_template(values: dict[str, str]) -> str:
    """envsubst limited to the given names, like the image's NGINX_ENVSUBST_FILTER."""
    text = TEMPLATE.read_text()
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


class Nginx:
    """nginx serving the project's site from a temporary prefix; stop() ends it."""

    def __init__(
        self,
        binary: str,
        prefix: Path,
        access_log: Path | None = None,
        settings: dict[str, str] | None = None,
        extra_conf: str = "",
    ) -> None:
        """`extra_conf`: more of conf.d (a test's own servers beside the project's)."""
        self.prefix = prefix
        self.port = free_port()
        self.access_log = access_log or prefix / "access.log"
        (prefix / "conf.d").mkdir(parents=True)
        (prefix / "conf.d" / "default.conf").write_text(
            render_template(
                {
                    "NGINX_LISTEN_PORT": f"127.0.0.1:{self.port}",
                    "NGINX_ACCESS_LOG": str(self.access_log),
                    "NGINX_ROOT": str(HTML),
                    # docker-compose.yml's defaults; `settings` stands for a user's .env
                    "NGINX_KINESIS_STREAM": "nginx-accesslog-stream",
                    "NGINX_BUCKET_NAME": "nginx-accesslog",
                    "NGINX_DASHBOARD_PORT": "8081",
                    **(settings or {}),
                }
            )
        )
        if extra_conf:
            (prefix / "conf.d" / "extra.conf").write_text(extra_conf)
        # As root, nginx's workers would run as nobody, who may not read a private checkout.
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, main_format=MAIN_FORMAT))
        self.process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_until_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_until_listening(self, timeout: float = 15) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        if not wait_until(listening, timeout):
            raise RuntimeError("nginx did not listen in time")

    def log_lines(self) -> list[str]:
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(encoding="utf-8").splitlines()

    def reopen_logs(self) -> None:
        """`nginx -s reopen`, as logrotate's postrotate does: a new file at the same path."""
        import signal

        self.process.send_signal(signal.SIGUSR1)
        wait_until(self.access_log.exists, 5, interval=0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stderr.close()


def raw_request(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are (no client library tidies them) and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
