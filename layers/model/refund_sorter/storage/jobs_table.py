"""The nightly job's own bookkeeping in DynamoDB (``JobsTable`` in infra/template.yaml): the run lease and the
photos a worker had in hand when it died.

- **Lease** (item ``lease#<name>``): the plan step of a nightly run takes it with a conditional put, the export
  step gives it back; a second run that starts meanwhile finds it taken and ends at once. A run that dies
  without giving it back loses it when ``expires_at`` passes (the state machine's own time limit), or once it
  is older (``taken_at``) than the limit the next run is configured with.
- **In flight** (item ``in-flight#<result id>``): a worker retrying a chunk that killed its predecessor goes
  photo by photo and marks each one before touching it, clearing the mark once the photo is dealt with. A mark
  still there on the next try names the photo that killed the worker (a hang until the timeout, a crash in a
  native decoder, running out of memory): it becomes a ``failed`` Result instead of killing the chunk again.

Both kinds of item carry ``expires_at`` (epoch seconds), the table's TTL attribute, so DynamoDB deletes them
when they no longer matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import StorageError
from refund_sorter.storage.dynamodb import batch_get

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from mypy_boto3_dynamodb import DynamoDBClient

# How long an in-flight mark outlives the night that wrote it: the next night's retry still sees it.
IN_FLIGHT_SECONDS = 7 * 86_400


@dataclass(frozen=True)
class Lease:
    """Who holds a lease and until when (epoch seconds)."""

    name: str
    holder: str
    expires_at: int


class JobsTable:
    """Leases and in-flight marks in the jobs table.

    Parameters
    ----------
    table
        The table's name (``REFUND_SORTER_JOBS_TABLE``).
    client
        A DynamoDB client; by default the process-wide one.
    clock
        Seconds since the epoch; injected by tests.
    """

    def __init__(
        self, table: str, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        if not table:
            raise StorageError("no jobs table configured (REFUND_SORTER_JOBS_TABLE)")
        from refund_sorter.storage.clients import dynamodb_client

        self.table = table
        self.client = client or dynamodb_client()
        self.clock = clock

    # ------------------------------------------------------------------------------------------------ the lease

    def take_lease(self, name: str, holder: str, seconds: int) -> Lease | None:
        """Take the lease ``name`` for ``seconds``, or renew it if ``holder`` has it already (a retried step).

        Returns ``None`` when someone else holds it and it has not expired; see :meth:`lease` for who.
        """
        now = int(self.clock())
        lease = Lease(name, holder, now + seconds)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": f"lease#{name}"},
                    "holder": {"S": holder},
                    "expires_at": {"N": str(lease.expires_at)},
                    "taken_at": {"N": str(now)},
                },
                # Also stale: a lease taken longer ago than runs may last now (``seconds``: a run that shortens
                # REFUND_SORTER_RUN_LEASE_SECONDS is not kept waiting by one that took it under a longer limit).
                ConditionExpression=(
                    "attribute_not_exists(id) OR expires_at < :now OR holder = :holder OR taken_at < :oldest"
                ),
                ExpressionAttributeValues={
                    ":now": {"N": str(now)},
                    ":holder": {"S": holder},
                    ":oldest": {"N": str(now - seconds)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        except Exception as exc:
            raise StorageError(f"could not take the lease {name}: {exc}") from exc
        return lease

    def lease(self, name: str) -> Lease | None:
        """The lease as it stands (also an expired one that nobody took over yet)."""
        try:
            item = self.client.get_item(TableName=self.table, Key={"id": {"S": f"lease#{name}"}}, ConsistentRead=True)
        except Exception as exc:
            raise StorageError(f"could not read the lease {name}: {exc}") from exc
        found = item.get("Item")
        return Lease(name, found["holder"]["S"], int(found["expires_at"]["N"])) if found else None

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease back; ``False`` if ``holder`` no longer had it (it expired and another run took it)."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"id": {"S": f"lease#{name}"}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        except Exception as exc:
            raise StorageError(f"could not release the lease {name}: {exc}") from exc
        return True

    # ------------------------------------------------------------------------------------- photos in flight

    def in_flight(self, result_ids: Iterable[str]) -> set[str]:
        """Those of ``result_ids`` that a worker had in hand when it stopped (BatchGetItem, 100 a request)."""
        keys = [f"in-flight#{result_id}" for result_id in dict.fromkeys(result_ids)]
        return {item["id"]["S"].removeprefix("in-flight#") for item in batch_get(self.client, self.table, keys)}

    def mark_in_flight(self, result_id: str, chunk: str) -> None:
        """Note that this photo is being worked on now, by the chunk ``chunk`` (for people reading the item)."""
        item: dict[str, Any] = {
            "id": {"S": f"in-flight#{result_id}"},
            "chunk": {"S": chunk},
            "expires_at": {"N": str(int(self.clock()) + IN_FLIGHT_SECONDS)},
        }
        try:
            self.client.put_item(TableName=self.table, Item=item)
        except Exception as exc:
            raise StorageError(f"could not mark {result_id} in flight: {exc}") from exc

    def clear_in_flight(self, result_id: str) -> None:
        try:
            self.client.delete_item(TableName=self.table, Key={"id": {"S": f"in-flight#{result_id}"}})
        except Exception as exc:
            raise StorageError(f"could not clear the in-flight mark of {result_id}: {exc}") from exc
