"""The networks: ECG encoder, clinical encoder, heads and the late-fusion baseline.

The encoder and the heads are what the exporter scripts into the served TorchScript
model, so they use only what ``torch.jit.script`` compiles.
"""

from model_training.models.clinical_encoder import ClinicalEncoder, ClinicalScaler
from model_training.models.ecg_encoder import EcgEncoder
from model_training.models.fusion import LateFusionModel
from model_training.models.heads import Head, Projector

__all__ = ["ClinicalEncoder", "ClinicalScaler", "EcgEncoder", "Head", "LateFusionModel", "Projector"]
