"""dashboard.py's HTTP server in the test's process, for its own tests and start.sh's."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request

from support.query_data import QUERY

if str(QUERY) not in sys.path:
    sys.path.insert(0, str(QUERY))


class Server:
    """dashboard.py's server in this process on 127.0.0.1:<free port>."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import dashboard

        self.app = app
        self.httpd = dashboard.make_server(app, host, 0)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.app.store.close()
