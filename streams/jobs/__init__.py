"""Scheduled runs (hourly, daily, weekly) on the partitions a worker owns
(streams.jobs.runner.ScheduledJobs)."""

_NAMES = ("JobBusy", "NotReady", "ScheduledJobs")


def __getattr__(name):  # lazy: the report types import without Faust's app
    if name in _NAMES:
        from streams.jobs import runner
        return getattr(runner, name)
    raise AttributeError(name)
