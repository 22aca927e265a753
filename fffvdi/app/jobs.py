"""A job queue for long work: one job at a time, each step a subprocess, cancellable, with progress and errors.

Subprocesses keep the web app serving when a run fails, runs out of memory or is killed, and make cancelling
a matter of terminating a process group. A step's message on failure is its stderr's last `error: ...` line.
"""
from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
_TQDM = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "12/40 [" counter, for steps without a folder to count


@dataclass
class Step:
    """One subprocess of a job; its progress is PNGs in `progress_dir` (or tqdm's counter on stderr) / `total`."""

    name: str  # shown in the page, e.g. "tracking masks"
    argv: list[str]
    total: int = 0  # units of work (frames) the step does
    progress_dir: Optional[Path] = None  # folder whose PNG count measures progress while the step runs


@dataclass
class Job:
    """A queued unit of work and what the page shows of it."""

    id: int
    steps: list[Step]
    log_dir: Path  # stderr of each step: step-<i>.log
    output: Optional[Path] = None  # what the job produces (a result folder), for the caller
    state: str = QUEUED
    message: str = ""  # the error of a failed job, one line
    step: int = 0  # index of the running (or last) step
    returncode: Optional[int] = None
    started: Optional[float] = None
    finished: Optional[float] = None
    _proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _seen: dict = field(default_factory=dict, repr=False)  # step -> highest fraction shown (progress never goes back)

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    def log(self, step: int) -> Path:
        return self.log_dir / f"step-{step}.log"

    def progress(self) -> float:
        """Fraction of the whole job done, 0..1 (steps count equally)."""
        if self.state == DONE:
            return 1.0
        if self.state == QUEUED or not self.steps:
            return 0.0
        # a step may run several progress bars one after another (tracking: flows, then each direction)
        fraction = max(self._seen.get(self.step, 0.0), _step_fraction(self.steps[self.step], self.log(self.step)))
        self._seen[self.step] = fraction
        return (self.step + fraction) / len(self.steps)

    def describe(self) -> str:
        """One line for the page: state, step name and percentage, or the error."""
        if self.state == RUNNING:
            return f"{self.steps[self.step].name}: {100 * self.progress():.0f}%"
        if self.state == FAILED:
            return f"error: {self.message}"
        return self.state


def _step_fraction(step: Step, log: Path) -> float:
    """How far a running step is: PNGs written to its progress folder or tqdm's last counter on its output,
    whichever says more (a streaming method counts frames on stderr long before it writes them)."""
    if step.total <= 0:
        return 0.0
    written = 0.0
    if step.progress_dir is not None and step.progress_dir.is_dir():
        written = min(sum(1 for _ in step.progress_dir.glob("*.png")) / step.total, 1.0)
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 4096, 0))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return written
    counters = _TQDM.findall(tail)
    counted = min(int(counters[-1][0]) / max(int(counters[-1][1]), 1), 1.0) if counters else 0.0
    return max(written, counted)


def error_line(stderr: str, returncode: int) -> str:
    """The message to show for a failed step: its last `error: ...` line, else what the exit says."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    if returncode in (-signal.SIGKILL, 137):
        return ("the run was killed (out of memory?); try a shorter clip, fewer window frames or the "
                "propagate method")
    if returncode < 0:
        return f"the run was stopped by signal {-returncode}"
    last = lines[-1] if lines else "no message"
    return f"the run failed (exit {returncode}): {last[:300]}"


class JobQueue:
    """Runs submitted jobs one at a time on a worker thread; `cancel` stops a queued or running one."""

    def __init__(self, env: Optional[dict] = None, kill_after: float = 5.0) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.kill_after = kill_after  # seconds between SIGTERM and SIGKILL on cancel
        self._jobs: dict[int, Job] = {}
        self._pending: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="fffvdi-jobs", daemon=True)
        self._worker.start()

    def submit(self, steps: list[Step], log_dir: str | Path, output: Optional[Path] = None) -> Job:
        """Queue a job; it runs after every job submitted before it."""
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            job = Job(id=next(self._ids), steps=list(steps), log_dir=log_dir, output=output)
            self._jobs[job.id] = job
        self._pending.put(job)
        return job

    def get(self, job_id: int) -> Job:
        return self._jobs[job_id]

    def ahead(self, job_id: int) -> int:
        """Jobs that run before this queued one (0 once it runs)."""
        job = self._jobs[job_id]
        if job.state != QUEUED:
            return 0
        return sum(1 for j in self._jobs.values() if j.id < job_id and j.state in (QUEUED, RUNNING))

    def cancel(self, job_id: int) -> bool:
        """Stop a queued or running job (the running step's process group gets SIGTERM, then SIGKILL);
        False if it had already finished."""
        job = self._jobs.get(job_id)
        if job is None or job.state in FINISHED:
            return False
        job._cancel.set()
        with self._lock:
            if job.state == QUEUED:
                job.state, job.finished = CANCELLED, time.time()
                return True
            proc = job._proc
        if proc is not None:
            _terminate(proc, self.kill_after)
        return True

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 0.05) -> Job:
        """Block until the job has finished (for scripts and tests; the page polls instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._jobs[job_id]
        while job.state not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll)
        return job

    def shutdown(self) -> None:
        """Cancel everything and stop the worker (at app exit)."""
        for job_id in list(self._jobs):
            self.cancel(job_id)
        self._pending.put(None)
        self._worker.join(timeout=self.kill_after + 5)

    def _run(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            with self._lock:
                if job.state != QUEUED:  # cancelled while waiting
                    continue
                job.state, job.started = RUNNING, time.time()
            try:
                self._run_job(job)
            except Exception as err:  # the worker must survive anything (e.g. a missing interpreter)
                job.state, job.message = FAILED, f"could not run {job.steps[job.step].name}: {err}"
            job.finished = time.time()

    def _run_job(self, job: Job) -> None:
        for i, step in enumerate(job.steps):
            job.step = i
            with open(job.log(i), "wb") as log, self._lock:
                if job._cancel.is_set():
                    job.state = CANCELLED
                    return
                # own process group: cancel reaches the step's children too (ffmpeg encoders)
                job._proc = subprocess.Popen(step.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=self.env, start_new_session=True)
            code = job._proc.wait()
            job.returncode = code
            if job._cancel.is_set():
                job.state = CANCELLED
                return
            if code != 0:
                job.state = FAILED
                job.message = error_line(job.log(i).read_text("utf-8", "replace"), code)
                return
        job.state = DONE


def _terminate(proc: subprocess.Popen, kill_after: float) -> None:
    """SIGTERM the process group, SIGKILL it if still alive after `kill_after` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
