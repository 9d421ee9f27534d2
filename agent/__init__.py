"""The nightly scoring agent: pulls ECGs, scores them with the exported model, writes results back."""
