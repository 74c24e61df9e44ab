"""Artifact name templates: one validator (ops.naming) for specs and the registered_model run config."""

from __future__ import annotations

import re

import pytest
from dagster import Failure

from ops import naming
from ops.naming import InvalidName
from orchestration.registry import artifact_name


@pytest.mark.parametrize("template", [
    "{name}-{version}-{uuid}.zip", "{batch}_{uuid}.zip", "{uuid}.zip", "model={name}.v{version}.{uuid}.zip",
])
def test_documented_templates_render_a_single_safe_file_name(template):
    name = artifact_name(template, "nulog", 12, "../etc/passwd; DROP TABLE models")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=-]*\.zip", name) and ".." not in name.split("/")
    assert naming.validate_artifact_template(template) == template


@pytest.mark.parametrize("template", [
    "{name.__class__}-{uuid}.zip", "{name[0]}-{uuid}.zip", "{version!r}-{uuid}.zip", "{0}-{uuid}.zip",
    "{}-{uuid}.zip", "{name.__init__.__globals__}-{uuid}.zip", "{uuid:>99999999}.zip", "{uuid:{name}}.zip",
    "{uuid}}.zip", "{owner}-{uuid}.zip", "{name}.zip", "{uuid}", "../{uuid}.zip", "{uuid}/x.zip", "a\\{uuid}.zip",
    ".{uuid}.zip", "{uuid}\n.zip", "", "{uuid}" * 7 + ".zip",
])
def test_registration_rejects_a_bad_template_with_a_clear_failure(template):
    with pytest.raises(Failure) as err:
        artifact_name(template, "nulog", 3, "shop/payments")
    assert err.value.description.startswith(f"artifact name template {template!r} is invalid: ")
    with pytest.raises(InvalidName):  # the same validator as `logloop train validate`
        naming.validate_artifact_template(template)


def test_values_that_would_make_an_unsafe_name_are_rejected():
    with pytest.raises(InvalidName, match="not a safe file name"):
        naming.render_artifact_name("{name}-{uuid}.zip", name="../x", version=1, uuid="u", batch="b")
    with pytest.raises(Failure, match="is invalid: .*not a safe file name"):
        artifact_name("{name}-{uuid}.zip", "a/b", 1, "shop")
