"""A recording executor for unit tests: scripted answers, recorded argv.

Each rule pairs an argv prefix with an answer: stdout text, or a
``ProcessExecutionError`` to raise (as the real CLI would, with its stderr).
Commands with no rule answer empty stdout. Tests assert on ``calls``.
"""

from oslo_concurrency import processutils


def failure(stderr, exit_code=1):
    """An answer that makes the command fail with ``stderr``."""
    return processutils.ProcessExecutionError(exit_code=exit_code,
                                              stderr=stderr)


class RecordingExecutor(object):

    def __init__(self, check=None):
        self.calls = []
        self._rules = []
        # check(argv) may refuse a command (e.g. rootwrap's filters).
        self.check = check

    def on(self, *prefix, out='', times=None):
        """Answer commands starting with ``prefix`` with ``out``.

        ``out`` is text or a ProcessExecutionError. The newest matching rule
        wins; ``times`` limits how often it applies.
        """
        self._rules.insert(0, [tuple(str(p) for p in prefix), out, times])
        return self

    def __call__(self, *argv, **kwargs):
        # kwargs as processutils.execute takes them (run_as_root, ...).
        argv = tuple(str(a) for a in argv)
        if self.check:
            self.check(argv)
        self.calls.append(argv)
        for rule in self._rules:
            prefix, out, times = rule
            if argv[:len(prefix)] == prefix and times != 0:
                if times is not None:
                    rule[2] = times - 1
                if isinstance(out, Exception):
                    raise out
                return out, ''
        return '', ''

    def unchecked(self, *argv, **kwargs):
        """Record and answer ``argv`` without ``check`` (root's own)."""
        check, self.check = self.check, None
        try:
            return self(*argv, **kwargs)
        finally:
            self.check = check

    def commands(self, *prefix):
        """Recorded argv that start with ``prefix``."""
        return [c for c in self.calls if c[:len(prefix)] == prefix]
