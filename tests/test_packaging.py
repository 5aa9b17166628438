"""The distribution maps adapters/ and cli/ under rtpo_data, in a wheel and in an editable install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_imports_mapped_packages() -> None:
    import rtpo_data.adapters
    import rtpo_data.cli.main

    assert Path(rtpo_data.cli.main.__file__).resolve() == ROOT / "cli" / "main.py"
    assert Path(rtpo_data.adapters.__file__).resolve() == ROOT / "adapters" / "__init__.py"


def test_wheel_contains_only_rtpo_data_and_imports(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(dist.glob("rtpo_data-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"rtpo_data", next(t for t in tops if t.endswith(".dist-info"))}
    assert "rtpo_data/cli/main.py" in names and "rtpo_data/adapters/__init__.py" in names
    assert "rtpo_data/examples/mixed_math.jsonl" in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "rtpo-data = rtpo_data.cli.main:app" in entry
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    code = "import rtpo_data, rtpo_data.cli.main, rtpo_data.adapters; print(rtpo_data.__file__)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.strip().startswith(str(target))
