"""Results in DynamoDB (in AWS and on the local moto stack).

The table is keyed by ``id``; a ``by-day`` global secondary index (``day``, ``timestamp``) serves the daily
listing and the CSV export. The ``review-queue`` index (``queue``, ``timestamp``) is sparse: an item carries
``queue`` only while it is ``needs_review``, so the index holds exactly the queue, oldest first across days, and a
decision (which rewrites the item without it) takes the item out. The ``review-informative`` index (``queue``,
``priority``) holds the same queue in the order a decision would teach the head most. Only this module knows the
item layout.
"""

from __future__ import annotations

import base64
import json
import random
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from refund_sorter.errors import InvalidRequestError, NotFoundError, StorageError
from refund_sorter.results import Result, Status
from refund_sorter.storage.base import REVIEW_FIELDS, QueueOrder, ResultStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from mypy_boto3_dynamodb import DynamoDBClient

BY_DAY_INDEX = "by-day"
REVIEW_QUEUE_INDEX = "review-queue"
# The queue by priority (lower = ask sooner); only Results that have one are in it.
INFORMATIVE_INDEX = "review-informative"
# The two parts of the informative listing, as its page token names them.
RANKED, UNRANKED = "ranked", "unranked"
# The one value of the queue index's partition key. One partition holds the whole queue: a night adds a few
# thousand items at most, far below a partition's 1,000 writes/s, and it keeps "oldest first" a single query.
WAITING = "needs_review"


