"""The README's config table and the records contract stay true to the code."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_table_is_current():
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.table() in (ROOT / "README.md").read_text(), (
        "README's trial-config table is stale: run .venv/bin/python scripts/config_table.py"
    )
