"""Registers the stage-2 subcommands. (Filled in by the stage-2 work, issue 5.)"""


def register(sub, common_options):
    pass
