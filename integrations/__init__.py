"""Everything that crosses the hospital boundary: ECG file formats, FHIR, HL7 v2, SQL.

The canonical ECG record and the one shared preprocessing function live in
:mod:`integrations.ecg`; training and serving both call it, so they cannot skew.
Source times (HL7 DTM, FHIR dates, WFDB base times) become aware UTC in :mod:`integrations.site_time`,
with the site's zone placing those written without an offset.
This package imports nothing of ours.
"""
