"""Each run loads the active and shadow models, re-verified; a tampered file never serves."""

import pytest

from agent.loader import ModelLoader
from agent.registry import ModelRegistry


@pytest.fixture
def registry(store, tmp_path) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "registry", actor="ops")


def test_no_active_model_is_reported_not_hidden(store):
    models = ModelLoader(store).load_for_run()
    assert models.active is None and "no model version is active" in models.refusals[0]


def test_a_promote_is_picked_up_by_the_next_run_without_a_restart(store, registry, artifact_factory):
    loader = ModelLoader(store)
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first")
    assert loader.load_for_run().active.version == "1.0.0"
    registry.promote("1.1.0", reason="upgrade")
    assert loader.load_for_run().active.version == "1.1.0"


def test_shadow_models_load_beside_the_active_one(store, registry, artifact_factory):
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first")
    registry.shadow("1.1.0", reason="compare")
    models = ModelLoader(store).load_for_run()
    assert models.active.version == "1.0.0" and [m.version for m in models.shadows] == ["1.1.0"]


def test_a_file_tampered_after_promote_is_refused_and_the_previous_model_keeps_serving(
    store, registry, artifact_factory, tmp_path
):
    loader = ModelLoader(store)
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="first")
    assert loader.load_for_run().active.version == "1.0.0"
    registry.promote("1.1.0", reason="upgrade")
    (tmp_path / "registry" / "1.1.0" / "model.ts").write_bytes(b"not a model")
    models = loader.load_for_run()
    assert models.active.version == "1.0.0"
    assert any("1.1.0" in r and "does not match the registered" in r for r in models.refusals)
    assert "still serving version 1.0.0" in models.refusals


def test_a_fresh_process_with_a_tampered_active_file_scores_nothing(store, registry, artifact_factory, tmp_path):
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="first")
    (tmp_path / "registry" / "1.0.0" / "model.ts").write_bytes(b"not a model")
    models = ModelLoader(store).load_for_run()
    assert models.active is None and "tampered" in models.refusals[0]
