"""Errors that the command line turns into one-line messages and exit codes."""


class MigosError(Exception):
    """A failure with a message for the user. ``exit_code`` is what ``migos`` exits with."""

    exit_code = 1

    def __init__(self, problem, fix=None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self):
        return self.problem if not self.fix else "%s; %s" % (self.problem, self.fix)


class UsageError(MigosError):
    """Bad input (config.json, device, image, options): exit 2, nothing on any disk changed."""

    exit_code = 2


class CheckFailed(MigosError):
    """A pre-flight check said no (diagnostic): exit 2, nothing changed."""

    exit_code = 2
