"""The docs-gateway command line, run as a real process (``python -m gateway``)."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway import cli
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 40
GOOD = """\
server:
  listen: "127.0.0.1:{port}"
  public_url: "https://docs.example.com"
upstream:
  url: "http://127.0.0.1:{upstream_port}"
  connect_timeout: 500ms
handshake:
  method: jwt
  jwt:
    login_urls: [{{name: Dashboard, url: "https://dash.example.com/docs-login"}}]
    public_keys: ["keys/login.pub.pem"]
session:
  secrets: ["${{GATEWAY_SESSION_SECRET}}"]
access:
  rules: [{{path: "/admin/**", groups: [admin]}}]
"""


def gateway(*args: str, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway ARGS`` from the repository root."""
    environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    environ["GATEWAY_SESSION_SECRET"] = SECRET
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid jwt configuration with its public key file next to it."""
    keys = tmp_path / "keys"
    keys.mkdir()
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    (keys / "login.pub.pem").write_bytes(public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD.format(port=free_port(), upstream_port=free_port()))
    return path


def test_check_good_file_prints_a_summary(config_file: Path) -> None:
    result = gateway("check", "-c", str(config_file))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == f"{config_file}: OK"
    for text in ("https://docs.example.com", "mode        authenticate", "jwt (1 login URL",
                 "cookie store", "2 public globs, 1 rule", "header X-Gateway-Assertion, EdDSA"):
        assert text in out
    assert ("warning: identity.assertion.private_key: not set; an ephemeral key is made at each "
            "start, so upstreams must refetch jwks.json after a restart") in out.splitlines()
    assert len(out.splitlines()) <= 24


def test_check_ends_quietly_when_its_reader_leaves(config_file: Path) -> None:
    environ = {**os.environ, "GATEWAY_SESSION_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    environ.pop("GATEWAY_CONFIG", None)
    # As "docs-gateway check | head -0": the reader is gone before anything is written.
    read, write = os.pipe()
    os.close(read)
    with subprocess.Popen([sys.executable, "-m", "gateway", "check", "-c", str(config_file)],
                          cwd=ROOT, env=environ, stdout=write, stderr=subprocess.PIPE) as child:
        os.close(write)
        _, errors = child.communicate(timeout=60)
    assert errors == b"", errors.decode()
    assert child.returncode == 1


def test_version_is_printed() -> None:
    result = gateway("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("docs-gateway ") and result.stdout.strip() != "docs-gateway"


def test_check_uses_gateway_config_then_the_working_folder(config_file: Path) -> None:
    assert gateway("check", env={"GATEWAY_CONFIG": str(config_file)}).returncode == 0
    assert gateway("check", cwd=config_file.parent).returncode == 0


def test_check_bad_file_prints_one_line_per_problem(config_file: Path) -> None:
    text = config_file.read_text().replace("method: jwt", "method: jwt\n  methd: oauth")
    config_file.write_text(text.replace("public_url:", "workers: on\n  public_url:"))
    result = gateway("check", "-c", str(config_file), env={"GATEWAY_SESSION_SECRET": "short"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'server.workers: must be a whole number, not the boolean true (YAML reads on/off/yes/no '
        'as booleans; quote it) (or "auto": one per CPU)',
        "handshake.methd: unknown key; did you mean 'method'?",
        "session.secrets[0]: is 5 bytes; use at least 32",
    ]


def test_check_missing_file_is_one_line(tmp_path: Path) -> None:
    result = gateway("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope.yaml'}: file not found (give one with -c FILE or $GATEWAY_CONFIG)"]
    assert "Traceback" not in result.stderr


def test_verbose_before_or_after_the_command(config_file: Path) -> None:
    assert gateway("--verbose", "check", "-c", str(config_file)).returncode == 0
    assert gateway("check", "-c", str(config_file), "--verbose").returncode == 0


def test_run_with_a_bad_file_exits_2(config_file: Path) -> None:
    result = gateway("run", "-c", str(config_file), env={"GATEWAY_SESSION_SECRET": ""})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["session.secrets[0]: is 0 bytes; use at least 32"]


def test_run_with_unreachable_upstream_is_one_line(config_file: Path) -> None:
    result = gateway("run", "-c", str(config_file))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("docs-gateway: ") and "upstream" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("alg", "kind"), [
    ("EdDSA", ed25519.Ed25519PrivateKey),
    ("ES256", ec.EllipticCurvePrivateKey),
    ("RS256", rsa.RSAPrivateKey),
])
def test_keys_generate(tmp_path: Path, alg: str, kind: type) -> None:
    prefix = tmp_path / "new" / "folder" / "gateway"
    result = gateway("keys", "generate", "--alg", alg, "--out", str(prefix))
    assert result.returncode == 0, result.stderr
    private_path, public_path = Path(f"{prefix}.pem"), Path(f"{prefix}.pub.pem")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    public = serialization.load_pem_public_key(public_path.read_bytes())
    assert isinstance(private, kind)
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert private.public_key().public_bytes(*spki) == public.public_bytes(*spki)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        assert private.curve.name == "secp256r1"
    if isinstance(private, rsa.RSAPrivateKey):
        assert private.key_size >= 2048


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    prefix = str(tmp_path / "gateway")
    assert gateway("keys", "generate", "--alg", "EdDSA", "--out", prefix).returncode == 0
    before = Path(f"{prefix}.pem").read_bytes()
    result = gateway("keys", "generate", "--alg", "ES256", "--out", prefix)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"docs-gateway: {prefix}.pem already exists; pass --force to replace it"]
    assert Path(f"{prefix}.pem").read_bytes() == before


def test_keys_generate_force_replaces_and_keeps_the_key_private(tmp_path: Path) -> None:
    prefix = tmp_path / "gateway"
    Path(f"{prefix}.pem").write_text("old")
    Path(f"{prefix}.pem").chmod(0o644)
    result = gateway("keys", "generate", "--alg", "EdDSA", "--out", str(prefix), "--force")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(Path(f"{prefix}.pem").stat().st_mode) == 0o600
    assert Path(f"{prefix}.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_keys_generate_bad_algorithm_is_a_usage_error(tmp_path: Path) -> None:
    result = gateway("keys", "generate", "--alg", "HS256", "--out", str(tmp_path / "k"))
    assert result.returncode == 2
    assert "invalid choice: 'HS256'" in result.stderr
    assert not list(tmp_path.iterdir())


def test_example_file_validates_once_its_keys_exist(tmp_path: Path) -> None:
    shutil.copy(ROOT / "gateway.yaml", tmp_path / "gateway.yaml")
    before = gateway("check", cwd=tmp_path)
    assert before.returncode == 2
    assert "Traceback" not in before.stderr
    for name in ("login", "gateway"):
        out = str(tmp_path / "keys" / name)
        assert gateway("keys", "generate", "--alg", "EdDSA", "--out", out).returncode == 0
    result = gateway("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "header X-Gateway-Assertion, EdDSA, ttl 1m, 1 key file" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = gateway("serve")
    assert result.returncode == 2
    assert "invalid choice: 'serve'" in result.stderr


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str,
                main: Callable[[argparse.Namespace], int]) -> None:
    """Stand in for a command module that is written elsewhere."""
    module = types.ModuleType(name)
    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)


def test_token_arguments_reach_the_token_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    def main(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    fake_module(monkeypatch, "gateway.handshakes.jwt_token", main)
    status = cli.main(["token", "--key", "keys/login.pem", "--sub", "u1", "--host", "docs.test",
                       "--groups", "admin, beta", "--content", '{"name": "Ada"}', "--ttl", "2m"])
    assert status == 0
    args = seen[0]
    assert (args.key, args.sub, args.host) == ("keys/login.pem", "u1", "docs.test")
    assert (args.groups, args.content, args.ttl) == (["admin", "beta"], {"name": "Ada"}, 120.0)
    assert cli.main(["token", "--key", "k.pem"]) == 0
    assert (seen[1].groups, seen[1].content, seen[1].ttl, seen[1].sub) == ([], {}, 10.0, None)


def test_a_state_that_begins_with_a_dash_reaches_the_token_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    def main(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    fake_module(monkeypatch, "gateway.handshakes.jwt_token", main)
    # A base64url state begins with "-" one time in 64.
    assert cli.main(["token", "--key", "k.pem", "--state", "-Xy_z", "--sub", "u1"]) == 0
    assert (seen[0].state, seen[0].sub) == ("-Xy_z", "u1")
    assert cli.main(["token", "--key", "k.pem", "--state=--a"]) == 0
    assert seen[1].state == "--a"


def test_token_bad_ttl_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "--key", "k.pem", "--ttl", "10"]) == 2
    assert "argument --ttl: '10' is not a duration" in capsys.readouterr().err


def test_demo_port_reaches_the_demo_command(monkeypatch: pytest.MonkeyPatch) -> None:
    ports: list[int] = []

    def main(args: argparse.Namespace) -> int:
        ports.append(args.port)
        return 0

    fake_module(monkeypatch, "gateway.demo", main)
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--port", "9999"]) == 0
    assert ports == [8080, 9999]


def test_missing_command_module_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "gateway.demo", None)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("docs-gateway: the demo command is not available")


def test_unexpected_error_is_one_line_unless_verbose(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def main(args: argparse.Namespace) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    fake_module(monkeypatch, "gateway.demo", main)
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err == "docs-gateway: error: disk on fire\n"
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(["demo", "--verbose"])


def test_interrupt_exits_130_quietly(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    def main(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    fake_module(monkeypatch, "gateway.demo", main)
    assert cli.main(["demo"]) == 130
    assert capsys.readouterr().err == ""