class DynamoResultStore(ResultStore):
    """Results in a DynamoDB table (see ``ResultsTable`` in infra/template.yaml).

    Parameters
    ----------
    table
        The table's name.
    client
        A DynamoDB client; by default the process-wide one from :mod:`refund_sorter.storage.clients`.
    """

    def __init__(self, table: str, client: DynamoDBClient | None = None) -> None:
        if not table:
            raise StorageError("no results table configured (REFUND_SORTER_TABLE)")
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        from refund_sorter.storage.clients import dynamodb_client

        self.table = table
        self.client = client or dynamodb_client()
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    def add(self, result: Result) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=self._to_item(result), ConditionExpression="attribute_not_exists(id)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        except Exception as exc:
            raise StorageError(f"could not store result {result.id}: {exc}") from exc
        return True

    def get(self, result_id: str) -> Result | None:
        try:
            reply = self.client.get_item(TableName=self.table, Key={"id": {"S": result_id}}, ConsistentRead=True)
        except Exception as exc:
            raise StorageError(f"could not read result {result_id}: {exc}") from exc
        return self._from_item(reply["Item"]) if "Item" in reply else None

    def get_many(self, result_ids: Iterable[str]) -> dict[str, Result]:
        """BatchGetItem, 100 keys a request (DynamoDB's limit), strongly consistent like :meth:`get`."""
        found: dict[str, Result] = {}
        for items in batch_get(self.client, self.table, list(dict.fromkeys(result_ids))):
            result = self._from_item(items)
            found[result.id] = result
        return found

    def by_day(self, day: str) -> Iterator[Result]:
        pages = self.client.get_paginator("query").paginate(**self._by_day_query(day))
        try:
            for page in pages:
                yield from (self._from_item(item) for item in page["Items"])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"could not list results of {day}: {exc}") from exc

    def relocate(self, result_id: str, photo_key: str, source: str) -> None:
        # Only these two attributes: a person's review written meanwhile stays as it is.
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": result_id}},
                UpdateExpression="SET #photo_key = :photo_key, #source = :source",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeNames={"#photo_key": "photo_key", "#source": "source"},
                ExpressionAttributeValues={":photo_key": {"S": photo_key}, ":source": {"S": source}},
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            raise NotFoundError(f"no prediction with id {result_id}") from exc
        except Exception as exc:
            raise StorageError(f"could not record where the photo of {result_id} is: {exc}") from exc

    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        query = self._by_day_query(day) | {"Limit": limit}
        if token:
            query["ExclusiveStartKey"] = _decode_token(token, day)
        try:
            reply = self.client.query(**query)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"could not list results of {day}: {exc}") from exc
        last = reply.get("LastEvaluatedKey")
        return [self._from_item(item) for item in reply["Items"]], (_encode_token(last) if last else None)

    def save_review(self, result: Result, *, revision: int) -> bool:
        # An update of the review fields only (not a put of the whole item): what the model and the jobs wrote,
        # including attributes this version of the code does not know, stays as it is.
        document = json.loads(result.model_dump_json(include=set(REVIEW_FIELDS)), parse_float=Decimal)
        document["queue"] = WAITING if result.status is Status.NEEDS_REVIEW else None  # in or out of the queue
        names: dict[str, str] = {}
        values: dict[str, Any] = {":revision": {"N": str(revision)}}
        assignments, removals = [], []
        for index, (field, value) in enumerate(sorted(document.items())):
            names[f"#f{index}"] = field
            if value is None:
                removals.append(f"#f{index}")
            else:
                assignments.append(f"#f{index} = :v{index}")
                values[f":v{index}"] = self._serializer.serialize(value)
        expression = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removals) if removals else "")
        # Items written before revisions existed have none: they are at revision 0.
        names["#revision"] = "revision"
        condition = "attribute_exists(id) AND " + (
            "(attribute_not_exists(#revision) OR #revision = :revision)" if revision == 0 else "#revision = :revision"
        )
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": result.id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        except Exception as exc:
            raise StorageError(f"could not store the review of {result.id}: {exc}") from exc
        return True

    def page_queue(
        self,
        *,
        limit: int,
        token: str | None = None,
        day: str | None = None,
        department: str | None = None,
        order: QueueOrder = "oldest",
    ) -> tuple[list[Result], str | None]:
        if order == "oldest":
            start = _decode_queue_token(token) if token else None
            items, last = self._read_queue(self._queue_query(day, department), limit, start, filtered=bool(department))
            return [self._from_item(item) for item in items], (_encode_token(last) if last else None)
        return self._page_informative(limit=limit, token=token, day=day, department=department)

    def _page_informative(
        self, *, limit: int, token: str | None, day: str | None, department: str | None
    ) -> tuple[list[Result], str | None]:
        """The ranked Results (the informative index, lowest priority first), then the ones stored before
        Results had a priority (the oldest-first index, only those without one), as one listing.

        Each part is read from an index where an item's place never changes (its priority, its timestamp), and
        the token says which part and where in it: a decision only removes items, so a page can skip or repeat
        none. (When the ranked part ends exactly at a page's end, the next page may be empty, with no token.)
        """
        part, start = _decode_informative_token(token) if token else (RANKED, None)
        items: list[dict[str, Any]] = []
        if part == RANKED:
            query = self._queue_query(None, department, index=INFORMATIVE_INDEX)
            if day:
                _add_filter(query, *_day_filter(day))
            items, last = self._read_queue(query, limit, start, filtered=bool(day or department))
            if last or len(items) == limit:
                return [self._from_item(i) for i in items], _encode_token({RANKED: last} if last else {UNRANKED: None})
            part, start = UNRANKED, None
        # Results stored before priorities existed: read through the queue for those without one. This part
        # reads (and pays for) the whole queue once; it is reached only at the queue's end.
        query = self._queue_query(day, department)
        _add_filter(query, "attribute_not_exists(#priority)", {"#priority": "priority"}, {})
        more, last = self._read_queue(query, limit - len(items), start, filtered=True)
        items += more
        return [self._from_item(i) for i in items], (_encode_token({UNRANKED: last}) if last else None)

    def _read_queue(
        self, query: dict[str, Any], limit: int, start: dict[str, Any] | None, *, filtered: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Up to ``limit`` items of an index query from ``start``, and the key to go on from (``None``: no more).

        A filter is applied after DynamoDB reads a page, so a page can come back short: read on until the page is
        full or the index ends. Cut short, the key is the last item returned's.
        """
        if start:
            query["ExclusiveStartKey"] = start
        items: list[dict[str, Any]] = []
        while True:
            query["Limit"] = max(limit, 100) if filtered else limit - len(items)
            try:
                reply = self.client.query(**query)
            except self.client.exceptions.ClientError as exc:
                raise StorageError(f"could not read the review queue: {exc}") from exc
            items.extend(reply["Items"])
            last = reply.get("LastEvaluatedKey")
            if len(items) >= limit or not last:
                break
            query["ExclusiveStartKey"] = last
        if len(items) > limit:
            items = items[:limit]
            index_keys = ("priority",) if query["IndexName"] == INFORMATIVE_INDEX else ("timestamp",)
            last = {key: items[-1][key] for key in ("id", "queue", *index_keys)}
        return items, last

    def count_queue(self, *, day: str | None = None, department: str | None = None) -> int:
        query = self._queue_query(day, department) | {"Select": "COUNT"}
        return self._count(query, "the review queue")

    def count_decided(self, day: str) -> int:
        query = self._by_day_query(day) | {
            "Select": "COUNT",
            "FilterExpression": "#status = :reviewed",
        }
        query["ExpressionAttributeNames"]["#status"] = "status"
        query["ExpressionAttributeValues"][":reviewed"] = {"S": Status.REVIEWED.value}
        return self._count(query, f"the decisions of {day}")

    def _count(self, query: dict[str, Any], what: str) -> int:
        try:
            return sum(page["Count"] for page in self.client.get_paginator("query").paginate(**query))
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not count {what}: {exc}") from exc

    def _queue_query(
        self, day: str | None, department: str | None, *, index: str = REVIEW_QUEUE_INDEX
    ) -> dict[str, Any]:
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#queue = :queue",
            "ExpressionAttributeNames": {"#queue": "queue"},
            "ExpressionAttributeValues": {":queue": {"S": WAITING}},
        }
        if day:  # timestamps are ISO 8601 UTC text: a day's are the ones that start with it
            query["KeyConditionExpression"] += " AND begins_with(#timestamp, :day)"
            query["ExpressionAttributeNames"]["#timestamp"] = "timestamp"
            query["ExpressionAttributeValues"][":day"] = {"S": day}
        if department:
            _add_filter(query, "prediction = :department", {}, {":department": {"S": department}})
        return query

    def _by_day_query(self, day: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "IndexName": BY_DAY_INDEX,
            "KeyConditionExpression": "#day = :day",
            "ExpressionAttributeNames": {"#day": "day"},
            "ExpressionAttributeValues": {":day": {"S": day}},
        }

    def _to_item(self, result: Result) -> dict[str, Any]:
        # Through JSON so timestamps get the Result's own format and floats become the Decimals DynamoDB needs.
        document = json.loads(result.model_dump_json(exclude_none=True), parse_float=Decimal)
        document["day"] = result.day
        if result.status is Status.NEEDS_REVIEW:
            document["queue"] = WAITING
        return {key: self._serializer.serialize(value) for key, value in document.items()}

    def _from_item(self, item: dict[str, Any]) -> Result:
        # Only the Result's own fields: index keys (day, queue) and attributes a newer version may add stay out.
        document = {key: self._deserializer.deserialize(value) for key, value in item.items() if key in _FIELDS}
        return Result.model_validate_json(json.dumps(document, default=_decimal_to_number))


_FIELDS = frozenset(Result.model_fields)

# DynamoDB answers at most 100 keys per BatchGetItem and may leave some unprocessed under load.
BATCH_GET_KEYS = 100
_UNPROCESSED_TRIES = 8


def batch_get(client: DynamoDBClient, table: str, ids: list[str], key: str = "id") -> Iterator[dict[str, Any]]:
    """The items of ``table`` whose ``key`` is one of ``ids`` (in no particular order), 100 keys a request.

    Keys DynamoDB leaves unprocessed (throttling) are asked for again with exponential backoff; if they are
    still unprocessed after that, it is a :class:`StorageError` like any storage failure.
    """
    for start in range(0, len(ids), BATCH_GET_KEYS):
        request: Any = {
            table: {"Keys": [{key: {"S": i}} for i in ids[start : start + BATCH_GET_KEYS]], "ConsistentRead": True}
        }
        for attempt in range(_UNPROCESSED_TRIES):
            try:
                reply = client.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(f"could not read {table}: {exc}") from exc
            yield from reply.get("Responses", {}).get(table, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
        else:
            raise StorageError(f"DynamoDB left keys of {table} unprocessed after {_UNPROCESSED_TRIES} tries")


def _add_filter(query: dict[str, Any], condition: str, names: dict[str, str], values: dict[str, Any]) -> None:
    """AND one more condition into a query's FilterExpression."""
    existing = query.get("FilterExpression")
    query["FilterExpression"] = f"({existing}) AND ({condition})" if existing else condition
    query["ExpressionAttributeNames"].update(names)
    query["ExpressionAttributeValues"].update(values)


def _day_filter(day: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    # timestamps are ISO 8601 UTC text: a day's are the ones that start with it
    return "begins_with(#timestamp, :day)", {"#timestamp": "timestamp"}, {":day": {"S": day}}


def _decimal_to_number(value: object) -> float | int:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str, day: str) -> dict[str, Any]:
    """A day listing's page token back into DynamoDB's start key."""
    return _start_key(token, {"id": None, "day": day, "timestamp": None}, "listing")


def _decode_queue_token(token: str) -> dict[str, Any]:
    """A queue page token back into DynamoDB's start key."""
    return _start_key(token, {"id": None, "queue": WAITING, "timestamp": None}, "queue")


def _decode_informative_token(token: str) -> tuple[str, dict[str, Any] | None]:
    """An informative queue page token back into its part (ranked or not) and DynamoDB's start key there."""
    refused = InvalidRequestError("next_token is not a token this queue (order=informative) gave out")
    try:
        ((part, key),) = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))).items()
    except (ValueError, TypeError, AttributeError):
        raise refused from None
    if part == UNRANKED and key is None:
        return part, None
    if part not in (RANKED, UNRANKED):
        raise refused
    sort_key, kind = ("priority", "N") if part == RANKED else ("timestamp", "S")
    # The inner key is checked exactly as the oldest-first queue's token is, with the part's sort key.
    try:
        inner = _encode_token({name: value for name, value in key.items() if name != sort_key})
        checked = _start_key(inner, {"id": None, "queue": WAITING}, "queue")
        value = key[sort_key][kind]
        if set(key[sort_key]) != {kind} or not isinstance(value, str):
            raise refused
        if kind == "N" and not Decimal(value).is_finite():
            raise refused
    except (InvalidRequestError, AttributeError, KeyError, TypeError, ArithmeticError):
        raise refused from None
    return part, checked | {sort_key: {kind: value}}


def _start_key(token: str, expected: dict[str, str | None], listing: str) -> dict[str, Any]:
    """A page token back into a start key with exactly the ``expected`` string attributes (and, where given,
    values); a forged or foreign token is the client's mistake."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = set(key) == set(expected) and all(set(v) == {"S"} for v in key.values())
        valid = valid and all(value is None or key[name]["S"] == value for name, value in expected.items())
    except (ValueError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise InvalidRequestError(f"next_token is not a token this {listing} gave out")
    return key
