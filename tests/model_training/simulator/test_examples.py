"""The textbook examples' printouts say what the signal was synthesised with, and nothing a rhythm lacks."""

from model_training.simulator.ecg_synth import EcgParams
from model_training.simulator.examples import EXAMPLES, synthesis_note


def _note(name: str) -> str:
    return synthesis_note(EcgParams.from_effects(EXAMPLES[name][1]))


def test_atrial_fibrillation_prints_no_pr_interval_and_an_irregular_mean_rate():
    note = _note("atrial_fibrillation")
    assert "PR" not in note
    assert "no P waves" in note and "irregular" in note


def test_sinus_examples_print_their_pr_interval_as_set_not_measured():
    note = _note("normal")
    assert note.startswith("synthesised with HR ")
    assert " PR " in note and "QTc" in note
