"""The weight-free `propagate` method: hole pixels traced along optical flow to frames that show them (`pixels`,
streamed over a video by `video`, on in-memory clips by `clip`), OpenCV Telea where none does (`telea`)."""
