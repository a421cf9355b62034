"""What one service runs with, in one value: its ports, its knobs and its job types.

The composition root (``entrypoints.containers`` in the service; a test or another service's
code when the core is used as a library) builds one :class:`Deps` and hands it to
:class:`reportcore.service.ReportService`, instead of passing a dozen ports to each use case.
"""

from __future__ import annotations

import msgspec

from .encoding import CORE_ROW_FORMATS, RowFormats
from .ids import RANDOM_IDS
from .jobtypes import JOB_TYPES, JobTypeRegistry
from .policy import Policy
from .ports import (
    Clock,
    FileStore,
    IdSource,
    JobConsumer,
    JobQueue,
    JobRepository,
    RecordSource,
    ScheduleRepository,
    WebhookOutbox,
    WebhookSender,
)
from .schedules import CronRules, ScheduleRules
from .webhooks import WebhookRules


class Deps(msgspec.Struct, frozen=True, kw_only=True):
    """The adapters of every port, and what the use cases are configured with.

    ``consumer`` is the worker's (an API process has none). ``job_types`` is the registry the
    service runs with: validation, the job, its queue message and the export all read this one,
    never a module global; a library user passes ``JOB_TYPES.extended(...)`` to add its own.
    ``formats`` are the row formats a worker writes besides the core's CSV (xlsx, an adapter's).
    """

    jobs: JobRepository
    queue: JobQueue
    store: FileStore
    clock: Clock
    source: RecordSource
    outbox: WebhookOutbox
    sender: WebhookSender
    consumer: JobConsumer | None = None
    policy: Policy = msgspec.field(default_factory=Policy)
    webhook_rules: WebhookRules = msgspec.field(default_factory=WebhookRules)
    job_types: JobTypeRegistry = JOB_TYPES
    formats: RowFormats = msgspec.field(default_factory=lambda: CORE_ROW_FORMATS)
    download_secret: bytes = b""
    # schedules (reportcore.scheduling): their store and the cron reader; None in a process
    # that has none (a library user's, say)
    schedules: ScheduleRepository | None = None
    cron: CronRules | None = None
    schedule_rules: ScheduleRules = msgspec.field(default_factory=ScheduleRules)
    # the ids of new jobs and schedules (a test pins them as it pins the clock)
    ids: IdSource = RANDOM_IDS
