"""Names from the ICD-10-CM code table (not the simulator) and lab abnormalities as clinicians write them."""

import logging

from model_training.names import diagnosis_display, diagnosis_name, lab_display


def test_displays_and_parents_come_from_the_code_table():
    hypothyroidism = diagnosis_name("E039")
    assert (hypothyroidism.display, hypothyroidism.parents, hypothyroidism.known) == (
        "Hypothyroidism, unspecified", ("E03",), True)  # fmt: skip
    assert diagnosis_name("I2101").parents == ("I210", "I21")  # nearest first, no blocks or chapters
    assert diagnosis_name("I50").parents == ()  # a category has no parent code, only a block


def test_a_dotted_code_reads_like_the_cohorts_undotted_one():
    assert diagnosis_display("E78.5") == diagnosis_display("E785") == "Hyperlipidemia, unspecified"


def test_codes_that_filled_the_demo_chart_get_their_real_names():
    assert diagnosis_display("K219") == "Gastro-esophageal reflux disease without esophagitis"
    assert diagnosis_display("N390") == "Urinary tract infection, site not specified"


def test_a_code_the_table_does_not_know_keeps_its_code_as_display_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="model_training.names"):
        unknown = diagnosis_name("U999")
    assert (unknown.display, unknown.parents, unknown.known) == ("U999", (), False)
    assert "'U999' is not in the code table" in caplog.text


def test_lab_abnormalities_read_as_clinicians_write_them():
    assert lab_display("potassium", "high") == "Potassium high"
    assert lab_display("hemoglobin", "low") == "Hemoglobin low"
    assert lab_display("ntprobnp", "high") == "NT-proBNP high"
    assert lab_display("tsh", "high") == "TSH high"
    assert lab_display("glucose_fasting", "high") == "glucose_fasting high"  # not in the catalogue: the key
