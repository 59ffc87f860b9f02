"""CI runs what the README tells a newcomer: its install command and its test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_ci_installs_and_tests_as_the_readme_says():
    install, test = quick_start_commands()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    pip = install.split("&&")[0].strip()  # pip install -e ".[test]" (then `study run`)
    assert f"python -m {pip}" in ci
    assert test in ci
