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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scrypts(monkeypatch) -> list[str]:
    """The secrets scrypt is run on (verify_secret, as the ring calls it)."""
    from aprendiz import keys as keys_module

    calls, real = [], keys_module.verify_secret
    monkeypatch.setattr(keys_module, "verify_secret", lambda secret, stored: calls.append(secret) or real(secret, stored))
    return calls


def test_a_wrong_secret_seen_before_is_refused_without_scrypt(tmp_path, monkeypatch):
    keys = KeyFile(tmp_path / "keys.yaml")
    key, record = keys.create("team-a")
    ring = KeyRing(keys.read(), clock=Clock())
    scrypts = _scrypts(monkeypatch)
    wrong = f"apz_{record.id}_" + "x" * 43
    assert ring.authenticate(wrong) is None
    assert ring.known(wrong) == (True, None)  # answered on the event loop, as a refusal
    assert ring.authenticate(wrong) is None
    assert len(scrypts) == 1
    assert ring.authenticate(key).name == "team-a"


def test_failed_secrets_for_one_key_id_are_limited_and_a_verified_key_keeps_working(tmp_path, monkeypatch):
    """After MAX_FAILURES wrong secrets in FAILURE_WINDOW_S, a key id's next new secrets are refused
    without scrypt until the oldest failure leaves the window; a key verified before is unaffected."""
    from aprendiz.keys import FAILURE_WINDOW_S, MAX_FAILURES, KeyLockedOut

    keys = KeyFile(tmp_path / "keys.yaml")
    key, record = keys.create("team-a")
    other, _ = keys.create("team-b")
    clock = Clock()
    ring = KeyRing(keys.read(), clock=clock)
    assert ring.authenticate(key).name == "team-a"
    scrypts = _scrypts(monkeypatch)
    for i in range(MAX_FAILURES):
        assert ring.authenticate(f"apz_{record.id}_" + f"{i:x>43}") is None
        clock.now += 1
    with pytest.raises(KeyLockedOut) as locked:
        ring.authenticate(f"apz_{record.id}_" + "y" * 43)
    assert 0 < locked.value.retry_after_s <= FAILURE_WINDOW_S
    assert len(scrypts) == MAX_FAILURES
    assert ring.authenticate(key).name == "team-a"  # verified before the attack: a lookup
    assert ring.authenticate(other).name == "team-b"  # another key id is not limited
    clock.now += locked.value.retry_after_s
    assert ring.authenticate(f"apz_{record.id}_" + "z" * 43) is None  # checked again: one failure left the window
    assert len(scrypts) == MAX_FAILURES + 2


def test_the_failed_secrets_remembered_are_bounded(tmp_path, monkeypatch):
    from aprendiz import keys as keys_module

    monkeypatch.setattr(keys_module, "FAILED_REMEMBERED", 3)
    monkeypatch.setattr(keys_module, "MAX_FAILURES", 100)
    keys = KeyFile(tmp_path / "keys.yaml")
    _, record = keys.create("team-a")
    ring = KeyRing(keys.read(), clock=Clock())
    wrong = [f"apz_{record.id}_" + f"{i:w>43}" for i in range(5)]
    for w in wrong:
        ring.authenticate(w)
    assert [ring.known(w)[0] for w in wrong] == [False, False, True, True, True]


def test_feedback_is_off_unless_asked_for(tmp_path):
    keys = KeyFile(tmp_path / "keys.yaml")
    keys.create("predicts")
    keys.create("teaches", feedback=True)
    assert {k.name: k.feedback for k in keys.read()} == {"predicts": False, "teaches": True}


def test_keys_created_and_revoked_at_once_are_all_kept(tmp_path):
    """create and revoke read, change and write the whole file: concurrent runs (several
    `aprendiz keys create` at once) must not lose each other's keys."""
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "keys.yaml"
    KeyFile(path).create("doomed")
    with ProcessPoolExecutor(max_workers=6) as pool:
        jobs = [pool.submit(_create, str(path), f"team-{i}") for i in range(10)]
        jobs.append(pool.submit(_revoke, str(path), "doomed"))
        [job.result() for job in jobs]
    keys = KeyFile(path).read()
    assert sorted(k.name for k in keys) == sorted(["doomed"] + [f"team-{i}" for i in range(10)])
    assert [k.name for k in keys if not k.active] == ["doomed"]


def _create(path: str, name: str) -> None:
    KeyFile(path).create(name)


def _revoke(path: str, name: str) -> None:
    KeyFile(path).revoke(name)


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
    teaching = runner.invoke(app, ["keys", "create", "team-b", "--feedback", "--file", str(path)])
    assert teaching.exit_code == 0 and "feedback allowed" in teaching.stderr
    assert [k.feedback for k in KeyFile(path).read()] == [False, True]
    assert "feedback" in runner.invoke(app, ["keys", "list", "--file", str(path)]).stdout
