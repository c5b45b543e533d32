"""webhooks.connect: a connection to the checked address speaks TLS to the name — SNI, the
certificate checked against it, ``Host`` — against a real TLS server on loopback."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from webhooks.connect import transport

x509 = pytest.importorskip("cryptography.x509")  # comes with moto, a test dependency


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name ``name`` (its own CA) and its key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.contextmanager
def tls_receiver(cert: tuple[Path, Path], seen: dict[str, str]) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 answering one request 204; records SNI and Host."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    context.sni_callback = lambda sock, name, ctx: seen.__setitem__("sni", str(name))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                request = read_request(tls)
                host = [x for x in request.split("\r\n") if x.lower().startswith("host:")]
                seen["host"] = host[0].split(":", 1)[1].strip() if host else ""
                tls.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def read_request(tls: ssl.SSLSocket) -> str:
    """Headers and body, read whole: closing with unread bytes would reset the connection."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := tls.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")]
    wanted = int(lengths[0].split(b":", 1)[1]) if lengths else 0
    while len(body) < wanted and (chunk := tls.recv(65536)):
        body += chunk
    return head.decode("latin-1")


def post(port: int, trusted: Path) -> httpx.Response:
    """POST https://hooks.example:<port>/ through the checked address 127.0.0.1."""
    verify = ssl.create_default_context(cafile=str(trusted))
    pinned = transport("hooks.example", ["127.0.0.1"], 10, verify=verify)
    with httpx.Client(transport=pinned, trust_env=False) as client:
        return client.post(f"https://hooks.example:{port}/hook", content=b"{}")


def test_tls_to_the_checked_address_names_the_host_and_checks_its_certificate(tmp_path: Path):
    cert = certificate(tmp_path, "hooks.example")
    seen: dict[str, str] = {}
    with tls_receiver(cert, seen) as port:
        response = post(port, cert[0])
    assert response.status_code == 204
    assert seen == {"sni": "hooks.example", "host": f"hooks.example:{port}"}


def test_a_certificate_for_another_name_is_refused(tmp_path: Path):
    cert = certificate(tmp_path, "other.example")
    with tls_receiver(cert, {}) as port, pytest.raises(httpx.ConnectError, match="certificate"):
        post(port, cert[0])
