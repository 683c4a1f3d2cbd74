"""A MySQL host's TLS, as its `[mysql.hosts.NAME]` table asks for it: verified, or not at all.

With `ssl_ca` (or a client certificate) set, a probe connects over TLS only, checks the
server's certificate against that CA (the system's store without one) and, unless
`ssl_verify_identity = false`, that the certificate names the host the URL names. A server
offering no TLS, or a certificate that fails either check, fails the connection: the probe
reads `probe_error` and the resources it covers are held (fail closed). pymysql's own
defaults check nothing (no CA: CERT_NONE), hence this module.
"""

from __future__ import annotations

import ssl

import msgspec


class HostTLS(msgspec.Struct, frozen=True):
    """Paths as the config gave them, resolved against the config file's folder."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_identity: bool = True


def client_context(tls: HostTLS) -> ssl.SSLContext:
    """An SSLContext for one host (share it: contexts are made to be). Raises OSError or
    ssl.SSLError on a file that is missing or not PEM."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = tls.verify_identity
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, keyfile=tls.key)
    return context
