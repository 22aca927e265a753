"""The weight-free `propagate` method: hole pixels traced along optical flow to frames that show them (`pixels`,
streamed over a video by `video`, on in-memory clips by `clip`), a spatial fill where none does (`telea`: OpenCV
Telea / Navier-Stokes, or the membrane fill)."""
