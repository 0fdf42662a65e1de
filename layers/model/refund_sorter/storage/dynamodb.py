"""Results in DynamoDB (in AWS and on the local moto stack).

The table is keyed by ``id``; a ``by-day`` global secondary index (``day``, ``timestamp``) serves the daily
listing and the CSV export. Only this module knows the item layout.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from refund_sorter.errors import InvalidRequestError, NotFoundError, StorageError
from refund_sorter.results import Result
from refund_sorter.storage.base import ResultStore

if TYPE_CHECKING:
    from collections.abc import Iterator

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

    def by_day(self, day: str) -> Iterator[Result]:
        pages = self.client.get_paginator("query").paginate(**self._by_day_query(day))
        try:
            for page in pages:
                yield from (self._from_item(item) for item in page["Items"])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"could not list results of {day}: {exc}") from exc

    def replace(self, result: Result) -> None:
        try:
            self.client.put_item(TableName=self.table, Item=self._to_item(result))
        except Exception as exc:
            raise StorageError(f"could not store result {result.id}: {exc}") from exc

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
