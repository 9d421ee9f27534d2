"""Run records tell the truth: a run whose process died is abandoned, a refused model is on the run and in status."""

from agent.jobs import scheduled_run
from agent.operations import status
from agent.registry import ModelRegistry
from agent.service import EXIT_NEEDS_ATTENTION, EXIT_OK, AgentService
from agent.settings import load_settings
from integrations.store import RunStatus, Store


def _settings(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\nregistry_dir = "{tmp_path / "models"}"\n')
    return config, load_settings(config)


def _deploy(settings, artifact_factory, *versions: str) -> Store:
    store = Store.from_url(settings.database_url.get_secret_value())
    store.upgrade()
    registry = ModelRegistry(store, settings.registry_dir, actor="test")
    for version in versions:
        registry.register(artifact_factory(version))
        registry.promote(version, reason="test")
    return store


def test_a_run_left_running_by_a_dead_process_is_marked_abandoned_by_the_next_run(tmp_path, artifact_factory):
    _, settings = _settings(tmp_path)
    store = _deploy(settings, artifact_factory, "1.0.0")
    dead = store.start_run(["1.0.0"])  # the process was killed (SIGKILL) before it could finish its run row
    outcome = AgentService(settings).run_once(progress=False)
    assert outcome.exit_code == EXIT_OK
    runs = {run.id: run for run in store.list_runs()}
    assert runs[dead.id].status == RunStatus.ABANDONED and "process died" in runs[dead.id].error
    assert runs[outcome.report.run_id].status == RunStatus.SUCCEEDED


def test_a_tampered_artifact_is_recorded_on_the_run_and_shown_beside_the_active_version(tmp_path, artifact_factory):
    _, settings = _settings(tmp_path)
    store = _deploy(settings, artifact_factory, "1.0.0")
    service = AgentService(settings)
    assert service.run_once(progress=False).exit_code == EXIT_OK  # 1.0.0 is verified and serving
    _deploy(settings, artifact_factory, "1.1.0")
    (settings.registry_dir / "1.1.0" / "model.ts").write_bytes(b"not the registered model")
    outcome = service.run_once(progress=False)
    run = store.get_run(outcome.report.run_id)
    assert outcome.exit_code == EXIT_NEEDS_ATTENTION and run.status == RunStatus.DEGRADED
    assert any(problem.startswith("version 1.1.0:") and "does not match" in problem for problem in run.problems)
    assert run.model_versions == ("1.0.0",)  # what actually scored
    view = status(store)
    assert view.active.version == "1.1.0" and "refused by run" in view.active_refusal()


def test_under_serve_a_refused_artifact_is_not_recorded_as_a_success(tmp_path, artifact_factory):
    config, settings = _settings(tmp_path)
    store = _deploy(settings, artifact_factory, "1.0.0")
    (settings.registry_dir / "1.0.0" / "model.ts").write_bytes(b"tampered")
    scheduled_run(str(config), None)  # what the scheduler calls each night
    [run] = store.list_runs()
    assert run.status == RunStatus.FAILED and "no verified active model" in run.error
    assert "refused by run" in status(store).active_refusal()
