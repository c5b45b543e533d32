"""The wire contract's names, each spelled once: Redis keys, stream fields, step names.

Nothing else in the project spells one of these: import the constant, or ask
:class:`RedisNames` for a key. rq is the warning example — its key literals spread over many
modules and sibling keys drifted apart.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "vidbrief"
#: The consumer group on the jobs stream (contract name).
BRIDGE_GROUP = "bridge"
#: Field of a jobs-stream entry that holds the job request JSON.
JOB_FIELD = "job"
#: Field of an events-stream entry that holds the CloudEvent JSON.
EVENT_FIELD = "event"
#: Field of a control-stream entry that asks the bridges to cancel a job (value: its job id).
CANCEL_FIELD = "cancel"
#: Fields a dead letter adds to the original entry's: why, how often it was delivered, and
#: the id it had on the jobs stream.
REASON_FIELD, DELIVERIES_FIELD, STREAM_ID_FIELD = "reason", "deliveries", "stream_id"
#: Field of a dead letter that lists (JSON) the original fields it kept only in part.
TRUNCATED_FIELD = "truncated"

#: Consumer name (in group ``bridge``) that owns entries routed to a fair-share lane and not
#: yet taken by a bridge. A ':' cannot appear in a bridge name, so no bridge can be called this.
PARKED_CONSUMER = ":parked"

#: The steps of the chain, in order (pipeline/chain.py declares what each one runs). Step
#: names appear in the job hash (``step:<name>:started``), in events and in settings.
DOWNLOAD_STEP, ANALYSE_STEP, BRIEF_STEP, REPORT_STEP = "download", "analyse", "brief", "report"
STEP_NAMES = (DOWNLOAD_STEP, ANALYSE_STEP, BRIEF_STEP, REPORT_STEP)


@dataclass(frozen=True)
class RedisNames:
    """The keys under one prefix (default ``vidbrief``)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def jobs(self) -> str:
        """Stream of job requests (producers XADD, the bridge reads as group ``bridge``)."""
        return f"{self.prefix}:jobs"

    @property
    def events(self) -> str:
        """Stream of CloudEvents, trimmed approximately."""
        return f"{self.prefix}:events"

    @property
    def dead(self) -> str:
        """Stream of dead letters (rejected or undeliverable entries)."""
        return f"{self.prefix}:dead"

    @property
    def control(self) -> str:
        """Stream of control messages to running bridges (cancel requests)."""
        return f"{self.prefix}:control"

    @property
    def webhook_queue(self) -> str:
        """Name of the rq queue that delivers webhooks."""
        return f"{self.prefix}-webhooks"

    @property
    def bridges(self) -> str:
        """Hash of live bridges: name → JSON heartbeat (window, in flight, time)."""
        return f"{self.prefix}:bridges"

    def lease(self, bridge: str) -> str:
        """String that exists while bridge ``bridge`` is alive (renewed; expires when it dies)."""
        return f"{self.prefix}:lease:{bridge}"

    @property
    def lease_prefix(self) -> str:
        """``lease(bridge)`` is this + the bridge's name (Lua scripts build the key)."""
        return f"{self.prefix}:lease:"

    def lanes(self, priority: str) -> str:
        """List used as a ring: the producers with entries waiting at ``priority``."""
        return f"{self.lanes_prefix}{priority}"

    @property
    def lanes_prefix(self) -> str:
        return f"{self.prefix}:lanes:"

    def lane(self, priority: str, producer: str) -> str:
        """List of the stream ids one producer has waiting at one priority, oldest first."""
        return f"{self.lane_prefix}{priority}:{producer}"

    @property
    def lane_prefix(self) -> str:
        """``lane(p, producer)`` is this + p + ':' + producer (Lua scripts build the key)."""
        return f"{self.prefix}:lane:"

    def holds(self, node_id: str) -> str:
        """Hash of the jobs every bridge has placed on one Ray node: ``<bridge>|<job>`` → hold."""
        return f"{self.holds_prefix}{node_id}"

    @property
    def holds_prefix(self) -> str:
        return f"{self.prefix}:holds:"

    def job(self, job_id: str) -> str:
        """Hash with the current state of one job."""
        return f"{self.prefix}:job:{job_id}"

    def webhook_log(self, job_id: str) -> str:
        """List of one job's webhook delivery attempts (JSON each)."""
        return f"{self.prefix}:job:{job_id}:webhook"

    def webhook_disabled(self) -> str:
        """Set of webhook URLs disabled after an HTTP 410 Gone."""
        return f"{self.prefix}:webhooks:disabled"

    def webhook_claim(self, webhook_id: str) -> str:
        """Marker that one terminal event's webhook was handled (a re-published event is not)."""
        return f"{self.prefix}:webhooks:claimed:{webhook_id}"
