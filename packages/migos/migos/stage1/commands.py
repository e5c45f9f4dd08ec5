"""Registers the stage-1 subcommands. (Filled in by the stage-1 work, issue 6.)"""


def register(sub, common_options):
    pass
