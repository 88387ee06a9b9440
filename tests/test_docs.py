"""The README's config table and the records contract stay true to the code."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_config_table_is_current():
    assert _script("config_table").table() in (ROOT / "README.md").read_text(), (
        "README's trial-config table is stale: run .venv/bin/python scripts/config_table.py"
    )


def test_records_page_is_generated_from_the_records_module():
    page = (ROOT / "docs" / "records.md").read_text()
    assert page == _script("records_doc").page(), (
        "docs/records.md is stale: run .venv/bin/python scripts/records_doc.py > docs/records.md"
    )
    # and it documents every column a trial reports and the table adds
    from trainables import records

    for column in (*records.RECORD_COLUMNS, *records.ID_COLUMNS, *records.CONFIG_COLUMNS,
                   *records.TAIL_COLUMNS):
        assert f"| `{column.name}` | {column.type} |" in page
    for status in records.STATUSES:
        assert f"| `{status}` |" in page
