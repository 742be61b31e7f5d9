"""aprendiz.keys: keys shown once, stored as scrypt hashes, revocable; the CLI that manages them."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from aprendiz.cli import app
from aprendiz.keys import KEY_PATTERN, KeyFile, KeyFileError, KeyFileUnreadable, KeyRing, hash_secret, verify_secret


def test_a_created_key_is_stored_only_as_a_salted_hash(tmp_path):
    keys = KeyFile(tmp_path / "keys.yaml")
    key, record = keys.create("team-a", models=["tiny*"], requests_per_minute=10)
    assert KEY_PATTERN.match(key)
    text = keys.path.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text and key not in text
    assert record.hash.startswith("scrypt$") and record.id in key
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    again = keys.read()
    assert [(k.name, k.models, k.requests_per_minute) for k in again] == [("team-a", ["tiny*"], 10)]


def test_hashes_are_salted_and_verify_only_the_right_secret():
    assert hash_secret("s") != hash_secret("s")
    stored = hash_secret("right")
    assert verify_secret("right", stored)
    assert not verify_secret("wrong", stored)
    assert not verify_secret("right", "md5$whatever")
    assert not verify_secret("right", "garbage")


def test_the_ring_authenticates_good_keys_and_refuses_wrong_or_revoked_ones(tmp_path):
    keys = KeyFile(tmp_path / "keys.yaml")
    key_a, _ = keys.create("team-a")
    key_b, _ = keys.create("team-b")
    ring = KeyRing(keys.read())
    assert ring.authenticate(key_a).name == "team-a"
    assert ring.authenticate(key_a).name == "team-a"  # second time from the verified cache
    assert ring.authenticate(key_b).name == "team-b"
    assert ring.authenticate(key_a[:-1] + ("A" if key_a[-1] != "A" else "B")) is None
    assert ring.authenticate("not-a-key") is None
    assert ring.authenticate(f"apz_{key_a.split('_')[1]}_" + "x" * 43) is None  # right id, wrong secret
    keys.revoke("team-a")
    ring = KeyRing(keys.read())
    assert ring.authenticate(key_a) is None
    assert ring.authenticate(key_b).name == "team-b"


def test_revoking_an_unknown_key_says_so(tmp_path):
    keys = KeyFile(tmp_path / "keys.yaml")
    keys.create("team-a")
    with pytest.raises(KeyFileError, match="no active key"):
        keys.revoke("team-z")


def test_a_broken_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {name: x}\n")
    with pytest.raises(KeyFileError, match="not valid"):
        KeyFile(path).read()


@pytest.mark.parametrize("text", ["keys: null\n", "keys: 3\n", "- a list\n", "keys: [null]\n", "keys:\n  - 7\n"])
def test_a_key_file_of_the_wrong_shape_is_a_clear_error(tmp_path, text):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match="not valid"):
        KeyFile(path).read()


def test_a_key_file_that_cannot_be_read_is_a_clear_error(tmp_path):
    (tmp_path / "keys.yaml").mkdir()  # unreadable as a file, even for root
    with pytest.raises(KeyFileUnreadable, match="cannot be read"):
        KeyFile(tmp_path / "keys.yaml").read()


def test_model_patterns_are_globs(tmp_path):
    _, record = KeyFile(tmp_path / "k.yaml").create("t", models=["breast-*", "tiny-chat"])
    assert record.allows("breast-cancer") and record.allows("tiny-chat")
    assert not record.allows("tiny-chat-2") and not record.allows("es-or-en")


def test_cli_creates_lists_and_revokes_keys(tmp_path):
    runner = CliRunner()
    path = tmp_path / "keys.yaml"
    created = runner.invoke(app, ["keys", "create", "team-a", "-m", "tiny", "--rpm", "5", "--file", str(path)])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert KEY_PATTERN.match(key)
    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    secret = key.split("_", 2)[2]  # the secret may hold "_" itself
    assert "team-a" in listed.stdout and "active" in listed.stdout and secret not in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", "team-a", "--file", str(path)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert "revoked 20" in runner.invoke(app, ["keys", "list", "--file", str(path)]).stdout
    missing = runner.invoke(app, ["keys", "revoke", "nobody", "--file", str(path)])
    assert missing.exit_code == 2 and "no active key" in missing.output
