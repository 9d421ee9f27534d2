"""Model rollout: register, shadow, promote, rollback, retire, verify — every change audited."""

import pytest

from agent.errors import RegistryError
from agent.registry import ModelRegistry
from integrations.store import ModelState


@pytest.fixture
def registry(store, tmp_path) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "registry", actor="alice")


def _tamper(path) -> None:
    model_file = path / "model.ts"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))


def test_register_copies_the_verified_artifact_into_the_registry(registry, artifact_factory, tmp_path):
    model = registry.register(artifact_factory("1.0.0"))
    assert model.state == ModelState.REGISTERED and model.version == "1.0.0"
    assert (tmp_path / "registry" / "1.0.0" / "model.ts").is_file()
    assert model.manifest["model_version"] == "1.0.0" and model.sha256 == model.manifest["model_sha256"]


def test_registering_the_same_artifact_twice_is_a_no_op(registry, artifact_factory):
    first = registry.register(artifact_factory("1.0.0"))
    again = registry.register(artifact_factory("1.0.0"))
    assert again == first
    assert [entry.to_state for entry in registry.history("1.0.0")] == [ModelState.REGISTERED]


def test_a_tampered_artifact_cannot_be_registered(registry, artifact_factory, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact_factory("1.0.0"), copy)
    _tamper(copy)
    with pytest.raises(RegistryError, match="sha256"):
        registry.register(copy)


def test_promote_switches_the_one_active_version_and_retires_the_previous(registry, artifact_factory, store):
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first deployment")
    registry.promote("1.1.0", reason="better AF sensitivity")
    assert store.active_model_version().version == "1.1.0"
    assert registry.get("1.0.0").state == ModelState.RETIRED


def test_rollback_returns_to_the_previous_active_version_and_the_trail_shows_it(registry, artifact_factory, store):
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first deployment")
    registry.promote("1.1.0", reason="better AF sensitivity")
    registry.rollback(reason="too many hyperkalemia alerts")
    assert store.active_model_version().version == "1.0.0"
    trail = [(e.version, e.from_state, e.to_state, e.actor) for e in registry.history()]
    assert trail[-2:] == [
        ("1.1.0", ModelState.ACTIVE, ModelState.RETIRED, "alice"),
        ("1.0.0", ModelState.RETIRED, ModelState.ACTIVE, "alice"),
    ]
    assert "too many hyperkalemia alerts" in registry.history("1.0.0")[-1].reason


def test_rollback_with_nothing_before_is_refused(registry, artifact_factory):
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="first")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(reason="oops")


def test_a_tampered_registry_copy_is_refused_at_promote_and_the_active_model_stays(
    registry, artifact_factory, store, tmp_path
):
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first deployment")
    _tamper(tmp_path / "registry" / "1.1.0")
    with pytest.raises(RegistryError, match=r"1\.1\.0 refused: .*tampered"):
        registry.promote("1.1.0", reason="upgrade")
    assert store.active_model_version().version == "1.0.0"
    assert [r.ok for r in registry.verify()] == [True, False]


def test_shadow_then_retire(registry, artifact_factory, store):
    registry.register(artifact_factory("1.0.0"))
    registry.register(artifact_factory("1.1.0"))
    registry.promote("1.0.0", reason="first")
    registry.shadow("1.1.0", reason="compare on live traffic")
    assert [m.version for m in store.shadow_model_versions()] == ["1.1.0"]
    registry.retire("1.1.0", reason="not better")
    assert registry.get("1.1.0").state == ModelState.RETIRED


def test_the_active_version_cannot_be_retired_or_shadowed(registry, artifact_factory):
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="first")
    with pytest.raises(RegistryError, match="active"):
        registry.retire("1.0.0", reason="x")
    with pytest.raises(RegistryError, match="active"):
        registry.shadow("1.0.0", reason="x")


def test_an_unknown_version_is_named(registry):
    with pytest.raises(RegistryError, match=r"'9\.9\.9'"):
        registry.promote("9.9.9", reason="x")


def test_the_release_table_of_a_version_reads_from_its_manifest(registry, artifact_factory):
    registry.register(artifact_factory("2.0.0", charted=frozenset({"I48", "potassium_high"})))
    view = registry.release_table("2.0.0")
    rows = {row.label: row for row in view.rows}
    assert list(rows) == ["I48", "E875", "potassium_high", "hemoglobin_low"]
    assert (rows["E875"].kind, rows["E875"].display) == ("diagnosis", "Hyperkalemia")
    assert (rows["potassium_high"].kind, rows["potassium_high"].display) == ("lab", "Potassium high")
    assert view.charted == {("diagnosis", "I48"), ("lab", "potassium_high")}
    assert rows["I48"].release.auroc_ci_low == 0.86 and rows["E875"].release.ppv == 0.15
    assert (view.rule.min_auroc_ci_low, view.rule.min_ppv) == (0.8, 0.3)


def test_a_version_exported_before_release_tables_charts_nothing(registry, artifact_factory):
    import dataclasses

    from agent.registry import release_view

    model = registry.register(artifact_factory("1.0.0"))
    old = {k: v for k, v in model.manifest.items() if k not in {"calibration", "release_rule"}} | {"schema_version": 1}
    old["diagnoses"] = [{k: v for k, v in d.items() if k not in {"parents", "release"}} for d in old["diagnoses"]]
    old["lab_targets"] = [{k: v for k, v in t.items() if k != "release"} for t in old["lab_targets"]]
    view = release_view(dataclasses.replace(model, manifest=old))
    assert view.rule is None and view.charted == frozenset() and all(row.release is None for row in view.rows)


def test_promoting_a_version_that_charts_more_labels_says_so_in_the_audit_reason(registry, artifact_factory):
    registry.register(artifact_factory("1.0.0", charted=frozenset({"I48"})))
    registry.register(artifact_factory("1.1.0", charted=frozenset({"I48", "E875", "potassium_high"})))
    registry.promote("1.0.0", reason="first deployment")
    assert registry.promotion_note("1.1.0") == "charts 2 label(s) more than active 1.0.0: E875, potassium_high"
    registry.promote("1.1.0", reason="better AF sensitivity")
    assert registry.history("1.1.0")[-1].reason == (
        "better AF sensitivity [charts 2 label(s) more than active 1.0.0: E875, potassium_high]"
    )


def test_promoting_a_version_that_charts_nothing_new_keeps_the_reason_as_given(registry, artifact_factory):
    registry.register(artifact_factory("1.0.0", charted=frozenset({"I48", "E875"})))
    registry.register(artifact_factory("1.1.0", charted=frozenset({"I48"})))
    registry.promote("1.0.0", reason="first deployment")
    assert registry.promotion_note("1.1.0") is None
    registry.promote("1.1.0", reason="fewer hyperkalemia findings")
    assert registry.history("1.1.0")[-1].reason == "fewer hyperkalemia findings"
    changes = {c.label: c for c in registry.release_changes_on_promote("1.0.0")}  # back again: E875 returns
    assert changes["E875"].newly_charted and not changes["I48"].newly_charted


def test_the_first_promote_names_every_label_it_charts(registry, artifact_factory):
    registry.register(artifact_factory("1.0.0", charted=frozenset({"I48"})))
    assert registry.promotion_note("1.0.0") == "charts 1 label(s) more (no version was active): I48"
