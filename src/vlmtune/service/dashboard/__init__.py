"""The dashboard: the service's state in a browser, served by the service at `/` on its own port and key.

    routes.py      the page, its files and the JSON API under /dashboard/api (thin calls, the control plane's errors)
    auth.py        the login form's cookie (an HMAC of the API key) or the Authorization header
    runs.py        every run: the service's jobs and `vlmtune train` run folders under the home; stop
    runfolder.py   what a run folder says while it is written: curves, progress lines, settings, outcome
    live.py        a run's new rows, log and status as server-sent events that resume from Last-Event-ID
    compare.py     runs side by side: settings with differences, training metrics, their models' evals
    evals.py       eval and compare folders: the predictions browser's rows, verdicts and images
    forms.py       the new-job form's fields and ranges, from the training config and the targets table
    playground.py  a question and an image asked of a deployment through the service's Converse route
    machine.py     GPUs (NVML), CPU, memory, disk and the job queue
    static/        the page: plain HTML, CSS and JavaScript, and uPlot (MIT) for the charts; no build step

It lives inside the service because the service serves it (app.py mounts it) and it holds no state of its
own: every action is a call into the same modules the control-plane routes call.
"""

from vlmtune.service.dashboard.routes import install

__all__ = ["install"]
