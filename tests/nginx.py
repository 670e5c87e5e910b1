"""A real nginx (Debian's package) running the repository's ``nginx_config``, with its ports, upstreams,
certificate and include path substituted for a test run, and a throwaway TLS certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.servers import free_port, wait_for_port

REPOSITORY = Path(__file__).resolve().parent.parent
UPSTREAM_SERVERS = ("    server 127.0.0.1:8000 max_fails=1 fail_timeout=5s;\n"
                    "    server 127.0.0.1:8001 max_fails=1 fail_timeout=5s;\n")


class Nginx:
    def __init__(self, directory: Path, gateways: list[int], admin_port: int) -> None:
        binary = shutil.which("nginx")
        if binary is None:
            raise RuntimeError("nginx is not installed; run `make deps` (apt-get install nginx-light)")
        self.binary = binary
        self.directory = directory
        self.http_port, self.https_port = free_port(), free_port()
        self.base = f"https://127.0.0.1:{self.https_port}"
        self._write_certificate()
        site = (REPOSITORY / "nginx_config").read_text()
        replacements = {
            "    listen 80;\n": f"    listen 127.0.0.1:{self.http_port};\n",
            "    listen 443 ssl;\n": f"    listen 127.0.0.1:{self.https_port} ssl;\n",
            "    listen [::]:80;\n": "", "    listen [::]:443 ssl;\n": "",
            UPSTREAM_SERVERS: "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n"
                                      for port in gateways),
            "127.0.0.1:8100": f"127.0.0.1:{admin_port}",
            "/etc/ssl/modelport/fullchain.pem": str(directory / "cert.pem"),
            "/etc/ssl/modelport/privkey.pem": str(directory / "key.pem"),
            "/etc/nginx/modelport_proxy.conf": str(REPOSITORY / "deploy" / "nginx" / "modelport_proxy.conf"),
        }
        for old, new in replacements.items():
            assert old in site, f"nginx_config no longer contains {old!r}"
            site = site.replace(old, new)
        (directory / "site.conf").write_text(site)
        (directory / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def _write_certificate(self) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", str(self.directory / "key.pem"), "-out", str(self.directory / "cert.pem")],
                       check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([self.binary, "-t", "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")],
                       check=True, capture_output=True)
        self.process = subprocess.Popen([self.binary, "-p", str(self.directory), "-c",
                                         str(self.directory / "nginx.conf")], stderr=subprocess.DEVNULL)
        wait_for_port(self.https_port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
