"""The simulated hospital: physiology table, ECG synthesis, patient sampler, writer in the MIMIC-IV-ECG layout.

It shares only the on-disk layout with the real-data loader (:mod:`model_training.data.layout` and
:mod:`model_training.data.catalogue`); the loader never imports it.
"""
