"""Run a plan on Ray: submit every job whose dependencies are done, as a Ray task with its resource
request; collect results as they come; report progress. A failed job is recorded with its error and its
dependents are skipped, the rest go on. Ctrl-C cancels this sweep's running tasks; finished jobs stay.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from webllama.evalsuite.sweep.jobs import WORKER_FILE, finished, partial_dir
from webllama.evalsuite.sweep.plan import Job

STATE_FILE = "sweep_state.json"
TICK_S = 1.0  # how often the loop wakes up to look at running jobs
PROGRESS_S = 15.0  # a progress line at least this often while jobs run
MAX_RETRIES = 2  # Ray re-runs a task whose worker or node died this many times


@dataclass
class JobState:
    status: str = "pending"  # pending | submitted | done | skipped | failed | blocked
    error: str | None = None
    seconds: float | None = None
    host: str | None = None
    submitted_at: float | None = None


@dataclass
class Progress:
    """Counts and rates for the progress line; items count eval items of jobs finished in this run."""

    total_items: int
    started: float = field(default_factory=time.time)
    items_done: int = 0  # including items of jobs skipped as already done
    items_now: int = 0  # finished in this run (the rate)
    first_eval_at: float | None = None

    def rate(self) -> float | None:
        if not self.items_now or self.first_eval_at is None:
            return None
        return self.items_now / max(1e-9, time.time() - self.first_eval_at)

    def line(self, counts: dict[str, int], running: int, total_jobs: int) -> str:
        done = counts.get("done", 0) + counts.get("skipped", 0)
        failed = counts.get("failed", 0) + counts.get("blocked", 0)
        queued = counts.get("submitted", 0) - running
        rate = self.rate()
        left = self.total_items - self.items_done
        eta = _duration(left / rate) if rate and left > 0 else ("0s" if left <= 0 else "?")
        speed = f"{rate:.2f} items/s" if rate else "- items/s"
        return (
            f"sweep: {done}/{total_jobs} jobs done, {running} running, {queued} queued, {failed} failed | "
            f"items {self.items_done}/{self.total_items}, {speed}, ETA {eta}, elapsed {_duration(time.time() - self.started)}"
        )


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


@dataclass
class Sweep:
    """The driver's view of one sweep run; `run()` returns the final state of every job."""

    jobs: list[Job]
    out: Path
    log: Callable[[str], None]
    state: dict[str, JobState] = field(default_factory=dict)
    running: dict = field(default_factory=dict)  # ObjectRef -> Job

    def run(self) -> dict[str, JobState]:
        self._load_done()
        if all(st.status == "skipped" for st in self.state.values()):
            self._save()
            return self.state
        import ray

        remote = ray.remote(_execute_remote)
        progress = Progress(sum(j.items for j in self.jobs))
        progress.items_done = sum(j.items for j in self.jobs if self.state[j.id].status == "skipped")
        last = 0.0
        try:
            while True:
                self._submit_ready(remote)
                if not self.running:
                    break
                ready, _ = ray.wait(list(self.running), num_returns=1, timeout=TICK_S)
                for ref in ready:
                    self._collect(ref, progress)
                if ready or time.time() - last > PROGRESS_S:
                    self.log(progress.line(self._counts(), self._running_now(), len(self.jobs)))
                    last = time.time()
        except KeyboardInterrupt:
            for ref, job in self.running.items():
                self.state[job.id].status = "pending"  # interrupted: the next run starts it again
                try:
                    ray.cancel(ref, force=True)  # kills the worker (and so its Chromium); its .partial stays to resume
                except Exception:  # Ctrl-C may have reached Ray's own processes first
                    pass
            raise
        finally:
            self._save()
        return self.state

    def _load_done(self) -> None:
        for job in self.jobs:
            rec = finished(self.out, job.id)
            self.state[job.id] = JobState("skipped", seconds=rec.get("seconds")) if rec else JobState()
            if rec:
                self.log(f"{job.label}: already done, skipped")

    def _submit_ready(self, remote) -> None:
        for job in self.jobs:
            st = self.state[job.id]
            if st.status != "pending":
                continue
            deps = [self.state[d] for d in job.deps]
            bad = [self._label(d) for d, s in zip(job.deps, deps, strict=True) if s.status in ("failed", "blocked")]
            if bad:
                st.status, st.error = "blocked", f"needs '{bad[0]}', which failed"
                self.log(f"{job.label}: skipped: {st.error}")
                continue
            if any(s.status not in ("done", "skipped") for s in deps) or not self._may_start(job):
                continue
            opts = {"num_cpus": job.num_cpus, "num_gpus": job.num_gpus, "resources": job.resources, "max_retries": MAX_RETRIES}
            ref = remote.options(name=job.label[:100], **opts).remote(_as_dict(job), str(self.out))
            self.running[ref] = job
            st.status, st.submitted_at = "submitted", time.time()

    def _may_start(self, job: Job) -> bool:
        """Exclusive bench jobs run alone, after everything else: speed needs a quiet machine."""
        if job.kind != "bench" or not job.params.get("exclusive", True):
            return not any(j.kind == "bench" and j.params.get("exclusive", True) for j in self.running.values())
        others = [j for j in self.jobs if j.kind != "bench" and self.state[j.id].status in ("pending", "submitted")]
        return not others and not self.running

    def _collect(self, ref, progress: Progress) -> None:
        import ray
        from ray.exceptions import RayError

        job = self.running.pop(ref)
        st = self.state[job.id]
        try:
            rec = ray.get(ref)
        except RayError as e:  # the worker or its node died MAX_RETRIES + 1 times, or the task was cancelled
            rec = {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        st.status, st.error, st.seconds, st.host = rec["status"], rec.get("error"), rec.get("seconds"), rec.get("host")
        if st.status == "done":
            if job.items:
                progress.items_done += job.items
                progress.items_now += job.items
                if progress.first_eval_at is None:
                    progress.first_eval_at = st.submitted_at or progress.started
            self.log(f"{job.label}: done in {st.seconds:.1f} s" + (f" on {st.host}" if st.host else ""))
        else:
            self.log(f"{job.label}: FAILED: {st.error}")
        self._save()

    def _running_now(self) -> int:
        """Submitted jobs a worker has started (their .partial/worker.json is newer than the submission)."""
        n = 0
        for job in self.running.values():
            path = partial_dir(self.out, job.id) / WORKER_FILE
            try:
                n += path.stat().st_mtime >= (self.state[job.id].submitted_at or 0) - 1
            except OSError:
                pass
        return n

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for st in self.state.values():
            counts[st.status] = counts.get(st.status, 0) + 1
        return counts

    def _label(self, job_id: str) -> str:
        return next(j.label for j in self.jobs if j.id == job_id)

    def _save(self) -> None:
        doc = {
            "counts": self._counts(),
            "jobs": {j.id: {"label": j.label, "kind": j.kind, **asdict(self.state[j.id])} for j in self.jobs},
        }
        tmp = self.out / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / STATE_FILE)


def _as_dict(job: Job) -> dict:
    return asdict(job)


def _execute_remote(job: dict, out: str) -> dict:
    from webllama.evalsuite.sweep.jobs import execute

    return execute(job, out)
