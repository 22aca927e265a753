"""Local web app: `python scripts/app.py [--host 127.0.0.1] [--port 7860] [--share false]`.

Upload a video or a zip of frames, mark the object on any frame (box or brush), preview the tracked masks,
choose a method and run; long work runs one job at a time in subprocesses (cancellable), uploads stay in a
per-session temporary folder removed when the tab closes and when the app exits.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", type=_bool, default=False, help="true: also open a public Gradio share link")
    p.add_argument("--workdir", default=None, help="folder for session files (default: a new temporary folder, "
                   "removed at exit)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def stop(*_):  # SIGTERM as Ctrl-C: Gradio closes its server, the finally below (or atexit) cleans up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # first: a stop during the slow imports below also cleans up
    from fffvdi.app.jobs import JobQueue
    from fffvdi.app.session import SessionStore

    store = SessionStore(args.workdir)  # removes itself at exit (atexit) even if building the page fails
    # Gradio's own upload cache goes inside the app's folder, so it is removed with it at exit
    os.environ.setdefault("GRADIO_TEMP_DIR", str(store.root / "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fffvdi.app.ui import build_ui

    jobs = JobQueue()
    demo = build_ui(store, jobs)
    try:
        demo.queue(default_concurrency_limit=None).launch(
            server_name=args.host, server_port=args.port, share=args.share, allowed_paths=[str(store.root)],
            inbrowser=False, show_error=True)
    except OSError as err:  # port taken, address not available
        print(f"error: cannot serve on {args.host}:{args.port} ({err}); pass another --port", file=sys.stderr)
        return 2
    finally:
        jobs.shutdown()
        store.close_all()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    sys.exit(main())
