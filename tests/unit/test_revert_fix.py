"""The mutation check's edit (tests/e2e/revert_fix.py) still finds the fix in the role.

If the fix moves, this fails here in seconds, rather than the 11-minute check failing later.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

from harness import paths

spec = importlib.util.spec_from_file_location("revert_fix", paths.REPO / "tests" / "e2e" / "revert_fix.py")
assert spec is not None and spec.loader is not None
revert_fix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(revert_fix)


def test_the_fix_is_taken_out_and_nothing_else(tmp_path: Path) -> None:
    shutil.copytree(paths.REPO / "roles", tmp_path / "roles")
    before = yaml.safe_load((tmp_path / revert_fix.TASKS).read_text(encoding="utf-8"))
    revert_fix.revert_the_fix(tmp_path)
    after = yaml.safe_load((tmp_path / revert_fix.TASKS).read_text(encoding="utf-8"))
    assert [t for t in before if t["name"] != revert_fix.FIX_TASK] == after
    assert revert_fix.FIX_TASK not in {t["name"] for t in after}
    assert not (tmp_path / revert_fix.FIX_TEMPLATE).exists()
    with pytest.raises(SystemExit, match="no longer where this script looks"):
        revert_fix.revert_the_fix(tmp_path)
