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
