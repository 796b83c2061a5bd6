"""Leadwerk's processes: the pipeline, the runtime, the web app, the commands and the store."""

import sys

# httpx loads its own command-line tool (rich and pygments: 85 modules, 5.6 MB of every
# process, 60 ms of every start) whenever click is installed, which uvicorn needs. Leadwerk
# never runs that tool; marking the module absent makes httpx skip it, as it does when click
# is missing. A process that imports httpx before Leadwerk keeps its tool.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
