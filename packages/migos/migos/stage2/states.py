"""The migrate state machine: named states, legal transitions, resume decisions (pure code).

::

    PREFLIGHT -> PLAN -> WRITE -> INJECT -> WRITE ... -> DRAIN -> CHECK -> SWITCH -> DONE
                   \\-------------------------------------------------------------> DONE
    (any) -> FAILED

PREFLIGHT  reads config.json, the device's MBR and the head of the image stream; no writes.
PLAN       places the image next to the old p1 (layout.plan) and reads the journal.
WRITE      writes one segment from the stream, reads it back O_DIRECT, compares sha256.
INJECT     after segment 0 (resin-boot): config.json, system-connections/, read back, verify.
DRAIN      reads the stream to its end so that its checksums (gzip/xz/zip CRC, zstd) are checked.
CHECK      re-reads the new resin-boot and the EBR chain from the disk before the switch.
SWITCH     the single 512-byte MBR write, flushed on its own.
DONE       the disk boots balenaOS.

The journal persists WRITE (with ``done`` = number of verified segments), SWITCH and DONE.
"""

PREFLIGHT, PLAN, WRITE, INJECT, DRAIN, CHECK, SWITCH, DONE, FAILED = (
    "PREFLIGHT", "PLAN", "WRITE", "INJECT", "DRAIN", "CHECK", "SWITCH", "DONE", "FAILED")
ORDER = (PREFLIGHT, PLAN, WRITE, INJECT, DRAIN, CHECK, SWITCH, DONE)

TRANSITIONS = {
    None: (PREFLIGHT,),
    PREFLIGHT: (PLAN,),
    PLAN: (WRITE, DRAIN, DONE),
    WRITE: (WRITE, INJECT, DRAIN),
    INJECT: (WRITE, DRAIN),
    DRAIN: (CHECK,),
    CHECK: (SWITCH,),
    SWITCH: (DONE,),
    DONE: (),
    FAILED: (),
}

# What a journal record may say.
JOURNAL_STATES = (WRITE, SWITCH, DONE)


class TransitionError(RuntimeError):
    pass


def check_transition(current, new):
    if new == FAILED and current not in (DONE, FAILED):
        return True
    if new not in TRANSITIONS.get(current, ()):
        raise TransitionError("illegal state change %s -> %s" % (current, new))
    return True


class Machine(object):
    """Holds the current state; ``on_change(old, new)`` is called for every change."""

    def __init__(self, on_change=None):
        self.state = None
        self.history = []
        self.on_change = on_change

    def go(self, new):
        check_transition(self.state, new)
        old, self.state = self.state, new
        self.history.append(new)
        if self.on_change:
            self.on_change(old, new)
        return new


# Resume decisions -------------------------------------------------------------------------

FRESH, RESUME, ALREADY_DONE = "fresh", "resume", "already-done"


class Mismatch(ValueError):
    """The journal on the disk belongs to another device or image."""


def decide(payload, disk_bytes, current_mbr_sha, image_id, nsegments):
    """What to do given the newest journal ``payload`` (or None).

    Returns (decision, done_segments).  Raises :class:`Mismatch` for a foreign journal.
    """
    if payload is None:
        return FRESH, 0
    dev = payload.get("device") or {}
    if dev.get("size") != disk_bytes:
        raise Mismatch("the journal on the disk was written for a device of %s bytes, this one "
                       "has %d" % (dev.get("size"), disk_bytes))
    switched = current_mbr_sha == payload.get("new_mbr")
    if not switched and current_mbr_sha != dev.get("mbr"):
        raise Mismatch("the journal on the disk belongs to another device (its MBR differs)")
    if payload.get("image") != image_id:
        raise Mismatch("the journal on the disk belongs to another image (migration of %s "
                       "in progress)" % payload.get("image_name", "another image"))
    if payload.get("segments") != nsegments:
        raise Mismatch("the journal on the disk was planned for another layout")
    if switched:
        return ALREADY_DONE, nsegments
    state = payload.get("state")
    if state not in JOURNAL_STATES:
        raise Mismatch("the journal on the disk has an unknown state %r" % state)
    done = int(payload.get("done", 0))
    if done < 0 or done > nsegments:
        raise Mismatch("the journal on the disk has an impossible progress count")
    return RESUME, done
