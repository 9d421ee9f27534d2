"""The fast SampledData parser reads exactly what a strict token-by-token parser reads, and refuses the rest."""

from __future__ import annotations

import random

import numpy as np
import pytest

from integrations.fhir.sampled_data import SampledDataError, Scaling, decode_data, encode_data


def strict_reference(text: str) -> np.ndarray | None:
    try:
        return np.array(text.split(), dtype=np.int64).astype(np.float64)
    except ValueError:
        return None


def test_random_integer_texts_decode_exactly_like_the_strict_parser_or_are_refused_like_it():
    rng = random.Random(0)
    pieces = ["1", "23", "-", "+", " ", "  ", "\t", "\n", "\r", "0", "-7", "+99"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        expected = strict_reference(text)
        if expected is None:
            with pytest.raises(SampledDataError):
                decode_data(text, Scaling())
        else:
            np.testing.assert_array_equal(decode_data(text, Scaling()), expected, err_msg=repr(text))


@pytest.mark.parametrize(
    "text", ["1 - 2", "-", "1-2", "2+", "+-1", "99999999999999999999 1", "1 2.3.4", "1e", "nan", "LU", "UL 1"]
)
def test_what_a_lenient_parser_would_misread_is_refused(text):
    with pytest.raises(SampledDataError):
        decode_data(text, Scaling())


def test_values_are_the_origin_plus_the_factor_times_the_data():
    np.testing.assert_array_equal(decode_data("1 -2 +3", Scaling(origin=1.0, factor=2.0)), [3.0, -3.0, 7.0])
    np.testing.assert_array_equal(decode_data("0.5 -1", Scaling(origin=-1.0, factor=4.0)), [1.0, -5.0])


def test_blank_text_is_no_samples_not_one_zero():
    assert decode_data(" \n ", Scaling()).size == 0


def test_encoding_rounds_to_counts_of_the_factor_and_writes_nan_as_e():
    assert encode_data(np.array([0.0014, -0.0026, np.nan, 1.0]), factor=0.001) == "1 -3 E 1000"
