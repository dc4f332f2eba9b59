"""Every YAML key in conf/ has a one-line comment right above it (verl's rule): the config documents itself."""

from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"
FILES = sorted(CONF.rglob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_key_has_a_comment(path):
    lines = path.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0]
        if key in ("defaults",) or not key.replace("_", "").replace("-", "").isalnum():
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            undocumented.append(f"{path.name}:{i + 1}: {key}")
    assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)


def test_all_groups_exist():
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    assert {"dataset", "model", "method", "iteration", "sampler", "sandbox", "logger", "experiment"} <= groups
