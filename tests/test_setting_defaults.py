"""Settings blocks validated by their own dataclasses (a method's `method.<name>` block, the sandbox) keep field
defaults for code that builds them directly; the YAML in conf/ is the source, and these must never disagree."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import yaml

from ieta.config import CONF_DIR, compose_config, validate
from ieta.methods.interactive import InteractiveSettings
from ieta.methods.rlaif import RlaifSettings
from ieta.sandbox import SandboxConfig


@pytest.mark.parametrize("name, settings", [("rlaif", RlaifSettings), ("interactive", InteractiveSettings)])
def test_method_settings_defaults_equal_the_methods_yaml(name, settings):
    composed = getattr(validate(compose_config([f"method={name}"])).method, name)
    from_yaml, in_code = asdict(settings.from_config(composed)), asdict(settings())
    assert in_code == from_yaml, {k: (in_code[k], from_yaml[k]) for k in in_code if in_code[k] != from_yaml[k]}


@pytest.mark.parametrize("backend", ["process", "bwrap"])
def test_sandbox_defaults_equal_the_sandbox_yaml(backend):
    from_yaml = yaml.safe_load((CONF_DIR / "sandbox" / f"{backend}.yaml").read_text())
    in_code = asdict(SandboxConfig(backend=backend))
    assert in_code == from_yaml, {k: (in_code[k], from_yaml.get(k)) for k in in_code if in_code[k] != from_yaml.get(k)}
