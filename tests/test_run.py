"""`./run test` and `./run build` install Debian's Node.js and npm when missing, as the README says.

The script runs from a copy in a temporary folder, with a PATH that holds only what it needs and a
stand-in `apt-get` that writes down what it was asked: nothing is installed on this machine.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("bash", "dirname", "sha256sum", "cut", "rm", "touch", "cmp", "cp", "grep", "cat")


def _stand_in(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)


def _checkout(tmp_path: Path, uid: int) -> tuple[Path, dict[str, str]]:
    """A copy of `run` whose virtualenv counts as set up, and a PATH without node and npm."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "run", checkout / "run")
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    (checkout / "pyproject.toml").write_bytes(pyproject)
    digest = hashlib.sha256(pyproject).hexdigest()[:16]
    (checkout / ".venv" / f".stamp-test-{digest}").touch()
    _stand_in(checkout / ".venv" / "bin" / "python", "exit 0")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    _stand_in(bin_dir / "id", f"echo {uid}")
    _stand_in(bin_dir / "php", "exit 0")  # present: the tests below miss one tool at a time
    # The stand-in apt-get records its arguments and fails the install, so the script stops there.
    log = tmp_path / "apt-get.log"
    _stand_in(bin_dir / "apt-get", f'echo "$@" >> {log}\n[ "$1" = update ]')
    return checkout, {"PATH": str(bin_dir), "HOME": str(tmp_path), "LC_ALL": "C"}


@pytest.mark.parametrize("command", ["test", "build"])
def test_missing_node_and_npm_are_installed_from_debian(tmp_path: Path, command: str) -> None:
    checkout, env = _checkout(tmp_path, uid=0)
    out = subprocess.run(
        [env["PATH"] + "/bash", str(checkout / "run"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tmp_path / "apt-get.log").read_text(encoding="utf-8").splitlines()
    assert calls[-2:] == ["update -qq", "install -y -qq nodejs npm"], (calls, out.stderr)
    assert "Installing Debian's nodejs npm" in out.stdout
    assert out.returncode != 0  # the stand-in installed nothing: the script stops there


def test_missing_node_without_root_says_how_to_install_it(tmp_path: Path) -> None:
    checkout, env = _checkout(tmp_path, uid=1000)
    out = subprocess.run(
        [env["PATH"] + "/bash", str(checkout / "run"), "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "run 'sudo apt-get install -y nodejs npm'" in out.stderr
    assert not (tmp_path / "apt-get.log").exists()


def test_missing_nginx_is_installed_from_debian_for_the_proxy_test(tmp_path: Path) -> None:
    """e2e/test_proxy.py runs nginx: `./run test` installs Debian's when the binary is missing."""
    checkout, env = _checkout(tmp_path, uid=0)
    env["NGINX"] = str(tmp_path / "no-nginx-here")
    out = subprocess.run(
        [env["PATH"] + "/bash", str(checkout / "run"), "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tmp_path / "apt-get.log").read_text(encoding="utf-8").splitlines()
    assert calls == ["update -qq", "install -y -qq nginx"], (calls, out.stderr)
    assert "Installing Debian's nginx (for the reverse-proxy browser test)" in out.stdout
    assert out.returncode != 0


def test_missing_php_is_installed_from_debian_for_the_proxy_upstream_test(tmp_path: Path) -> None:
    """e2e/test_proxy_php.py runs PHP's built-in server: `./run test` installs Debian's php-cli when
    missing."""
    checkout, env = _checkout(tmp_path, uid=0)
    (tmp_path / "bin" / "php").unlink()
    out = subprocess.run(
        [env["PATH"] + "/bash", str(checkout / "run"), "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tmp_path / "apt-get.log").read_text(encoding="utf-8").splitlines()
    assert calls == ["update -qq", "install -y -qq php-cli"], (calls, out.stderr)
    assert "Installing Debian's php-cli (for the proxy's PHP upstream test)" in out.stdout
    assert out.returncode != 0
