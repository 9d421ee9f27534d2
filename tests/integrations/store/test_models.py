"""The model registry: versions keyed by artifact sha256, one active at a time, every state change audited."""

import pytest

from integrations.store import ModelState, StoreIntegrityError, StoreNotFoundError

SHA_1 = "1" * 64
SHA_2 = "2" * 64
MANIFEST = {"labels": ["I48", "potassium_high"], "thresholds": {"I48": 0.42}, "input": {"fs_hz": 100}}


def _register(store, version: str = "m-1.0", sha256: str = SHA_1):
    return store.register_model_version(version, sha256, f"/models/{version}.pt", MANIFEST, actor="ci")


def test_a_registered_version_keeps_its_artifact_and_manifest_and_is_audited(store, clock):
    registered = _register(store)
    assert (registered.version, registered.sha256, registered.state) == ("m-1.0", SHA_1, ModelState.REGISTERED)
    assert registered.manifest == MANIFEST and registered.path == "/models/m-1.0.pt"
    [audit] = store.model_audit("m-1.0")
    assert (audit.actor, audit.at, audit.from_state, audit.to_state) == ("ci", clock.now, None, ModelState.REGISTERED)


def test_registering_the_same_artifact_again_returns_it_without_a_second_audit_row(store):
    assert _register(store) == _register(store)
    assert len(store.model_audit()) == 1


def test_the_same_artifact_under_another_version_name_is_refused(store):
    _register(store, "m-1.0", SHA_1)
    with pytest.raises(StoreIntegrityError, match=r"already registered as version m-1\.0"):
        _register(store, "m-1.1", SHA_1)


def test_a_version_name_cannot_be_reused_for_another_artifact(store):
    _register(store, "m-1.0", SHA_1)
    with pytest.raises(StoreIntegrityError, match=r"model version m-1\.0"):
        _register(store, "m-1.0", SHA_2)


def test_shadow_then_active_is_an_audited_promotion(store):
    _register(store)
    store.set_model_state("m-1.0", ModelState.SHADOW, actor="alice", reason="shadow for a week")
    assert [m.version for m in store.shadow_model_versions()] == ["m-1.0"]
    active = store.set_model_state("m-1.0", ModelState.ACTIVE, actor="alice", reason="AUROC 0.80 on shadow")
    assert active.state == ModelState.ACTIVE and store.active_model_version() == active
    trail = [(a.from_state, a.to_state, a.actor, a.reason) for a in store.model_audit("m-1.0")]
    assert trail[1:] == [
        (ModelState.REGISTERED, ModelState.SHADOW, "alice", "shadow for a week"),
        (ModelState.SHADOW, ModelState.ACTIVE, "alice", "AUROC 0.80 on shadow"),
    ]


def test_promoting_a_version_retires_the_active_one_and_rollback_reverses_it(store):
    _register(store, "m-1.0", SHA_1)
    _register(store, "m-2.0", SHA_2)
    store.set_model_state("m-1.0", ModelState.ACTIVE, actor="alice", reason="first")
    store.set_model_state("m-2.0", ModelState.ACTIVE, actor="bob", reason="better")
    assert store.active_model_version().version == "m-2.0"
    assert store.get_model_version("m-1.0").state == ModelState.RETIRED
    assert store.model_audit("m-1.0")[-1].reason == "replaced by m-2.0: better"
    store.set_model_state("m-1.0", ModelState.ACTIVE, actor="bob", reason="rollback: m-2.0 drifts")
    assert store.active_model_version().version == "m-1.0"
    assert store.get_model_version("m-2.0").state == ModelState.RETIRED


def test_setting_the_state_a_version_already_has_changes_nothing(store):
    _register(store)
    store.set_model_state("m-1.0", ModelState.REGISTERED, actor="alice", reason="no-op")
    assert len(store.model_audit("m-1.0")) == 1


def test_no_model_is_active_or_shadow_until_one_is_set(store):
    _register(store)
    assert store.active_model_version() is None and store.shadow_model_versions() == []


def test_an_unregistered_version_cannot_change_state(store):
    assert store.get_model_version("m-9") is None
    with pytest.raises(StoreNotFoundError, match="model version m-9: not registered"):
        store.set_model_state("m-9", ModelState.ACTIVE, actor="alice", reason="typo")


def test_every_registered_version_is_listed_in_registration_order(store):
    _register(store, "m-2.0", SHA_2)
    _register(store, "m-1.0", SHA_1)
    assert [m.version for m in store.list_model_versions()] == ["m-2.0", "m-1.0"]
