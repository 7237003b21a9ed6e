"""A private Mosquitto with a TLS listener, certificates made for the test, per-device passwords."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme

from .servers import Mosquitto, find_binary, free_port


@dataclass
class TlsBroker:
    broker: Mosquitto
    tls_port: int
    ca_file: Path            # the CA that signed the broker's certificate
    wrong_ca_file: Path      # a CA that did not: clients using it must refuse the broker
    client_cert: Path        # a client certificate signed by the CA (cert + key in one file)
    passwords: dict[str, str]


def make_tls_broker(mosquitto_factory: Callable[..., Mosquitto], workdir: Path,
                    users: dict[str, str], acl_lines: list[str] | None = None) -> TlsBroker:
    """Start a broker whose TLS listener needs a password per user; plain port stays loopback."""
    passwd_bin = find_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_pem = workdir / "server.pem"
    key_pem = workdir / "server.key"
    server_cert.cert_chain_pems[0].write_to_path(str(server_pem))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(server_pem), append=True)
    server_cert.private_key_pem.write_to_path(str(key_pem))
    wrong_ca_file = workdir / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong_ca_file))
    client = ca.issue_cert("client")
    client_file = workdir / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))

    passwd = workdir / "passwd"
    passwd.write_text("")
    for user, password in users.items():
        subprocess.run([passwd_bin, "-b", str(passwd), user, password], check=True,
                       capture_output=True)
    acl = workdir / "acl"
    acl.write_text("\n".join(acl_lines or ["pattern readwrite #"]) + "\n")
    tls_port = free_port()
    broker = mosquitto_factory(extra_config=[
        f"password_file {passwd}",
        f"acl_file {acl}",
        "allow_anonymous false",
        f"listener {tls_port} 127.0.0.1",
        f"cafile {ca_file}",
        f"certfile {server_pem}",
        f"keyfile {key_pem}",
        "tls_version tlsv1.2",
    ])
    return TlsBroker(broker, tls_port, ca_file, wrong_ca_file, client_file, dict(users))
