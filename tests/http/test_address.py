"""`--http [HOST:]PORT` and `--http-token-file`: what is listened on, and what is refused before
any model loads."""

from __future__ import annotations

import pytest

from bridge.http.server import HttpConfig, parse_address
from sa3core.errors import Sa3Error


@pytest.mark.parametrize(
    ("text", "hosts", "port", "local"),
    [
        ("8006", ["127.0.0.1", "::1"], 8006, True),
        ("localhost:8006", ["127.0.0.1", "::1"], 8006, True),
        ("127.0.0.1:0", ["127.0.0.1", "::1"], 0, True),
        ("[::1]:9000", ["::1"], 9000, True),
        ("127.0.0.2:9000", ["127.0.0.2"], 9000, True),
        ("0.0.0.0:8006", ["0.0.0.0"], 8006, False),
        ("[::]:8006", ["::"], 8006, False),
        ("192.168.1.20:8006", ["192.168.1.20"], 8006, False),
    ],
)
def test_addresses(text, hosts, port, local):
    assert parse_address(text) == (hosts, port, local)


@pytest.mark.parametrize(("text", "named"), [("http", "port"), ("70000", "65535"), ("studio.local:8006", "address")])
def test_bad_addresses_are_one_line_errors(text, named):
    with pytest.raises(Sa3Error, match=named) as err:
        parse_address(text)
    assert "\n" not in str(err.value)


def test_off_loopback_needs_a_readable_token_of_sixteen_characters(tmp_path):
    with pytest.raises(Sa3Error, match="--http-token-file"):
        HttpConfig("0.0.0.0:8006").check()
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(Sa3Error, match="16"):
        HttpConfig("0.0.0.0:8006", str(tmp_path / "short")).check()
    with pytest.raises(Sa3Error, match="cannot be read"):
        HttpConfig("0.0.0.0:8006", str(tmp_path / "missing")).check()
    (tmp_path / "token").write_text("x" * 24 + "\nsecond line ignored\n")
    assert HttpConfig("0.0.0.0:8006", str(tmp_path / "token")).check() == "x" * 24
    assert HttpConfig("8006").check() is None
    from bridge.daemon import DaemonConfig

    with pytest.raises(Sa3Error, match="--lora-dir .* is not a folder"):  # the folder is the server's, both sides
        DaemonConfig(lora_dir=str(tmp_path / "no-such-folder")).check()
