"""CPU per ECG of parsing FHIR SampledData text, the agent's decoder against the alternatives. Prints one JSON object.

    .venv/bin/python bench/sampled_data_parse.py [--repeats 50] [--seed 0]

One ECG is 12 leads × 5,000 integer counts (µV-sized, as the simulated hospital and most vendors write them), about
250 kB of text. Measured, as process CPU per ECG (every thread), in turn on the same text:

- ``agent_decode_data``: the agent's decoder (``integrations.fhir.sampled_data.decode_data``: character check, sign
  check, ``np.fromstring``, float64 scaling);
- ``numpy_fromstring``: ``np.fromstring(text, sep=" ")`` alone, the floor of the decoder;
- ``split_then_array``: ``np.array(text.split(), dtype=np.int64)``;
- ``pyarrow_csv_reader`` and ``pyarrow_split_cast``: Arrow's compiled CSV reader (spaces made line breaks, one
  int64 column) and its compute kernels (``split_pattern`` then a cast), on one thread; reported as
  ``"not installed"`` without pyarrow (``pip install pyarrow``: not a dependency of the project).

It answers whether a compiled parser at hand would make the FHIR pull cheaper than numpy's (``bench/e2e.py``'s
``fhir_pull_only``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from integrations.fhir.sampled_data import Scaling, decode_data

LEADS = 12
SAMPLES_PER_LEAD = 5_000


def ecg_texts(seed: int) -> list[str]:
    """One ECG's SampledData ``data`` strings: integer counts with an ECG's spread (sd 300 counts of 1 µV)."""
    rng = np.random.default_rng(seed)
    counts = np.rint(rng.normal(0.0, 300.0, (LEADS, SAMPLES_PER_LEAD))).astype(np.int64)
    return [" ".join(map(str, lead.tolist())) for lead in counts]


def cpu_ms_per_call(parse: Callable[[], object], repeats: int) -> float:
    parse()  # warm caches and lazy imports outside the measurement
    start_s = time.process_time()
    for _ in range(repeats):
        parse()
    return round((time.process_time() - start_s) / repeats * 1000.0, 3)


def parsers(texts: list[str]) -> dict[str, Callable[[], object] | str]:
    scaling = Scaling()
    found: dict[str, Callable[[], object] | str] = {
        "agent_decode_data": lambda: [decode_data(text, scaling) for text in texts],
        "numpy_fromstring": lambda: [np.fromstring(text, dtype=np.int64, sep=" ") for text in texts],
        "split_then_array": lambda: [np.array(text.split(), dtype=np.int64) for text in texts],
    }
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return found | {"pyarrow_csv_reader": "not installed", "pyarrow_split_cast": "not installed"}
    pa.set_cpu_count(1)
    read_options = pcsv.ReadOptions(column_names=["count"], use_threads=False)
    convert_options = pcsv.ConvertOptions(column_types={"count": pa.int64()})

    def csv_reader() -> list[np.ndarray]:
        return [pcsv.read_csv(pa.py_buffer(text.encode("ascii").replace(b" ", b"\n")), read_options=read_options,
                              convert_options=convert_options).column(0).to_numpy() for text in texts]  # fmt: skip

    def split_cast() -> np.ndarray:
        return pc.cast(pc.list_flatten(pc.split_pattern(pa.array(texts), " ")), pa.int64()).to_numpy()

    expected = np.concatenate([np.fromstring(text, dtype=np.int64, sep=" ") for text in texts])
    assert np.array_equal(np.concatenate(csv_reader()), expected) and np.array_equal(split_cast(), expected)
    return found | {"pyarrow_csv_reader": csv_reader, "pyarrow_split_cast": split_cast}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="ECGs parsed per measurement (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random counts (default 0)")
    args = parser.parse_args()
    texts = ecg_texts(args.seed)
    cpu_ms = {name: parse if isinstance(parse, str) else cpu_ms_per_call(parse, args.repeats)
              for name, parse in parsers(texts).items()}  # fmt: skip
    print(json.dumps({"ecg": {"leads": LEADS, "samples_per_lead": SAMPLES_PER_LEAD,
                              "text_bytes": sum(len(text) for text in texts)},
                      "repeats": args.repeats, "cpu_ms_per_ecg": cpu_ms}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
