"""The built wheel carries the script, the templates, the texts, the demo and the type marker, and
serves them; the sdist carries the licence, and so does the wheel a release builds from it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_package_data_and_serves_it(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("consent_banner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "consent_banner/static/js/consent.js",
        "consent_banner/static/js/consent.css",
        "consent_banner/i18n/en.toml",
        "consent_banner/i18n/sv.toml",
        "consent_banner/demo_site/app.py",
        "consent_banner/demo_site/consent.toml",
        "consent_banner/py.typed",  # PEP 561: type checkers read the package's own annotations
    ):
        assert expected in names, expected
    assert any(n.startswith("consent_banner/templates/banner/") for n in names)
    # the built (minified) script and stylesheet, byte for byte; their readable sources stay in the repository
    with zipfile.ZipFile(wheel) as zf:
        for name in ("consent.js", "consent.css", "gpp.js"):
            assert zf.read(f"consent_banner/static/js/{name}") == (ROOT / "static" / "js" / name).read_bytes()
    assert {n for n in names if n.startswith("consent_banner/static/")} == {
        "consent_banner/static/js/consent.js",
        "consent_banner/static/js/consent.css",
        "consent_banner/static/js/gpp.js",  # window.__gpp, for visitors under the opt-out model
    }

    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    script = textwrap.dedent("""
        import consent_banner, httpx, asyncio
        from pathlib import Path
        from starlette.applications import Starlette
        from consent_banner import ConsentConfig, ConsentMiddleware
        where = Path(consent_banner.__file__).resolve()
        assert where.is_relative_to(Path(TARGET).resolve()), where
        config = ConsentConfig(policy_revision="r", controller="C", privacy_policy_url="/p", log="memory://",
                               categories={"necessary": {"label": "N"}})
        app = ConsentMiddleware(Starlette(), config=config, secret_keys=["k" * 40])
        async def main():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                js = await c.get("/_consent/consent.js")
                banner = await c.get("/_consent/banner?lang=en")
                assert js.status_code == 200 and len(js.content) > 500, js.status_code
                assert banner.status_code == 200 and "accept_all" in banner.text
            print("served", len(js.content))
        asyncio.run(main())
    """).replace("TARGET", repr(str(target)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path[:0] = {env['PYTHONPATH'].split(os.pathsep)!r}\n" + script,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("served")


def test_sdist_carries_the_licence_and_the_wheel_built_from_it_too(tmp_path: Path) -> None:
    """`python -m build` as a release runs it: the sdist first, then the wheel from that sdist (so a file
    the sdist leaves out is missing from the wheel too)."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "-o", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [sdist] = dist.glob("consent_banner-*.tar.gz")
    [wheel] = dist.glob("consent_banner-*.whl")
    licence = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in licence and b"Version 2.0, January 2004" in licence
    with tarfile.open(sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        member = tf.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read() == licence
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "consent_banner/py.typed" in names
        [wheel_licence] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert zf.read(wheel_licence) == licence
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
