"""Everything that crosses the hospital boundary: ECG file formats, FHIR, HL7 v2, SQL.

The canonical ECG record and the one shared preprocessing function live in
:mod:`integrations.ecg`; training and serving both call it, so they cannot skew.
This package imports nothing of ours.
"""
