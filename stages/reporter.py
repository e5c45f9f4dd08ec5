"""doit reporter: a failed step is one line on stderr, ``migos build: STEP: what went wrong; what to do``."""

import sys
import time

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from .tools import BuildError


def step(func):
    """Wrap a stage action so a BuildError becomes a doit failure carrying its one-line message."""
    def action(*args, **kwargs):
        try:
            func(*args, **kwargs)
        except BuildError as e:
            return TaskFailed(str(e))
        return None
    action.__name__ = func.__name__
    action.__doc__ = func.__doc__
    return action


class OneLineReporter(ConsoleReporter):
    """``.  step`` when a step starts, ``   step: 12.3 s`` when it ends, one line per failure."""
    desc = "one line per step, one line per failure"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.started = {}

    def execute_task(self, task):
        self.started[task.name] = time.monotonic()
        super().execute_task(task)

    def add_success(self, task):
        if task.name in self.started and task.actions:
            self.write("   %s: %.1f s\n" % (task.name, time.monotonic() - self.started[task.name]))

    def add_failure(self, task, fail):
        self.failures.append({"task": task, "exception": fail})
        msg = fail.message if isinstance(fail, TaskFailed) and fail.message else fail.get_msg().strip()
        lines = [l for l in msg.splitlines() if l.strip()]
        if not isinstance(fail, TaskFailed) or not fail.message:
            # an unexpected exception: keep its last line (the exception itself)
            lines = lines[-1:]
        sys.stderr.write("migos build: %s: %s\n" % (task.name, lines[0] if lines else "failed"))
        sys.stderr.flush()

    def complete_run(self):
        if self.runtime_errors:
            sys.stderr.write("migos build: %s\n" % " ".join(self.runtime_errors).strip().replace("\n", " "))
