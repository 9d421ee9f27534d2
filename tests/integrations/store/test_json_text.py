"""JSON columns are written by orjson, yet read back exactly as the standard library's text would."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from integrations.store.engine import json_text


@pytest.mark.parametrize(
    "value",
    [
        {"codes": ["I48.91", "E87.5"], "probabilities": [0.912345678901234, 1e-9, 1.0], "positive": [True, False]},
        {"notes": ["Ableitung V1 verrauscht – ±0.5 mV", "导联脱落"], "count": 3},
        [["I21.4", "potassium_high", 0.25]],
        {},
    ],
)
def test_what_is_written_reads_back_as_the_value(value):
    assert json.loads(json_text(value)) == value


def test_integer_keys_become_strings_as_the_standard_library_writes_them():
    assert json.loads(json_text({1: "a", 2: "b"})) == json.loads(json.dumps({1: "a", 2: "b"}))


def test_a_nan_stays_a_nan_and_a_none_stays_null():
    read = json.loads(json_text({"probability": float("nan"), "subject": None}))

    assert math.isnan(read["probability"])
    assert read["subject"] is None


def test_numpy_scalars_from_the_model_are_written_as_numbers():
    assert json.loads(json_text({"p": np.float64(0.75), "flag": np.bool_(True)})) == {"p": 0.75, "flag": True}


def test_an_integer_beyond_64_bits_is_written_as_the_standard_library_writes_it():
    assert json_text({"n": 2**70}) == json.dumps({"n": 2**70})
