"""The rollout planner (pure): which devices to start next, when to stop.

    plan = Rollout(devices, max_parallel=N, max_failures=M)
    for d in plan.to_start(): send(d); plan.started(d)
    plan.finished(d, ok)   # on a result;  plan.timed_out(now)  for silent devices

At most N devices are in flight at once. Once more than M have failed (a refusal, a
non-zero exit, or no answer within the timeout counts as a failure), nothing new is
started; devices already in flight are still followed. ``done`` when nothing is in
flight and nothing more will be started.
"""

PENDING, RUNNING, OK, FAILED, SKIPPED = "pending", "running", "ok", "failed", "skipped"


class Rollout:
    def __init__(self, devices, max_parallel=1, max_failures=0, timeout=None):
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        if max_failures < 0:
            raise ValueError("max_failures must be 0 or more")
        self.order = list(dict.fromkeys(devices))
        self.state = {d: PENDING for d in self.order}
        self.detail = {d: "" for d in self.order}
        self.since = {}
        self.max_parallel, self.max_failures, self.timeout = max_parallel, max_failures, timeout
        self.peak = 0

    def count(self, st):
        return sum(1 for v in self.state.values() if v == st)

    @property
    def stopped(self):
        return self.count(FAILED) > self.max_failures

    def to_start(self):
        if self.stopped:
            return []
        room = self.max_parallel - self.count(RUNNING)
        return [d for d in self.order if self.state[d] == PENDING][:max(room, 0)]

    def started(self, device, now=0.0):
        assert self.state[device] == PENDING, device
        self.state[device] = RUNNING
        self.since[device] = now
        self.peak = max(self.peak, self.count(RUNNING))

    def finished(self, device, ok, detail=""):
        if self.state.get(device) != RUNNING:
            return False           # a late or unexpected answer changes nothing
        self.state[device] = OK if ok else FAILED
        self.detail[device] = detail
        return True

    def timed_out(self, now):
        if self.timeout is None:
            return []
        late = [d for d in self.order if self.state[d] == RUNNING
                and now - self.since[d] > self.timeout]
        for d in late:
            self.finished(d, False, "no answer within %g s" % self.timeout)
        return late

    @property
    def done(self):
        return self.count(RUNNING) == 0 and not self.to_start()

    def finish(self):
        """Mark what was never started as skipped (after a stop)."""
        for d in self.order:
            if self.state[d] == PENDING:
                self.state[d] = SKIPPED

    def summary(self):
        return {s: self.count(s) for s in (PENDING, RUNNING, OK, FAILED, SKIPPED)}

    def table(self):
        """Plain-text progress table."""
        width = max([len(d) for d in self.order] + [6])
        lines = ["%-*s  %-8s  %s" % (width, "DEVICE", "STATE", "DETAIL")]
        lines += ["%-*s  %-8s  %s" % (width, d, self.state[d], self.detail[d][:60])
                  for d in self.order]
        s = self.summary()
        lines.append("ok %(ok)d  failed %(failed)d  running %(running)d  pending %(pending)d  "
                     "skipped %(skipped)d" % s + ("  (stopped: too many failures)"
                                                   if self.stopped else ""))
        return "\n".join(lines)
