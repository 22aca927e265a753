"""Local web app (`python scripts/app.py`): upload, annotate, track masks, inpaint, download.

`jobs` runs long work (tracking, inference) one job at a time in subprocesses, cancellable; `session`
keeps each browser session's files in its own temporary folder; `ui` is the Gradio page.
"""
