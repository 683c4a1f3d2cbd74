"""A host's TLS keys are checked when the config loads: one line naming the key and the file.

(The probes over TLS, against real servers with right- and wrong-name certificates, are in
tests/test_probe_tls.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from easeoff.feedback.config import ConfigError, load_config
from easeoff.feedback.tls import HostTLS

pytestmark = pytest.mark.unit


def write(tmp_path: Path, host_lines: str) -> Path:
    path = tmp_path / "easeoff.toml"
    path.write_text(
        f'[mysql.hosts.db1]\nurl = "mysql://probe@10.0.0.5"\n{host_lines}\n'
        '[resources."shard:1"]\nhosts = ["db1"]\n[signals.connections]\nhigh = 0.9\nlow = 0.8\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ca.pem, and client.pem/client.key (self-signed: it only has to load)."""
    folder = tmp_path_factory.mktemp("pem")
    for name in ("ca", "client"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.pem"), "-days", "1",
             "-subj", f"/CN={name}"],
            check=True, capture_output=True,
        )  # fmt: skip
    return folder


def test_no_tls_keys_leave_the_host_as_before(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).hosts["db1"].tls is None


def test_tls_keys_load_with_identity_checked_by_default(tmp_path: Path, pem: Path) -> None:
    lines = f'ssl_ca = "{pem / "ca.pem"}"\nssl_cert = "{pem / "client.pem"}"\nssl_key = "{pem / "client.key"}"'
    host = load_config(write(tmp_path, lines)).hosts["db1"]
    assert host.tls == HostTLS(str(pem / "ca.pem"), str(pem / "client.pem"), str(pem / "client.key"), True)
    relaxed = load_config(write(tmp_path, f'ssl_ca = "{pem / "ca.pem"}"\nssl_verify_identity = false'))
    assert relaxed.hosts["db1"].tls == HostTLS(ca=str(pem / "ca.pem"), verify_identity=False)


def test_a_relative_path_is_read_from_the_config_files_folder(tmp_path: Path, pem: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes((pem / "ca.pem").read_bytes())
    host = load_config(write(tmp_path, 'ssl_ca = "certs/ca.pem"')).hosts["db1"]
    assert host.tls is not None and host.tls.ca == str(tmp_path / "certs" / "ca.pem")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('ssl_ca = "/no/such/ca.pem"', "mysql.hosts.db1.ssl_ca: no such file '/no/such/ca.pem'"),
        ('ssl_ca = "{pem}/ca.pem"\nssl_cert = "/no/cert.pem"', "mysql.hosts.db1.ssl_cert: no such file '/no/cert.pem'"),
        ('ssl_ca = "{pem}/ca.pem"\nssl_key = "{pem}/client.key"', "mysql.hosts.db1.ssl_key: needs ssl_cert"),
        ("ssl_verify_identity = true", "mysql.hosts.db1.ssl_verify_identity: needs ssl_ca (or ssl_cert)"),
        ('ssl_ca = "{pem}/ca.pem"\nssl_verify_identity = "yes"', "ssl_verify_identity: expected true or false"),
        ('ssl_ca = "{pem}/client.key"', "mysql.hosts.db1.ssl_ca: cannot load"),
        ('ssl_ca = "{pem}/ca.pem"\nssl_cert = "{pem}/ca.key"', "mysql.hosts.db1.ssl_cert: cannot load"),
        ("ssl_capath = 1", "mysql.hosts.db1.ssl_capath: unknown key"),
    ],
)
def test_a_bad_tls_key_is_one_line_naming_it(tmp_path: Path, pem: Path, lines: str, message: str) -> None:
    path = write(tmp_path, lines.format(pem=pem))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text
