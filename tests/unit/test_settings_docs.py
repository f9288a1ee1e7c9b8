"""Every setting is documented where users look: the README's table and .env.example."""

from __future__ import annotations

from pathlib import Path

import pytest

from commands.settings import Settings

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_each_setting_is_in_the_readme_and_the_env_example(name: str) -> None:
    variable = f"SUBLEDGER_{name.upper()}"
    assert f"| `{variable}` |" in (ROOT / "README.md").read_text()
    assert f"# {variable}=" in (ROOT / ".env.example").read_text()
