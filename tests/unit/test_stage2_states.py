"""The state machine's transitions and resume decisions (pure, no root)."""

import pytest

from migos.stage2 import states as S


def test_happy_path_and_resume_paths():
    m = S.Machine()
    for st in (S.PREFLIGHT, S.PLAN, S.WRITE, S.INJECT, S.WRITE, S.WRITE, S.DRAIN, S.CHECK,
               S.SWITCH, S.DONE):
        m.go(st)
    assert m.history[-1] == S.DONE
    m = S.Machine()
    for st in (S.PREFLIGHT, S.PLAN, S.DRAIN, S.CHECK, S.SWITCH, S.DONE):  # all segments done
        m.go(st)
    m = S.Machine()
    for st in (S.PREFLIGHT, S.PLAN, S.DONE):  # already switched
        m.go(st)


@pytest.mark.parametrize("a,b", [(None, S.PLAN), (S.PREFLIGHT, S.WRITE), (S.WRITE, S.SWITCH),
                                 (S.PLAN, S.SWITCH), (S.DRAIN, S.SWITCH), (S.CHECK, S.DONE),
                                 (S.DONE, S.WRITE), (S.INJECT, S.CHECK), (S.SWITCH, S.WRITE)])
def test_illegal(a, b):
    with pytest.raises(S.TransitionError):
        S.check_transition(a, b)


def test_switch_only_after_check():
    # the MBR switch can only be reached through CHECK, and CHECK only through DRAIN
    preds = {s for s, nxt in S.TRANSITIONS.items() if S.SWITCH in nxt}
    assert preds == {S.CHECK}
    assert {s for s, nxt in S.TRANSITIONS.items() if S.CHECK in nxt} == {S.DRAIN}


def test_failed_from_anywhere_but_done():
    for st in (S.PREFLIGHT, S.PLAN, S.WRITE, S.INJECT, S.DRAIN, S.CHECK, S.SWITCH):
        assert S.check_transition(st, S.FAILED)
    with pytest.raises(S.TransitionError):
        S.check_transition(S.DONE, S.FAILED)


def test_on_change_called():
    seen = []
    m = S.Machine(lambda a, b: seen.append((a, b)))
    m.go(S.PREFLIGHT)
    m.go(S.PLAN)
    assert seen == [(None, S.PREFLIGHT), (S.PREFLIGHT, S.PLAN)]


def payload(**kw):
    p = {"state": S.WRITE, "done": 3, "image": "IMG", "segments": 10, "new_mbr": "NEW",
         "device": {"size": 1000, "mbr": "OLD"}}
    p.update(kw)
    return p


def test_decide():
    assert S.decide(None, 1000, "OLD", "IMG", 10) == (S.FRESH, 0)
    assert S.decide(payload(), 1000, "OLD", "IMG", 10) == (S.RESUME, 3)
    assert S.decide(payload(state=S.SWITCH, done=10), 1000, "OLD", "IMG", 10) == (S.RESUME, 10)
    assert S.decide(payload(state=S.SWITCH, done=10), 1000, "NEW", "IMG", 10) == \
        (S.ALREADY_DONE, 10)


@pytest.mark.parametrize("kw,args,match", [
    ({}, (999, "OLD", "IMG", 10), "device of"),
    ({}, (1000, "OTHER", "IMG", 10), "another device"),
    ({}, (1000, "OLD", "IMG2", 10), "another image"),
    ({}, (1000, "NEW", "IMG2", 10), "another image"),
    ({}, (1000, "OLD", "IMG", 11), "another layout"),
    ({"state": "BOGUS"}, (1000, "OLD", "IMG", 10), "unknown state"),
    ({"done": 11}, (1000, "OLD", "IMG", 10), "impossible"),
])
def test_decide_mismatch(kw, args, match):
    with pytest.raises(S.Mismatch, match=match):
        S.decide(payload(**kw), *args)
