"""`fogline cloud gateway init|add|list|revoke` and `fogline gateway key`, as an operator
runs them: files made with the right modes, keys registered, errors that say what to do."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fogline import signing
from fogline.cli import main
from fogline.identity import read_identity


def test_provisioning_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    auth, key = tmp_path / "auth", tmp_path / "cloud.key"
    common = ["--db", db, "--signing-key", str(key), "--broker-dir", str(auth)]
    assert (
        main(["cloud", "gateway", "init", *common[2:], "--password-out", str(tmp_path / "pw")]) == 0
    )
    assert "fogline-cloud:" in (auth / "passwords").read_text()
    assert "pattern write fogline/%u/up/#" in (auth / "acl").read_text()
    assert stat.S_IMODE((tmp_path / "pw").stat().st_mode) == 0o600
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "made the cloud's broker user" in capsys.readouterr().out

    # the gateway makes its own key; only the public half travels
    assert main(["gateway", "key", "--data-dir", str(tmp_path / "gw1")]) == 0
    public = capsys.readouterr().out.strip()
    assert signing.load_public(public)
    out = tmp_path / "gw1" / "identity.json"
    assert (
        main(["cloud", "gateway", "add", "gw1", *common, "--public-key", public, "--out", str(out)])
        == 0
    )
    identity = read_identity(out)
    assert identity.gateway_public_key == public
    assert identity.gateway_private_key is None
    assert identity.cloud_public_key == signing.public_text(signing.read_key(key))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "gw1:$7$" in (auth / "passwords").read_text()
    assert "kill -HUP" in capsys.readouterr().err  # how to make the broker read it

    assert main(["cloud", "gateway", "list", "--db", db]) == 0
    assert "gw1\tkey " in capsys.readouterr().out

    assert main(["cloud", "gateway", "revoke", "gw1", "--db", db, "--broker-dir", str(auth)]) == 0
    assert "gw1:" not in (auth / "passwords").read_text()
    assert main(["cloud", "gateway", "revoke", "gw1", "--db", db]) == 1
    assert "no active key" in capsys.readouterr().err
    # the revoked key stays revoked
    assert main(["cloud", "gateway", "add", "gw1", *common, "--public-key", public]) == 1
    assert "was revoked and stays so" in capsys.readouterr().err


def test_bad_ids_and_keys_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    key = ["--signing-key", str(tmp_path / "k")]
    assert main(["cloud", "gateway", "add", "gw/1", "--db", db, *key]) == 1
    assert "expected 1 to 64 letters" in capsys.readouterr().err
    assert main(["cloud", "gateway", "add", "gw1", "--db", db, *key, "--public-key", "x"]) == 1
    assert "fogline gateway key --data-dir" in capsys.readouterr().err


def test_a_gateway_without_identity_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["gateway", "--pipeline", "pipelines/factory.yaml", "--id", "gw1"]
    root = Path(__file__).resolve().parents[2]
    args[2] = str(root / "pipelines" / "factory.yaml")
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "fogline cloud gateway add" in err
    assert "--insecure-unsigned" in err


def test_a_shared_private_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    signing.load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        signing.read_key(path)


@pytest.mark.parametrize(
    ("reload", "why"),
    [
        ("no-such-reload-command", "could not run (No such file or directory)"),
        ("sh -c 'echo broker not found >&2; exit 3'", "failed (exit 3: broker not found)"),
        ("'unclosed", "could not run (No closing quotation)"),
    ],
)
def test_a_reload_that_fails_says_what_was_done_and_what_is_left(
    reload: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    common = ["--db", db, "--broker-dir", str(tmp_path / "auth"), "--reload", reload]
    key = ["--signing-key", str(tmp_path / "cloud.key"), "--out", str(tmp_path / "gw1.json")]
    assert main(["cloud", "gateway", "add", "gw1", *common, *key]) == 1
    shown = f"--reload {reload!r} {why}; reload the broker by hand: kill -HUP <mosquitto's pid>"
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fogline cloud gateway add: gw1 is added, but its broker password works only once "
        f"the broker reloads: {shown}"
    )
    assert read_identity(tmp_path / "gw1.json").gateway == "gw1"
    assert main(["cloud", "gateway", "revoke", "gw1", *common]) == 1
    out, err = capsys.readouterr()
    assert out == "revoked 1 key(s) of gw1; its batches are refused from now on\n"
    assert err == (
        "fogline cloud gateway revoke: gw1 is revoked, but the broker still lets it connect "
        f"until it reloads: {shown}\n"
    )
    assert "gw1:" not in (tmp_path / "auth" / "passwords").read_text()
