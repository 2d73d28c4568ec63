"""The README's CPU example runs and prints exactly what the README says it prints."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_prints_its_output():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Ten lines on the CPU"):]
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.S)[:2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=README.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == printed.strip()
