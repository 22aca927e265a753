"""Local web app (`python scripts/app.py`): upload, annotate, track masks, inpaint, download.

`jobs` runs long work one job at a time in subprocesses (cancellable, with progress and error lines);
`commands` builds those steps (scripts/make_masks.py for the masks, scripts/inference.py for the result) and the
annotations; `session` keeps each browser session's files under generated names in its own temporary
folder; `ui` is the Gradio page.
"""
