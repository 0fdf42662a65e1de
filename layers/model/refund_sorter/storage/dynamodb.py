"""Results in DynamoDB (in AWS and on the local moto stack).

The table is keyed by ``id``; a ``by-day`` global secondary index (``day``, ``timestamp``) serves the daily
listing and the CSV export. Only this module knows the item layout.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import InvalidRequestError, StorageError
from refund_sorter.results import Result
from refund_sorter.storage.base import ResultStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from mypy_boto3_dynamodb import DynamoDBClient

BY_DAY_INDEX = "by-day"


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
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not list results of {day}: {exc}") from exc

    def replace(self, result: Result) -> None:
        try:
            self.client.put_item(TableName=self.table, Item=self._to_item(result))
        except Exception as exc:
            raise StorageError(f"could not store result {result.id}: {exc}") from exc

    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        query = self._by_day_query(day) | {"Limit": limit}
        if token:
            query["ExclusiveStartKey"] = _decode_token(token, day)
        try:
            reply = self.client.query(**query)
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not list results of {day}: {exc}") from exc
        last = reply.get("LastEvaluatedKey")
        return [self._from_item(item) for item in reply["Items"]], (_encode_token(last) if last else None)

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
        return {key: self._serializer.serialize(value) for key, value in document.items()}

    def _from_item(self, item: dict[str, Any]) -> Result:
        document = {key: self._deserializer.deserialize(value) for key, value in item.items()}
        document.pop("day", None)
        return Result.model_validate_json(json.dumps(document, default=_decimal_to_number))


# DynamoDB answers at most 100 keys per BatchGetItem and may leave some unprocessed under load.
BATCH_GET_KEYS = 100
_UNPROCESSED_TRIES = 8


def batch_get(client: DynamoDBClient, table: str, ids: list[str], key: str = "id") -> Iterator[dict[str, Any]]:
    """The items of ``table`` whose ``key`` is one of ``ids`` (in no particular order), 100 keys a request.

    Keys DynamoDB leaves unprocessed (throttling) are asked for again with exponential backoff; if they are
    still unprocessed after that, it is a :class:`StorageError` like any storage failure.
    """
    import random
    import time

    for start in range(0, len(ids), BATCH_GET_KEYS):
        request: Any = {
            table: {"Keys": [{key: {"S": i}} for i in ids[start : start + BATCH_GET_KEYS]], "ConsistentRead": True}
        }
        for attempt in range(_UNPROCESSED_TRIES):
            try:
                reply = client.batch_get_item(RequestItems=request)
            except Exception as exc:
                raise StorageError(f"could not read {table}: {exc}") from exc
            yield from reply.get("Responses", {}).get(table, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
        else:
            raise StorageError(f"DynamoDB left keys of {table} unprocessed after {_UNPROCESSED_TRIES} tries")


def _decimal_to_number(value: object) -> float | int:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str, day: str) -> dict[str, Any]:
    """A page token back into DynamoDB's start key; a forged or foreign token is the client's mistake."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = set(key) == {"id", "day", "timestamp"} and all(set(v) == {"S"} for v in key.values())
    except (ValueError, TypeError, AttributeError):
        valid = False
    if not valid or key["day"]["S"] != day:
        raise InvalidRequestError("next_token is not a token this listing gave out")
    return key
