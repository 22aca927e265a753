"""Optical flow: estimators (`estimators`: DIS, RAFT), completion inside holes (`completion`, `membrane`, and
ProPainter's learned network in `propainter`), warping and the forward-backward check (`warp`), resizing to the
latent grid (`resize`), tracing points along flows (`trace`)."""
