"""segment-cascaded: a memory-efficient two-stage cascaded U-net (global meU-net on the
downsampled volume, local U-net on full-resolution patches, post-concatenation), with
GIN-IPA augmentation, uncertainty maps and streaming slab-stitched inference.

Public API:
    CascadeConfig, Cascade, MeUNet             the model (config.py, cascade.py, unet.py)
    train, TrainOptions                        training both stages (train.py)
    Fingerprint, plan_cascade                  architecture planned from the data (plan.py)
    training_bytes, plan_layout                memory estimates, tiles for a limit (memory.py)
    predict_regions, stream_predict            bounded sliding-window inference (infer.py,
                                               stitch.py, windows.py)
    segment, NiftiSink                         one image into output arrays (predict.py)
    save_model, load_model                     safetensors + model.json (modelio.py)
    Calibrator, fit_global_temperature,        post-hoc calibration: global and local,
    fit_local, calibrate_model, load_calibrator  perturbation-aware temperature
                                               (calibration.py, calibrate.py)
"""

from medflow.segment.cascade import Cascade
from medflow.segment.config import CascadeConfig
from medflow.segment.unet import MeUNet

__all__ = ["Cascade", "CascadeConfig", "MeUNet"]
